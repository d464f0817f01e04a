"""Runs inside a network namespace of the test's own (`unshare --net`): brings up loopback, sets how the
namespace's kernel stamps TCP timestamps, opens one listening port on 127.0.0.1 and then either runs the
uptime probe (`probe`, prints its outcome as JSON) or a whole `hcscan scan` of a workspace (`scan`).

net.ipv4.tcp_timestamps: 0 = no timestamps, 1 = randomised per connection (the Linux default), 2 = a plain
millisecond clock since boot. Nothing here leaves the namespace: it has only a loopback interface.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path


def prepare(timestamps: int) -> socket.socket:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    Path("/proc/sys/net/ipv4/tcp_timestamps").write_text(f"{timestamps}\n")
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        while True:
            conn, _ = listener.accept()
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return listener


def main() -> int:
    mode, timestamps = sys.argv[1], int(sys.argv[2])
    listener = prepare(timestamps)
    port = listener.getsockname()[1]
    if mode == "probe":
        from scanner.probes.base import SYSTEM_LEVEL, Politeness, ProbeContext, ProbeError, Target
        from scanner.probes.uptime import UptimeProbe

        target = Target(
            key="sys/*",
            system_id="sys",
            address="127.0.0.1",
            port=0,
            protocol=SYSTEM_LEVEL,
            politeness=Politeness(timeout_s=5),
            declared={"addresses": ["127.0.0.1"], "endpoints": [{"id": "ep", "port": port}]},
        )
        outcome = UptimeProbe().gather([target], ProbeContext())["sys/*"]
        body = {"error": outcome.message()} if isinstance(outcome, ProbeError) else {"facts": dict(outcome.facts)}
        print(json.dumps({"uptime_s": float(Path("/proc/uptime").read_text().split()[0]), **body}))
        return 0
    # scan: argv[3] is a config whose inventory declares 127.0.0.1 on port 65000, replaced by the real port
    config = Path(sys.argv[3])
    inventory = config.parent / "inventory" / "testregion.yaml"
    inventory.write_text(inventory.read_text().replace("65000", str(port)))
    done = subprocess.run([sys.executable, "-m", "scanner", "scan", "--config", str(config), *sys.argv[4:]])
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())

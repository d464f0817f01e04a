"""Idle resident memory of `hcscan agent` (budget: 150 MB).

Starts a real agent on a throwaway workspace (one system on a closed loopback port, a scan job every
10 seconds and a report job every minute, SQLite store), lets it run a few jobs and then idle, samples
VmRSS from /proc, stops it with SIGTERM and prints the numbers. Exit code 1 when the peak exceeds the budget.

    .venv/bin/python benchmarks/agent_rss.py [--seconds 30]
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scanner.yamlio import dump_yaml

BUDGET_MB = 150.0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("VmRSS not found")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_workspace(root: Path) -> Path:
    inventory = {
        "region": {"id": "bench", "name": "Bench region"},
        "systems": [
            {
                "id": "s1",
                "name": "System 1",
                "owner": "bench",
                "criticality": "high",
                "endpoints": [{"id": "web", "host": "127.0.0.1", "port": closed_port(), "protocol": "https"}],
            }
        ],
    }
    (root / "inventory").mkdir(parents=True)
    (root / "inventory" / "bench.yaml").write_text(dump_yaml(inventory), encoding="utf-8")
    config = {
        "store_url": "sqlite:///hcscan.db",
        "inventory": ["inventory"],
        "scope": {"allowed_networks": ["127.0.0.0/8"]},
        "politeness": {"timeout_s": 2},
        "report": {"out_dir": "reports"},
        "agent": {"id": "bench", "catchup_grace_s": 60, "shutdown_grace_s": 5},
        "schedules": [
            {"id": "scan-10s", "cron": "*/10 * * * * *"},
            {"id": "report-1m", "kind": "report", "cron": "0 * * * * *"},
        ],
    }
    path = root / "config.yaml"
    path.write_text(dump_yaml(config), encoding="utf-8")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to let the agent run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hcscan-rss-") as tmp:
        config = write_workspace(Path(tmp))
        log = (Path(tmp) / "agent.log").open("wb")
        cmd = [sys.executable, "-m", "scanner", "agent", "--config", str(config), "--log-format", "json"]
        proc = subprocess.Popen(cmd, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
        samples: list[float] = []
        try:
            deadline = time.monotonic() + args.seconds
            while time.monotonic() < deadline:
                time.sleep(0.5)
                if proc.poll() is not None:
                    print((Path(tmp) / "agent.log").read_text(), file=sys.stderr)
                    raise SystemExit("the agent exited early")
                samples.append(rss_mb(proc.pid))
            idle = rss_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()
        runs = (Path(tmp) / "agent.log").read_text().count('"slot.done"')
    peak = max(samples)
    print(f"agent idle RSS: {idle:.1f} MB (peak {peak:.1f} MB over {args.seconds:.0f} s, {runs} job slot(s) run)")
    print(f"budget: {BUDGET_MB:.0f} MB -> {'ok' if peak <= BUDGET_MB else 'OVER BUDGET'}")
    return 0 if peak <= BUDGET_MB else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m scanner.lab serve``: run the lab in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from scanner.lab.servers import LabServers


def _watch_parent(pid: int, stop: threading.Event) -> None:
    """Stop the lab when the process that started it is gone (it was killed without cleaning up)."""
    while not stop.wait(0.5):
        if os.getppid() != pid:
            stop.set()


def _serve(args: argparse.Namespace) -> int:
    servers = LabServers(Path(args.workdir).resolve(), layout=args.layout, replicas=args.replicas)
    stop = servers.stop_event

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        endpoints = servers.start()
    except OSError as exc:
        print(f"hcscan lab: cannot bind: {exc}", file=sys.stderr)
        return 3
    if args.manifest:
        servers.write_manifest(Path(args.manifest))
    if not args.quiet:
        assert servers.pki is not None
        print(f"hcscan lab ({args.layout} layout), CA bundle: {servers.pki.ca_bundle}")
        for e in endpoints:
            expect = " ".join(f"{k}={v}" for k, v in e.expect.items())
            print(f"  {e.name:<18} {e.protocol:<5} {e.address}:{e.port:<5} {e.server_name}  [{expect}]")
        print("Ctrl-C to stop.", flush=True)
    if args.parent_pid:
        threading.Thread(target=_watch_parent, args=(args.parent_pid, stop), daemon=True).start()
    while not stop.wait(1.0):
        pass
    servers.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scanner.lab", description="hcscan loopback test lab")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the lab servers in the foreground")
    serve.add_argument("--layout", choices=["ephemeral", "demo"], default="demo")
    serve.add_argument("--workdir", required=True, help="directory for generated certificates and keys")
    serve.add_argument("--replicas", type=int, default=0, help="extra copies of the good case")
    serve.add_argument("--manifest", help="write the endpoints as JSON to this file once listening")
    serve.add_argument("--quiet", action="store_true", help="do not print the endpoint table")
    serve.add_argument("--parent-pid", type=int, default=0, help="exit when this parent process is gone")
    args = parser.parse_args(argv)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())

"""Service-probe benchmark: nmap -sV of N loopback endpoints through hcscan's service probe vs bare nmap.

Both sides scan the same banner servers (half SSH, half HTTP) in the same run with the same nmap options
(-sT -Pn -n -T3 -sV --version-intensity 7 --max-parallelism N), alternating which goes first. The endpoints
belong to one system, so hcscan's run gets --max-parallelism = max_concurrency (4) × 1 system; bare nmap is
given the same value (from the same helper), so the comparison stays like for like. hcscan's overhead
(argument building, XML parsing, product recognition, facts) must stay within 20 % of bare nmap's wall time.

    python benchmarks/service_bench.py [--endpoints 200] [--rounds 2]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

from scanner.probes.base import Politeness, ProbeContext, ProbeFacts, Target
from scanner.probes.nmap import run_parallelism
from scanner.probes.registry import service_settings
from scanner.probes.service import ServiceProbe

ADDRESS = "127.0.0.1"
BANNERS = ("SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6", "nginx/1.24.0")
POLITENESS = Politeness(timing=3, timeout_s=50.0)  # host timeout 300 s, as bare nmap; max_concurrency 4
PARALLELISM = run_parallelism(POLITENESS, 1)  # all endpoints are one system's: what hcscan's run gets


@contextlib.contextmanager
def banner_servers(n: int) -> Iterator[list[tuple[int, str]]]:
    stop = threading.Event()
    socks: list[socket.socket] = []
    out: list[tuple[int, str]] = []

    def serve(conn: socket.socket, kind: int) -> None:
        with contextlib.suppress(OSError), conn:
            conn.settimeout(3)
            if kind == 0:
                conn.sendall(BANNERS[0].encode() + b"\r\n")
                conn.recv(1024)
            else:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                conn.sendall(f"HTTP/1.1 200 OK\r\nServer: {BANNERS[1]}\r\nContent-Length: 0\r\n\r\n".encode())

    def loop(sock: socket.socket, kind: int) -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setblocking(True)
            threading.Thread(target=serve, args=(conn, kind), daemon=True).start()

    for i in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ADDRESS, 0))
        s.listen(64)
        s.settimeout(0.2)
        socks.append(s)
        out.append((s.getsockname()[1], "ssh" if i % 2 == 0 else "http"))
        threading.Thread(target=loop, args=(s, i % 2), daemon=True).start()
    try:
        yield out
    finally:
        stop.set()
        for s in socks:
            s.close()


def bare_nmap(ports: list[int]) -> tuple[float, int]:
    cmd = [shutil.which("nmap") or "nmap", "-oX", "-", ADDRESS, "-sT", "-Pn", "-n", "-T3", "-p",
           ",".join(map(str, sorted(ports))), "--host-timeout", "300s", "--max-parallelism", str(PARALLELISM),
           "-sV", "--version-intensity", "7"]  # fmt: skip
    started = time.monotonic()
    xml = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900).stdout
    return time.monotonic() - started, xml.count('product="')


def hcscan_probe(endpoints: list[tuple[int, str]]) -> tuple[float, int]:
    settings = service_settings(None)
    targets = [Target(f"bench/{p}", "bench", ADDRESS, p, kind, politeness=POLITENESS) for p, kind in endpoints]
    probe = ServiceProbe(settings)
    started = time.monotonic()
    results = probe.gather(targets, ProbeContext())
    elapsed = time.monotonic() - started
    (run,) = probe.runs  # one nmap run; same flags as bare nmap
    assert run.command[run.command.index("--max-parallelism") + 1] == str(PARALLELISM), run.command
    identified = sum(1 for r in results.values() if isinstance(r, ProbeFacts) and r.facts.get("patch.product_id"))
    return elapsed, identified


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-overhead", type=float, default=0.20)
    args = parser.parse_args()
    print(f"both sides: --max-parallelism {PARALLELISM} (max_concurrency {POLITENESS.max_concurrency} x 1 system)")
    with banner_servers(args.endpoints) as endpoints:
        ports = [p for p, _ in endpoints]
        bare_times, ours = [], []
        for r in range(args.rounds):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for side in order:
                if side == 0:
                    t, n = bare_nmap(ports)
                    bare_times.append(t)
                    print(f"round {r + 1}: bare nmap   {t:7.2f} s  ({n} products)")
                else:
                    t, n = hcscan_probe(endpoints)
                    ours.append(t)
                    print(f"round {r + 1}: hcscan probe {t:7.2f} s  ({n}/{len(endpoints)} identified)")
    bare, mine = min(bare_times), min(ours)
    overhead = mine / bare - 1
    print(f"best of {args.rounds}: bare nmap {bare:.2f} s, hcscan {mine:.2f} s, overhead {overhead:+.1%} "
          f"(limit {args.max_overhead:.0%})")  # fmt: skip
    return 0 if overhead <= args.max_overhead else 1


if __name__ == "__main__":
    sys.exit(main())

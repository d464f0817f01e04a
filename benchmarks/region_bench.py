"""Region-size benchmark (issue 19): hcscan against bare nmap on the same loopback endpoints, in the same run.

For each size N (default 500 and 1,000) it starts benchmarks/region_lab.py's nginx lab (N TLS endpoints on
127.200.x.y, N/2 systems × 2 endpoints in five region files) and measures, one after another:

- hcscan full scan: `hcscan scan --config …` (every family; a fresh SQLite store), as a user runs it;
- bare nmap -sV, single: one `nmap -sT -Pn -n -T3 -sV --version-intensity 7 -p <sweep ports>` over all N hosts;
- bare nmap -sV, split: the same in runs of the hosts hcscan's service probe puts in one chunk, NMAP_MAX_PROCESSES
  at a time (as hcscan splits it; nmap's own host groups);
- hcscan TLS family: `hcscan scan --config … --family tls`;
- bare nmap TLS, single and split: `nmap -sT -Pn -n -p 443 --script ssl-enum-ciphers,ssl-cert`, split in runs of
  the TLS probe's size, NMAP_MAX_PROCESSES at a time.

Each line shows wall time, CPU (user + system of the process and every child it waited for: hcscan's figure
includes its nmap processes) and peak RSS (the largest single process). The store is read back: how many PAT/EXP
findings were assessed, and how many are "could not assess" because of a time limit. Ratios against split bare
nmap are printed at the end (targets: full scan ≤ 1.5× split nmap -sV; TLS ≤ 1.2× split nmap TLS).

Loopback only: the lab's addresses are 127.200.x.y, nmap runs with -n on IP addresses, hcscan's scope is
127.0.0.0/8. Needs nginx (apt-get install nginx-light) and nmap; run as root for the UDP sweep and uptime (-O).

    .venv/bin/python benchmarks/region_bench.py --sizes 500 1000 [--skip-single] [--json out/region.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from region_lab import TLS_PORT, RegionEndpoint, region_lab, write_workspace

from scanner.exposure_config import DEFAULT_SWEEP_PORTS
from scanner.probes.nmap import NMAP_MAX_PROCESSES
from scanner.probes.service import chunk_capacity
from scanner.probes.tls import NMAP_MAX_HOSTS_PER_RUN

HCSCAN = Path(sys.executable).with_name("hcscan")
TARGET_FULL_OVER_SPLIT = 1.5
TARGET_TLS_OVER_SPLIT = 1.2
PAT_EXP = ("PAT-", "EXP-01")


@dataclass
class Measure:
    name: str
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    processes: int = 0
    ok: bool = True
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def _run(cmd: Sequence[str], *, stdout: Path | None = None, cwd: Path | None = None) -> tuple[float, float, int, int]:
    """(wall s, cpu s, peak RSS KiB, exit status) of one process and the children it waited for."""
    started = time.perf_counter()
    with open(stdout or os.devnull, "wb") as out:
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=cwd)
        err = proc.stderr.read() if proc.stderr else b""
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(err.decode("utf-8", "replace")[-2000:])
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, proc.returncode


def bare_nmap(name: str, chunks: Sequence[Sequence[str]], args: Sequence[str], workdir: Path) -> Measure:
    """`nmap <args> <hosts>` for every chunk, NMAP_MAX_PROCESSES at a time; XML kept for a sanity count."""
    nmap = shutil.which("nmap")
    if nmap is None:
        raise SystemExit("nmap not found (apt-get install nmap)")
    m = Measure(name, processes=len(chunks))
    lock = threading.Lock()
    hosts_seen: Counter[str] = Counter()

    def one(i: int, hosts: Sequence[str]) -> None:
        xml = workdir / f"{name.replace(' ', '_')}-{i}.xml"
        _wall, cpu, rss, code = _run([nmap, "-oX", str(xml), *args, *hosts])
        text = xml.read_text(errors="replace") if xml.exists() else ""
        with lock:
            m.cpu_s += cpu
            m.peak_rss_mb = max(m.peak_rss_mb, rss / 1024)
            m.ok = m.ok and code == 0 and "<runstats>" in text
            hosts_seen["timedout"] += text.count('timedout="true"')
            hosts_seen["open"] += text.count('<state state="open"')
            hosts_seen["services"] += text.count("<service ")

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(NMAP_MAX_PROCESSES, len(chunks))) as pool:
        for f in [pool.submit(one, i, c) for i, c in enumerate(chunks)]:
            f.result()
    m.wall_s = time.perf_counter() - started
    m.detail = dict(hosts_seen)
    m.note = f"{len(chunks)} run(s); open ports {hosts_seen['open']}, host timeouts {hosts_seen['timedout']}"
    return m


def _findings(store: Path) -> dict[str, Any]:
    con = sqlite3.connect(store)
    try:
        rows = con.execute("SELECT control_id, status, message FROM finding").fetchall()
    finally:
        con.close()
    by_status: Counter[str] = Counter(r[1] for r in rows)
    pat_exp = [r for r in rows if r[0].startswith(PAT_EXP)]
    timeouts = [r for r in pat_exp if r[1] == "error" and ("timeout" in r[2] or "did not finish" in r[2])]
    examples = Counter(f"{r[0]}: {r[2][:140]}" for r in pat_exp if r[1] == "error")
    return {
        "findings": len(rows),
        "statuses": dict(by_status),
        "pat_exp": len(pat_exp),
        "pat_exp_statuses": dict(Counter(r[1] for r in pat_exp)),
        "pat_exp_timeouts": len(timeouts),
        "pat_exp_error_examples": examples.most_common(6),
    }


def hcscan(name: str, workdir: Path, endpoints: Sequence[RegionEndpoint], ca: Path, *extra: str) -> Measure:
    store = workdir / f"{name.replace(' ', '_')}.db"
    store.unlink(missing_ok=True)
    config = write_workspace(workdir, endpoints, ca, store)
    exe = [str(HCSCAN)] if HCSCAN.exists() else [sys.executable, "-m", "scanner"]
    wall, cpu, rss, code = _run([*exe, "scan", "--config", str(config), "--format", "json", *extra],
                                stdout=workdir / f"{name.replace(' ', '_')}.json", cwd=workdir)  # fmt: skip
    m = Measure(name, wall, cpu, rss / 1024, 1, ok=code in (0, 1))  # 1: the scan found failures
    m.detail = _findings(store)
    m.note = (
        f"exit {code}; {m.detail['findings']} findings {m.detail['statuses']}; PAT/EXP {m.detail['pat_exp']} "
        f"{m.detail['pat_exp_statuses']}, {m.detail['pat_exp_timeouts']} time-limit errors"
    )
    return m


def _chunks(addresses: Sequence[str], size: int) -> list[list[str]]:
    return [list(addresses[i : i + size]) for i in range(0, len(addresses), size)]


def bench_size(n: int, workdir: Path, skip_single: bool, only: set[str]) -> list[Measure]:
    out: list[Measure] = []
    sweep = ",".join(str(p) for p in sorted(DEFAULT_SWEEP_PORTS))
    sv = ["-sT", "-Pn", "-n", "-T3", "-p", sweep, "-sV", "--version-intensity", "7"]
    tls = ["-sT", "-Pn", "-n", "-T3", "-p", str(TLS_PORT), "--script", "ssl-enum-ciphers,ssl-cert"]
    with region_lab(n, workdir / "lab") as (endpoints, ca):
        addresses = [ep.address for ep in endpoints]
        print(f"[{n}] lab up: {n} endpoints, {n // 2} systems", flush=True)
        steps: list[tuple[str, Any]] = []
        if "full" in only:
            steps += [
                ("hcscan full scan", lambda: hcscan("hcscan full scan", workdir, endpoints, ca)),
                ("nmap -sV split", lambda: bare_nmap("nmap -sV split", _chunks(addresses, chunk_capacity(len(
                    DEFAULT_SWEEP_PORTS))), sv, workdir)),
            ]  # fmt: skip
            if not skip_single:
                steps.append(("nmap -sV single", lambda: bare_nmap("nmap -sV single", [addresses], sv, workdir)))
        if "tls" in only:
            steps += [
                ("hcscan TLS", lambda: hcscan("hcscan TLS", workdir, endpoints, ca, "--family", "tls")),
                ("nmap TLS split", lambda: bare_nmap("nmap TLS split", _chunks(addresses, NMAP_MAX_HOSTS_PER_RUN),
                                                     tls, workdir)),
            ]  # fmt: skip
            if not skip_single:
                steps.append(("nmap TLS single", lambda: bare_nmap("nmap TLS single", [addresses], tls, workdir)))
        for label, step in steps:
            print(f"[{n}] {label} …", flush=True)
            m = step()
            m.detail["n"] = n
            print(f"[{n}] {m.name:<18} {m.wall_s:8.1f} s wall {m.cpu_s:7.1f} s CPU {m.peak_rss_mb:7.1f} MB  "
                  f"{'ok' if m.ok else 'NOT OK'}  {m.note}", flush=True)  # fmt: skip
            out.append(m)
    return out


def ratios(results: Sequence[Measure]) -> dict[str, float]:
    by = {m.name: m for m in results}
    out: dict[str, float] = {}
    for a, b in (
        ("hcscan full scan", "nmap -sV split"),
        ("hcscan full scan", "nmap -sV single"),
        ("hcscan TLS", "nmap TLS split"),
        ("hcscan TLS", "nmap TLS single"),
    ):
        if a in by and b in by and by[b].wall_s > 0:
            out[f"{a} / {b} (wall)"] = round(by[a].wall_s / by[b].wall_s, 2)
            out[f"{a} - {b} (CPU s)"] = round(by[a].cpu_s - by[b].cpu_s, 1)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1000])
    parser.add_argument("--only", choices=["full", "tls"], nargs="+", default=["full", "tls"])
    parser.add_argument("--skip-single", action="store_true", help="leave out the single bare nmap runs")
    parser.add_argument("--json", type=Path, help="write every measure here")
    parser.add_argument("--workdir", type=Path, help="keep the lab, stores and XML here")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"sizes": {}}
    for n in args.sizes:
        workdir = args.workdir / str(n) if args.workdir else Path(tempfile.mkdtemp(prefix=f"region-bench-{n}-"))
        workdir.mkdir(parents=True, exist_ok=True)
        results = bench_size(n, workdir, args.skip_single, set(args.only))
        r = ratios(results)
        for k, v in r.items():
            print(f"[{n}] {k}: {v}")
        full = r.get("hcscan full scan / nmap -sV split (wall)")
        tls = r.get("hcscan TLS / nmap TLS split (wall)")
        if full is not None:
            print(
                f"[{n}] full scan target ≤ {TARGET_FULL_OVER_SPLIT}×: {'met' if full <= TARGET_FULL_OVER_SPLIT else 'MISSED'}"
            )
        if tls is not None:
            print(f"[{n}] TLS target ≤ {TARGET_TLS_OVER_SPLIT}×: {'met' if tls <= TARGET_TLS_OVER_SPLIT else 'MISSED'}")
        report["sizes"][str(n)] = {"measures": [asdict(m) for m in results], "ratios": r}
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

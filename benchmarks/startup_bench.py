"""Start-up benchmark: a one-shot `hcscan scan --family tls` against bare nmap, and `hcscan validate` at region size.

1. TLS scan: the project's loopback lab with N (default 15) replicas of the `good` case (real TLS servers on
   127.0.0.1, ephemeral ports), one system per endpoint. Alternating rounds of
     - `hcscan scan --config … --family tls --format json` (a new process each time: interpreter start, imports,
       loading, planning, nmap, handshakes, judging, storing), and
     - bare `nmap -sT -Pn -n -p <ports> --script ssl-enum-ciphers,ssl-cert 127.0.0.1` on the same ports.
   The store is created by one untimed warm-up scan (a user's store exists already); every timed scan must exit 0
   and store N×7 verdicts, and nmap's XML must hold both scripts' results for every port. Median of the rounds.
   Target: hcscan / nmap ≤ 2.
2. validate: a generated inventory of S (default 1,000) systems × 2 endpoints in five region files, plus the shipped
   controls; `hcscan validate` timed in a new process, median of the rounds. Target: < 1 s.

Traffic goes to 127.0.0.1 only (lab servers on loopback, nmap -n on 127.0.0.1, scope 127.0.0.0/8).

    .venv/bin/python benchmarks/startup_bench.py                   # both parts, 5 rounds
    .venv/bin/python benchmarks/startup_bench.py --json out/startup.json --importtime

Exit codes: 0 fine; 1 a sanity check failed; 3 nmap missing; 4 a target missed with --enforce-targets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as SafeET

from scanner.lab import Lab, LabEndpoint
from scanner.yamlio import dump_yaml

LOOPBACK = "127.0.0.1"
TLS_CONTROLS = 7
TARGET_SCAN_OVER_NMAP = 2.0
TARGET_VALIDATE_S = 1.0
HCSCAN = Path(sys.executable).with_name("hcscan")
REGIONS = ("hovedstaden", "midtjylland", "nordjylland", "sjaelland", "syddanmark")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def hcscan_cmd(*args: str) -> list[str]:
    return [str(HCSCAN), *args] if HCSCAN.exists() else [sys.executable, "-m", "scanner", *args]


def timed(cmd: Sequence[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    return time.perf_counter() - start, proc


# ---------------------------------------------------------------------------------------------
# the TLS scan against bare nmap


def write_scan_workspace(root: Path, endpoints: Sequence[LabEndpoint], ca_bundle: Path) -> Path:
    systems = [
        {
            "id": f"tls-{i:03d}",
            "name": f"Replica {ep.name}",
            "owner": "startup_bench",
            "criticality": "medium",
            "endpoints": [
                {
                    "id": "web",
                    "host": ep.address,
                    "port": ep.port,
                    "protocol": ep.protocol,
                    "server_name": ep.server_name,
                }
            ],
        }
        for i, ep in enumerate(endpoints)
    ]
    (root / "inventory").mkdir(parents=True, exist_ok=True)
    (root / "inventory" / "bench.yaml").write_text(
        dump_yaml({"region": {"id": "bench", "name": "Benchmark"}, "systems": systems}), encoding="utf-8"
    )
    config = {
        "store_url": "sqlite:///hcscan.db",
        "inventory": ["inventory"],
        "controls": ["builtin"],
        "scope": {"allowed_networks": ["127.0.0.0/8"]},
        "tls": {"use_system_store": False, "ca_bundles": [str(ca_bundle.resolve())]},
    }
    (root / "config.yaml").write_text(dump_yaml(config), encoding="utf-8")
    return root / "config.yaml"


def run_hcscan(root: Path, n: int) -> tuple[float, str | None]:
    wall, proc = timed(hcscan_cmd("scan", "--config", "config.yaml", "--family", "tls", "--format", "json"), root)
    if proc.returncode != 0:
        return wall, f"hcscan exited {proc.returncode}: {proc.stderr[-600:]}"
    try:
        findings = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        return wall, f"hcscan printed no JSON: {exc}"
    passed = sum(1 for f in findings if f["status"] == "pass")
    if len(findings) != n * TLS_CONTROLS or passed != n * TLS_CONTROLS:
        return wall, f"hcscan judged {len(findings)} findings ({passed} pass), expected {n * TLS_CONTROLS} passes"
    with sqlite3.connect(root / "hcscan.db") as db:
        status, stored = db.execute("select status, n_findings from scan_run order by id desc limit 1").fetchone()
    if status != "complete" or stored != n * TLS_CONTROLS:
        return wall, f"last run is {status} with {stored} findings"
    return wall, None


def run_nmap(root: Path, endpoints: Sequence[LabEndpoint], rnd: int) -> tuple[float, str | None]:
    nmap = shutil.which("nmap")
    assert nmap is not None
    xml = root / f"nmap-{rnd}.xml"
    ports = ",".join(str(ep.port) for ep in endpoints)
    cmd = [nmap, "-sT", "-Pn", "-n", "-p", ports, "--script", "ssl-enum-ciphers,ssl-cert", "-oX", str(xml), LOOPBACK]
    wall, proc = timed(cmd, root)
    if proc.returncode != 0:
        return wall, f"nmap exited {proc.returncode}: {proc.stderr[-600:]}"
    seen: dict[str, set[int]] = {"ssl-enum-ciphers": set(), "ssl-cert": set()}
    root_el = SafeET.parse(xml).getroot()
    for port in root_el.iter("port") if root_el is not None else ():
        for script in port.findall("script"):
            if script.get("id") in seen:
                seen[str(script.get("id"))].add(int(port.get("portid", "0")))
    wanted = {ep.port for ep in endpoints}
    missing = {name: len(wanted - got) for name, got in seen.items() if wanted - got}
    return wall, f"nmap results missing on ports: {missing}" if missing else None


def bench_scan(work: Path, n: int, rounds: int, importtime: bool = False) -> dict[str, Any]:
    with Lab(work / "lab", replicas=n) as lab:
        endpoints = sorted((ep for name, ep in lab.endpoints.items() if name.startswith("good-")), key=lambda e: e.port)
        if len(endpoints) != n:
            raise SystemExit(f"the lab has {len(endpoints)} good-* replicas, wanted {n}")
        root = work / "scan"
        write_scan_workspace(root, endpoints, lab.ca_bundle)
        warm, problem = run_hcscan(root, n)
        if problem:
            raise SystemExit(f"warm-up scan failed: {problem}")
        log(f"warm-up scan (creates the store): {warm:.2f} s")
        hc: list[float] = []
        nm: list[float] = []
        problems: list[str] = []
        for rnd in range(rounds):
            order = ("hcscan", "nmap") if rnd % 2 == 0 else ("nmap", "hcscan")
            for tool in order:
                wall, problem = run_hcscan(root, n) if tool == "hcscan" else run_nmap(root, endpoints, rnd)
                (hc if tool == "hcscan" else nm).append(wall)
                log(f"round {rnd + 1} {tool:6s} {wall:.2f} s" + (f"  PROBLEM: {problem}" if problem else ""))
                if problem:
                    problems.append(f"{tool} round {rnd + 1}: {problem}")
        imports = import_profile(root) if importtime else []
    ratio = statistics.median(hc) / statistics.median(nm)
    return {
        "endpoints": n,
        "hcscan_s": hc,
        "nmap_s": nm,
        "hcscan_median_s": statistics.median(hc),
        "nmap_median_s": statistics.median(nm),
        "ratio": ratio,
        "target_max": TARGET_SCAN_OVER_NMAP,
        "met": ratio <= TARGET_SCAN_OVER_NMAP,
        "problems": problems,
        "imports_ms": imports,
    }


# ---------------------------------------------------------------------------------------------
# validate at region size


def write_region_inventory(root: Path, n_systems: int) -> None:
    """n systems × 2 endpoints (https + dicom) spread over five region files; addresses in 127.0.0.0/8."""
    (root / "inventory").mkdir(parents=True, exist_ok=True)
    per = -(-n_systems // len(REGIONS))
    for r, region in enumerate(REGIONS):
        systems = []
        for i in range(r * per, min(n_systems, (r + 1) * per)):
            address = f"127.{1 + i // 60000}.{(i // 250) % 240}.{1 + i % 250}"
            systems.append(
                {
                    "id": f"{region[:4]}-sys-{i:05d}",
                    "name": f"System {i} of {region}",
                    "owner": "Regional IT",
                    "criticality": ("low", "medium", "high", "critical")[i % 4],
                    "tags": ["generated", f"site-{i % 7}"],
                    "endpoints": [
                        {"id": "web", "host": address, "port": 443, "protocol": "https"},
                        {"id": "pacs", "host": address, "port": 11112, "protocol": "dicom"},
                    ],
                }
            )
        doc = {"region": {"id": region, "name": region.title()}, "systems": systems}
        (root / "inventory" / f"{region}.yaml").write_text(dump_yaml(doc), encoding="utf-8")
    config = {
        "store_url": "sqlite:///hcscan.db",
        "inventory": ["inventory"],
        "controls": ["builtin"],
        "scope": {"allowed_networks": ["127.0.0.0/8"]},
    }
    (root / "config.yaml").write_text(dump_yaml(config), encoding="utf-8")


def bench_validate(work: Path, n_systems: int, rounds: int) -> dict[str, Any]:
    root = work / "validate"
    write_region_inventory(root, n_systems)
    times: list[float] = []
    for rnd in range(rounds):
        wall, proc = timed(hcscan_cmd("validate", "--config", "config.yaml"), root)
        if proc.returncode != 0:
            raise SystemExit(f"validate failed (exit {proc.returncode}): {proc.stderr[-800:]}")
        times.append(wall)
        log(f"round {rnd + 1} validate {wall:.2f} s")
    median = statistics.median(times)
    return {
        "systems": n_systems,
        "endpoints": 2 * n_systems,
        "validate_s": times,
        "median_s": median,
        "target_max_s": TARGET_VALIDATE_S,
        "met": median < TARGET_VALIDATE_S,
    }


def import_profile(root: Path, top: int = 15) -> list[tuple[str, float]]:
    """The slowest imports of one `hcscan scan --family tls` (python -X importtime): modules imported at the top
    level or by hcscan's own modules, cumulative ms."""
    cmd = [sys.executable, "-X", "importtime", "-m", "scanner", "scan", "--config", "config.yaml", "--family", "tls"]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120, check=False)
    rows: list[tuple[str, float]] = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if not cumulative.strip().isdigit():
            continue
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 1 or (depth == 2 and not name.strip().startswith("scanner")):
            rows.append((("  " * max(0, depth - 1)) + name.strip(), int(cumulative) / 1000))
    return sorted(rows, key=lambda r: -r[1])[:top]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=15, help="TLS endpoints (lab good-* replicas)")
    p.add_argument("--systems", type=int, default=1000, help="systems in the generated inventory for validate")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--skip", action="append", default=[], choices=("scan", "validate"))
    p.add_argument("--importtime", action="store_true", help="also print the slowest top-level imports")
    p.add_argument("--json", type=Path, help="write every number to this file")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--enforce-targets", action="store_true", help="exit 4 when a target is missed")
    args = p.parse_args(argv)
    if "scan" not in args.skip and shutil.which("nmap") is None:
        log("nmap not found on PATH (apt-get install nmap)")
        return 3
    work = Path(tempfile.mkdtemp(prefix="hcscan-startup-"))
    out: dict[str, Any] = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "rounds": args.rounds}
    try:
        if "scan" not in args.skip:
            out["scan"] = bench_scan(work, args.n, args.rounds, args.importtime)
        if "validate" not in args.skip:
            out["validate"] = bench_validate(work, args.systems, args.rounds)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"start-up benchmark ({out['cpus']} CPUs, Python {out['python']}, median of {args.rounds} rounds)")
    scan, val = out.get("scan"), out.get("validate")
    if scan:
        print(
            f"  scan --family tls, {scan['endpoints']} endpoints: hcscan {scan['hcscan_median_s']:.2f} s, bare nmap "
            f"{scan['nmap_median_s']:.2f} s, ratio {scan['ratio']:.2f} (target <= {TARGET_SCAN_OVER_NMAP}: "
            f"{'met' if scan['met'] else 'MISSED'})"
        )
    if val:
        print(
            f"  validate, {val['systems']} systems / {val['endpoints']} endpoints: {val['median_s']:.2f} s "
            f"(target < {TARGET_VALIDATE_S} s: {'met' if val['met'] else 'MISSED'})"
        )
    for name, ms in (scan or {}).get("imports_ms", []):
        print(f"    import {name:40s} {ms:7.1f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2), encoding="utf-8")
    if scan and scan["problems"]:
        print("  PROBLEMS:\n    " + "\n    ".join(scan["problems"]))
        return 1
    missed = (scan is not None and not scan["met"]) or (val is not None and not val["met"])
    return 4 if args.enforce_targets and missed else 0


if __name__ == "__main__":
    sys.exit(main())

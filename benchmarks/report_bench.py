"""Report benchmark: 10,000 systems × 30 controls × 52 weekly scans → all region reports + overview.

The store is generated straight into the hcscan schema (migrated by `open_store`) the way `complete_run` writes it:
a `finding` row when a fingerprint is first judged or its verdict changes (here ~2 % of verdicts change per week),
`finding_state` pointing at the current row, and one `run_family_agg` row per run, region and family. Then
`render_reports` runs in a fresh process and we print wall time, peak RSS and store size.

    .venv/bin/python benchmarks/report_bench.py [--systems 10000] [--controls 30] [--weeks 52] [--keep DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REGIONS = ["hovedstaden", "sjaelland", "syddanmark", "midtjylland", "nordjylland"]
SEV = ["critical", "high", "medium", "low"]
SEV_W = {"critical": 10, "high": 5, "medium": 2, "low": 1}
CRIT_W = {"critical": 4, "high": 3, "medium": 2, "low": 1}
FAMILIES = ["tls", "patching", "exposure", "availability", "logging"]


def generate(db: Path, n_systems: int, n_controls: int, weeks: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scanner.store.db import open_store

    open_store(f"sqlite:///{db}").dispose()  # the real schema, migrated
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    rnd = random.Random(7)
    controls = [(f"C-{i:02d}", FAMILIES[i % 5], SEV[i % 4]) for i in range(n_controls)]
    cat, inv = "c" * 64, "i" * 64
    refs = json.dumps({"nis2": ["21(2)(h)"], "iso27001": ["A.8.24"], "cis": ["3.10"], "dk_strategy": ["Forebygge"]})
    con.executemany(
        "INSERT INTO control_def VALUES (?,?,?,?,?,?,?,?)",
        [(cat, c, f"Title {c}", f, s, "Why, with commas.", "Fix it, then verify.", refs) for c, f, s in controls],
    )
    systems = []
    for i in range(n_systems):
        region = REGIONS[i % 5]
        crit = SEV[rnd.randrange(4)]
        systems.append((f"sys-{i:05d}", region, crit))
    con.executemany(
        "INSERT INTO system_def VALUES (?,?,?,?,?,?,?,?)",
        [(inv, s, r, f"Region {r}", f"System {s}", "Team", c, 0) for s, r, c in systems],
    )
    start = datetime(2025, 11, 24, 2, 0, tzinfo=UTC)
    # current verdict per fingerprint: status, finding_id, first_seen
    state: dict[str, list[object]] = {}
    next_fid = 1
    for w in range(weeks):
        when = start + timedelta(weeks=w)
        ts = when.strftime("%Y-%m-%d %H:%M:%S.000000")
        cur = con.execute(
            "INSERT INTO scan_run (started_at, finished_at, status, status_detail, tool_version, catalog_digest,"
            " inventory_digest, config_digest, selection, regions, host, pid, agent_id, n_findings, n_pass, n_fail,"
            " n_error, n_not_applicable, n_waived) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,0,0,0,0,0,0)",
            (ts, ts, "complete", "", "0.1.0", cat, inv, "f" * 64, "{}", json.dumps(REGIONS), "bench", 1, ""),
        )
        run_id = cur.lastrowid
        findings, new_states, upd = [], [], []
        aggs: dict[tuple[str, str], dict[str, int]] = {}
        agg_systems: dict[tuple[str, str], set[str]] = {}
        for sid, region, crit in systems:
            for cid, fam, sev in controls:
                a = aggs.setdefault(
                    (region, fam),
                    {"pass": 0, "fail": 0, "error": 0, "waived": 0, "not_applicable": 0, "wp": 0, "wt": 0},
                )
                agg_systems.setdefault((region, fam), set()).add(sid)
                fp = hashlib.blake2b(f"{cid}/{sid}".encode(), digest_size=16).hexdigest()
                prev = state.get(fp)
                if prev is None or rnd.random() < 0.02:
                    r = rnd.random()
                    status = "pass" if r < 0.8 else "fail" if r < 0.93 else "error" if r < 0.98 else "waived"
                else:
                    status = str(prev[0])
                a[status] += 1
                if status in ("pass", "fail", "error"):
                    wt = SEV_W[sev] * CRIT_W[crit]
                    a["wt"] += wt
                    a["wp"] += wt if status == "pass" else 0
                if prev is not None and prev[0] == status:
                    continue
                bad = status != "pass"
                change = (
                    "new"
                    if prev is None and bad
                    else "unchanged"
                    if prev is None
                    else "fixed"
                    if not bad
                    else "regressed"
                )
                ev = json.dumps({"tls.leaf.not_after": "2026-12-01T00:00:00Z", "probe": "bench", "n": w})
                findings.append(
                    (next_fid, run_id, fp, cid, fam, sev, region, sid, f"{sid}/web", crit, status, change,
                     f"{cid} on {sid}: {status}, as seen in week {w}", ev, ts)
                )  # fmt: skip
                if prev is None:
                    new_states.append((fp, cid, region, sid, f"{sid}/web", status, ts if bad else None, ts if bad else None,
                                       None, ts, run_id, 0, next_fid, "d", sev, fam))  # fmt: skip
                    state[fp] = [status, next_fid]
                else:
                    upd.append((status, next_fid, ts if bad else None, fp))
                    state[fp] = [status, next_fid]
                next_fid += 1
        con.executemany("INSERT INTO finding VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", findings)
        con.executemany("INSERT INTO finding_state (fingerprint, control_id, region_id, system_id, endpoint_key, status,"
                        " first_seen_at, last_seen_at, resolved_at, last_verified_at, last_run_id, times_reopened,"
                        " finding_id, verdict_digest, severity, family) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", new_states)  # fmt: skip
        con.executemany(
            "UPDATE finding_state SET status=?, finding_id=?, first_seen_at=COALESCE(first_seen_at, ?) WHERE fingerprint=?",
            upd,
        )
        con.execute("UPDATE finding_state SET last_verified_at=?, last_run_id=?", (ts, run_id))
        con.executemany(
            "INSERT INTO run_family_agg (run_id, region_id, family, n_systems, n_pass, n_fail, n_error, n_waived,"
            " n_not_applicable, w_pass, w_total) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [(run_id, region, fam, len(agg_systems[(region, fam)]), a["pass"], a["fail"], a["error"], a["waived"],
              a["not_applicable"], a["wp"], a["wt"]) for (region, fam), a in aggs.items()],
        )  # fmt: skip
        con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def render(db: Path, out: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from scanner.report.render import render_reports
    from scanner.store.db import open_store

    engine = open_store(f"sqlite:///{db}")
    t0 = time.perf_counter()
    paths = render_reports(engine, out)
    elapsed = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    size = sum(p.stat().st_size for p in paths)
    print(
        json.dumps(
            {
                "render_s": round(elapsed, 2),
                "peak_rss_mb": round(rss_mb),
                "pages": len(paths),
                "html_mb": round(size / 1e6, 1),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--systems", type=int, default=10_000)
    ap.add_argument("--controls", type=int, default=30)
    ap.add_argument("--weeks", type=int, default=52)
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--render-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.render_only:
        render(args.render_only, args.render_only.parent / "reports")
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="hcscan-report-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "bench.db"
    db.unlink(missing_ok=True)
    t0 = time.perf_counter()
    generate(db, args.systems, args.controls, args.weeks)
    gen_s = time.perf_counter() - t0
    con = sqlite3.connect(db)
    counts = {
        t: con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
        for t in ("finding", "finding_state", "run_family_agg", "scan_run")
    }
    con.close()
    store_mb = db.stat().st_size / 1e6
    print(
        f"generated {args.systems} systems × {args.controls} controls × {args.weeks} weeks in {gen_s:.0f} s: {counts}"
    )
    print(f"store: {store_mb:.0f} MB (target < 2000 MB)")
    t1 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--render-only", str(db)], capture_output=True, text=True, check=True
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"render (fresh process): {result['render_s']} s (target < 30 s), peak RSS {result['peak_rss_mb']} MB (target < 1024 MB), "
          f"{result['pages']} pages, {result['html_mb']} MB of HTML; process wall {time.perf_counter() - t1:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()

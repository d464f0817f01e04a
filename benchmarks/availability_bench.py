"""Availability benchmark (issue 4): one sampling round over 1,000 loopback endpoints, and the 30-day SLA query
over 1,000 endpoints × 1 sample/min × 30 days (43.2 M samples) on SQLite.

1. Round: a child process listens on --endpoints ports spread over 8 loopback addresses (127.0.0.1–127.0.0.8) and
   answers HTTP; hcscan samples every endpoint once (half TCP connect, half HTTP GET with status check) with the
   real AvailabilitySampler and stores the round with record_round. Targets: < 10 s.
2. Query: a fresh SQLite file under a temp dir is filled with generated history — samples straight into avl_sample
   by one INSERT … SELECT over a recursive sequence (SQLite does the work), the hourly rollups aggregated from
   those samples in SQL, the coverage spans from the same outage schedule, one heartbeat row per minute — then
   window_stats() answers the 30-day SLA for every endpoint (with weekly maintenance declared for 10 % of them).
   Target: < 5 s. Generation takes a few minutes and about 1.5 GB of disk; the file is deleted afterwards.

Outage schedule of the generated history (minute m of 43,200, endpoint e of 1,000): every 10th endpoint is down
30 minutes a week; every 50th (offset 1) flaps: down one minute every hour; the rest is up. Latency is
3 + (7e + 13m) mod 60 ms.

    .venv/bin/python benchmarks/availability_bench.py                  # both parts
    .venv/bin/python benchmarks/availability_bench.py --skip query     # only the round
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scanner.availability import (
    LATENCY_BOUNDS_MS,
    N_LATENCY_BUCKETS,
    WEEKDAYS,
    MaintenanceWindow,
    latency_bucket,
    to_ms,
)
from scanner.probes.availability import AvailabilitySampler, SamplerSettings
from scanner.probes.base import Target
from scanner.store.availability import heartbeat, record_round, window_stats
from scanner.store.db import open_store

ADDRESSES = [f"127.0.0.{i}" for i in range(1, 9)]

_SERVER = r"""
import asyncio, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
addresses, per = sys.argv[1].split(","), int(sys.argv[2])
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"

async def handle(reader, writer):
    try:
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(RESPONSE)
        await writer.drain()
    except Exception:
        pass
    writer.close()

async def main():
    ports = []
    for addr in addresses:
        for _ in range(per):
            server = await asyncio.start_server(handle, addr, 0, backlog=512)
            ports.append(f"{addr}:{server.sockets[0].getsockname()[1]}")
    print(" ".join(ports), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def bench_round(n: int, workdir: Path) -> float:
    resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
    per = -(-n // len(ADDRESSES))
    child = subprocess.Popen(
        [sys.executable, "-c", _SERVER, ",".join(ADDRESSES), str(per)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        listening = child.stdout.readline().split()[:n]
        targets = []
        for i, hostport in enumerate(listening):
            addr, port = hostport.rsplit(":", 1)
            protocol = "http" if i % 2 else "mllp"  # http: GET / and status check; mllp: TCP connect
            targets.append(Target(f"sys{i}/ep", f"sys{i}", addr, int(port), protocol))
        engine = open_store(f"sqlite:///{workdir / 'round.db'}")
        sampler = AvailabilitySampler(SamplerSettings(timeout_s=5, retry_delay_s=1, max_concurrency=200))
        started = time.perf_counter()
        samples = sampler.sample(targets)
        sampled = time.perf_counter()
        summary = record_round(engine, datetime.now(UTC), 60, list(samples.values()), {})
        stored = time.perf_counter()
        engine.dispose()
    finally:
        child.terminate()
        child.wait(timeout=10)
    up = sum(1 for s in samples.values() if s.up)
    print(
        f"round: {len(targets)} endpoints on {len(ADDRESSES)} addresses — sampled in {sampled - started:.2f} s, "
        f"stored in {stored - sampled:.2f} s, total {stored - started:.2f} s (target < 10 s); "
        f"{up} up, {summary.n_down} down, {summary.n_unknown} unknown"
    )
    if up != len(targets):
        print("  warning: not every endpoint answered", file=sys.stderr)
    return stored - started


def _flapper(e: int) -> bool:
    return e % 50 == 1


def _weekly(e: int) -> bool:
    return e % 10 == 0


def _is_down(e: int, m: int) -> bool:
    return (_weekly(e) and 600 <= m % 10080 <= 629) or (_flapper(e) and m % 60 == 17)


def generate(db: Path, n: int, days: int, end: datetime) -> None:
    """Fill a migrated store with n endpoints × one sample per minute for `days` days ending at `end`."""
    minutes = days * 24 * 60
    t0 = to_ms(end) - minutes * 60_000
    engine = open_store(f"sqlite:///{db}")
    engine.dispose()
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=OFF")  # a throwaway file: no journal while generating
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-400000")
    con.executemany(
        "INSERT INTO avl_endpoint (id, key, system_id, region_id, method, last_ms, last_up, span_start_ms, "
        "span_end_ms) VALUES (?, ?, ?, 'bench', 'tcp', NULL, NULL, NULL, NULL)",
        [(e, f"sys{e}/ep", f"sys{e}") for e in range(1, n + 1)],
    )
    # down(e, m): weekly 30 min for every 10th endpoint (minute 600..629 of each week); flappers minute 17 each hour
    down = "((e % 10 = 0 AND m % 10080 BETWEEN 600 AND 629) OR (e % 50 = 1 AND m % 60 = 17))"
    started = time.perf_counter()
    con.execute(
        f"""
        INSERT INTO avl_sample (endpoint_id, t_ms, up, latency_ms, reason, detail, attempts)
        WITH RECURSIVE eps(e) AS (SELECT 1 UNION ALL SELECT e + 1 FROM eps WHERE e < {n}),
             mins(m) AS (SELECT 0 UNION ALL SELECT m + 1 FROM mins WHERE m < {minutes - 1})
        SELECT e, {t0} + m * 60000, NOT {down},
               CASE WHEN {down} THEN NULL ELSE 3 + (7 * e + 13 * m) % 60 END,
               CASE WHEN {down} THEN 'refused' END, NULL, CASE WHEN {down} THEN 2 ELSE 1 END
        FROM eps, mins
        """
    )
    con.commit()
    print(f"  generated {n * minutes:,} samples in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    # Hourly rollups, computed from the same formula (13 is coprime with 60, so a full hour of up samples has
    # every latency 3..62 ms exactly once); a few rows are then checked against the samples themselves.
    full = [0] * N_LATENCY_BUCKETS
    for lat in range(3, 63):
        full[latency_bucket(lat)] += 1
    h0 = t0 // 3_600_000
    rows = []
    for e in range(1, n + 1):
        for h in range(minutes // 60):
            counts = list(full)
            n_up = 60
            for m in range(h * 60, h * 60 + 60):
                if _is_down(e, m):
                    n_up -= 1
                    counts[latency_bucket(3 + (7 * e + 13 * m) % 60)] -= 1
            rows.append((e, h0 + h, 60, n_up, *counts))
    marks = ", ".join("?" * (4 + N_LATENCY_BUCKETS))
    con.executemany(f"INSERT INTO avl_hour VALUES ({marks})", rows)
    con.commit()
    edges = [None, *LATENCY_BOUNDS_MS, None]
    sums = ", ".join(
        "SUM(up AND latency_ms IS NOT NULL"
        + (f" AND latency_ms > {edges[i]}" if edges[i] is not None else "")
        + (f" AND latency_ms <= {edges[i + 1]}" if edges[i + 1] is not None else "")
        + ")"
        for i in range(N_LATENCY_BUCKETS)
    )
    for e, h in ((1, 0), (10, 10), (n, minutes // 60 - 1)):
        lo = (h0 + h) * 3_600_000
        want = con.execute(
            f"SELECT endpoint_id, {h0 + h}, COUNT(*), SUM(up), {sums} FROM avl_sample "
            "WHERE endpoint_id = ? AND t_ms >= ? AND t_ms < ?",
            (e, lo, lo + 3_600_000),
        ).fetchone()
        got = con.execute("SELECT * FROM avl_hour WHERE endpoint_id = ? AND hour = ?", (e, h0 + h)).fetchone()
        assert tuple(want) == tuple(got), (want, got)
    print(f"  {len(rows):,} hourly rollups in {time.perf_counter() - started:.1f} s (spot-checked against samples)")
    started = time.perf_counter()
    spans, cursors = [], []
    for e in range(1, n + 1):
        downs = []
        if _weekly(e):
            downs = [(w * 10080 + 600, w * 10080 + 630) for w in range(minutes // 10080 + 1)]
        elif _flapper(e):
            downs = [(h * 60 + 17, h * 60 + 18) for h in range(minutes // 60)]
        downs = [(a, min(b, minutes)) for a, b in downs if a < minutes]
        cur = 0
        for a, b in downs:
            if a > cur:
                spans.append((e, t0 + cur * 60_000, t0 + a * 60_000, t0 + (a - 1) * 60_000, 1, a - cur))
            spans.append((e, t0 + a * 60_000, t0 + b * 60_000, t0 + (b - 1) * 60_000, 0, b - a))
            cur = b
        last = minutes - 1
        if cur < minutes:  # the open span: coverage runs to last sample + 2 × interval
            spans.append((e, t0 + cur * 60_000, t0 + (last + 2) * 60_000, t0 + last * 60_000, 1, minutes - cur))
        else:  # ends down: fix the last (open) span's end
            s = spans[-1]
            spans[-1] = (s[0], s[1], t0 + (last + 2) * 60_000, s[3], s[4], s[5])
        open_span = spans[-1]
        cursors.append((open_span[3], open_span[4], open_span[1], open_span[2], e))
    con.executemany("INSERT INTO avl_span VALUES (?, ?, ?, ?, ?, ?)", spans)
    con.executemany(
        "UPDATE avl_endpoint SET last_ms = ?, last_up = ?, span_start_ms = ?, span_end_ms = ? WHERE id = ?", cursors
    )
    con.executemany(
        "INSERT INTO avl_round (t_ms, finished_ms, interval_s, host, n_samples, n_up, n_down, n_unknown) "
        "VALUES (?, ?, 60, 'bench', ?, ?, 0, 0)",
        [(t0 + m * 60_000, t0 + m * 60_000 + 2000, n, n) for m in range(minutes)],
    )
    con.commit()
    con.execute("ANALYZE")
    con.close()
    print(f"  {len(spans):,} spans, cursors and {minutes:,} heartbeat rows in {time.perf_counter() - started:.1f} s")


def bench_query(n: int, days: int, workdir: Path) -> float:
    db = workdir / "history.db"
    end = datetime(2026, 3, 31, tzinfo=UTC)
    print(f"query: generating {n} endpoints × {days} days × 1 sample/min into {db}")
    generate(db, n, days, end)
    print(f"  database size {db.stat().st_size / 1e9:.2f} GB")
    engine = open_store(f"sqlite:///{db}")
    start = end - timedelta(days=30)
    weekly = MaintenanceWindow(days=[WEEKDAYS[6]], at=datetime(2000, 1, 1, 2, 0).time(), duration_min=120, tz="UTC")
    w = (to_ms(start), to_ms(end))
    maintenance = {f"sys{e}/ep": weekly.intervals(w) for e in range(1, n + 1) if e % 10 == 3}
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        stats = window_stats(engine, None, start, end, maintenance)
        beat = heartbeat(engine, start, end)
        best = min(best, time.perf_counter() - began)
    engine.dispose()
    weekly_down = stats["sys10/ep"]
    flapper = stats["sys1/ep"]
    steady = stats["sys2/ep"]
    print(
        f"  30-day SLA over {len(stats)} endpoints ({n * days * 1440:,} samples behind them): best of 3 "
        f"{best:.2f} s (target < 5 s)"
    )
    print(
        f"  check: sys2 {steady.lower_percent} % / sys10 {weekly_down.lower_percent} % with "
        f"{weekly_down.outage_count} outages / sys1 {flapper.lower_percent} % with {flapper.outage_count} outages; "
        f"p95 of sys2 in {steady.p95_bounds()} ms; heartbeat {beat.coverage_percent:.2f} %"
    )
    db.unlink()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--skip", choices=["round", "query"], action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hcscan-avl-bench-") as tmp:
        results = {}
        if "round" not in args.skip:
            results["round_s"] = bench_round(args.endpoints, Path(tmp))
        if "query" not in args.skip:
            results["query_s"] = bench_query(args.endpoints, args.days, Path(tmp))
    ok = results.get("round_s", 0) < 10 and results.get("query_s", 0) < 5
    print("result:", ", ".join(f"{k} = {v:.2f}" for k, v in results.items()), "— OK" if ok else "— TOO SLOW")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()

"""Kill the scanner at random points of its runs, many times, two at once on one SQLite store.

After every kill the store must open; every run is `complete` or (once the next scan on this host has looked)
`interrupted`; a complete run holds exactly its findings, an interrupted one none; no finding is duplicated
and no fingerprint is lost. Two scanners write concurrently, so database locks are met (and retried) too.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scanner.store.db import open_store
from tests.helpers import make_workspace, system

pytestmark = [pytest.mark.slow]

N_SYSTEMS = 120
CONTROLS_PER_SYSTEM = 7  # TLS-01..07 on an https endpoint
KILLS = 30
MIN_KILLS = 12  # a slow machine may spend its budget before 30; fewer than this tests too little
BUDGET_S = 150.0  # wall time for the kill rounds, well inside the test timeout on a slow machine
PARALLEL = 2
SEED = int(os.environ.get("HCSCAN_CRASH_SEED", "8"))


def _closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once: scans are quick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scan(root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "scanner", "scan", "--config", "config.yaml", "--family", "tls", "--format", "json"],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill_round(procs: list[subprocess.Popen[bytes]], kill_at: list[float], t0: float) -> tuple[int, list[float]]:
    """SIGKILL each process at its time (seconds after t0) unless it ended first.

    Returns how many were killed while running and how long the others took.
    """
    pending = dict(zip(procs, kill_at, strict=True))
    ended: list[float] = []
    kills = 0
    while pending:
        now = time.monotonic() - t0
        for proc, at in list(pending.items()):
            if proc.poll() is not None:
                ended.append(now)
                del pending[proc]
            elif now >= at:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                del pending[proc]
        time.sleep(0.005)
    return kills, ended


def _check_store(db: Path, expected_per_run: int) -> dict[str, int]:
    open_store(f"sqlite:///{db}").dispose()  # the store always opens (and migrates if it must)
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        runs = con.execute("SELECT id, status, n_findings FROM scan_run").fetchall()
        statuses = {status for _, status, _ in runs}
        assert statuses <= {"complete", "interrupted", "running"}, statuses
        complete = [r for r in runs if r[1] == "complete"]
        for run_id, status, n in runs:
            rows = con.execute("SELECT COUNT(*) FROM finding WHERE run_id = ?", (run_id,)).fetchone()[0]
            if status != "complete":
                assert rows == 0, f"run {run_id} ({status}) has {rows} findings: half a run was stored"
            else:
                assert n == expected_per_run, f"complete run {run_id} counted {n} findings"
                assert rows <= n
        dupes = con.execute(
            "SELECT run_id, fingerprint, COUNT(*) FROM finding GROUP BY run_id, fingerprint HAVING COUNT(*) > 1"
        ).fetchall()
        assert not dupes, f"duplicated findings: {dupes[:5]}"
        if complete:
            states = con.execute("SELECT COUNT(*), COUNT(DISTINCT fingerprint) FROM finding_state").fetchone()
            assert states[0] == states[1] == expected_per_run, f"fingerprints: {states}, expected {expected_per_run}"
            # Every fingerprint was last judged by a run that completed: nothing points at a lost run.
            orphans = con.execute(
                "SELECT COUNT(*) FROM finding_state s LEFT JOIN scan_run r ON r.id = s.last_run_id "
                "WHERE r.status IS NOT 'complete'"
            ).fetchone()[0]
            assert orphans == 0
        return {"runs": len(runs), "complete": len(complete)}
    finally:
        con.close()


def test_killed_at_random_points_nothing_is_lost(tmp_path: Path) -> None:
    port = _closed_port()
    systems = [system(f"sys-{i:03d}", "127.0.0.1", port, "https") for i in range(N_SYSTEMS)]
    make_workspace(tmp_path, systems, extra_config={"politeness": {"timeout_s": 1}})
    db = tmp_path / "hcscan.db"
    expected = N_SYSTEMS * CONTROLS_PER_SYSTEM

    # One clean run first: when its run row appears (imports and loading are done) and when it ends, so the
    # kill points fall inside runs: probing, judging and the final write transaction.
    started = time.monotonic()
    first = _scan(tmp_path)
    row_at = None
    while first.poll() is None:
        if row_at is None and db.exists():
            with sqlite3.connect(db) as con, contextlib.suppress(sqlite3.Error):
                if con.execute("SELECT COUNT(*) FROM scan_run").fetchone()[0]:
                    row_at = time.monotonic() - started
        time.sleep(0.01)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 1, err.decode()  # every endpoint refused: all error, exit 1
    full = time.monotonic() - started

    rng = random.Random(SEED)
    kills = 0
    low, high = max(0.0, (row_at or full / 2) - 0.2), full + 0.2
    row_share = low / high
    natural: list[float] = []  # how long recent unkilled runs took: the window follows this machine's pace
    deadline = time.monotonic() + BUDGET_S
    while kills < KILLS and time.monotonic() < deadline:
        t0 = time.monotonic()
        procs = [_scan(tmp_path) for _ in range(PARALLEL)]
        round_kills, ended = _kill_round(procs, [rng.uniform(low, high) for _ in procs], t0)
        kills += round_kills
        for proc in procs:
            proc.wait(timeout=120)
            if proc.returncode not in (1, -signal.SIGKILL):
                pytest.fail(f"scan exited {proc.returncode}: {proc.stderr.read().decode() if proc.stderr else ''}")
            if proc.stderr:
                proc.stderr.close()
        _check_store(db, expected)
        if ended:  # runs ended before their kill point: aim inside the runs as they go now (two at once)
            natural = (natural + ended)[-6:]
            high = sorted(natural)[len(natural) // 2] + 0.1
            low = high * row_share  # the run row appears at the same share of a run, slower or faster
    assert kills >= MIN_KILLS, f"only {kills} kills landed inside a run in {BUDGET_S}s (window {low:.1f}–{high:.1f}s)"
    window = (low, high)

    # The next scan on this host marks every run of a dead process `interrupted` and completes its own.
    last = _scan(tmp_path)
    _, err = last.communicate(timeout=120)
    assert last.returncode == 1, err.decode()
    counts = _check_store(db, expected)
    con = sqlite3.connect(db)
    try:
        left = con.execute("SELECT COUNT(*) FROM scan_run WHERE status = 'running'").fetchone()[0]
    finally:
        con.close()
    assert left == 0, f"{left} runs still `running` after the next scan"
    assert counts["complete"] >= 2
    print(
        f"\n{kills} kills in {window[0]:.1f}–{window[1]:.1f}s, {counts['runs']} runs ({counts['complete']} complete), "
        f"one run = {full:.1f}s"
    )

"""Kill the scanner at named points of its store writes, deterministically (hardening issue #8).

`HCSCAN_TEST_KILL_AT=<point>` (scanner/store/killpoints.py, test-only) makes a real `hcscan scan` SIGKILL itself:
after its run row is committed, after the first batch of finding rows, inside the final transaction just before
COMMIT, and just after COMMIT. After each kill the store must open and pass SQLite's integrity check; the killed
run is `complete` with every finding (after COMMIT) or holds nothing and is marked `interrupted` by the next scan;
no finding is duplicated or lost, and every fingerprint's lifecycle points at a verdict of a complete run.

Every run here rewrites all its finding rows (the target flips between a closed port and one that accepts and
hangs up, so every verdict changes), so the kill points fall inside real work, with existing lifecycle rows.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.store.db import open_store
from scanner.store.killpoints import ENV, POINTS
from tests.helpers import make_workspace, system

pytestmark = [pytest.mark.slow]

N_SYSTEMS = 80
CONTROLS_PER_SYSTEM = 7  # TLS-01..07 on an https endpoint: 560 findings, more than one insert batch (500)
EXPECTED = N_SYSTEMS * CONTROLS_PER_SYSTEM
REPEATS = 2  # per kill point: once killing a run towards each of the two targets


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hang_up_port() -> Iterator[int]:
    """A loopback port that accepts every connection and closes it at once (TLS and HTTP probes fail fast)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=256)
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def _scan(root: Path, port: int, kill_at: str | None) -> tuple[int, str, float]:
    make_workspace(
        root,
        [system(f"sys-{i:03d}", "127.0.0.1", port, "https") for i in range(N_SYSTEMS)],
        extra_config={"politeness": {"timeout_s": 1}},
    )
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if kill_at is not None:
        env[ENV] = kill_at
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", "--config", "config.yaml", "--family", "tls", "--format", "json"],
        cwd=root,
        env=env,
        capture_output=True,
        timeout=120,
    )
    return proc.returncode, proc.stderr.decode(errors="replace"), time.monotonic() - started


def _runs(db: Path) -> dict[int, tuple[str, int, str]]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT id, status, n_findings, status_detail FROM scan_run").fetchall()
    finally:
        con.close()
    return {int(i): (str(s), int(n), str(d)) for i, s, n, d in rows}


def _check_store(db: Path) -> None:
    """The invariants after any kill: opens, intact, whole runs only, nothing duplicated or lost."""
    open_store(f"sqlite:///{db}").dispose()  # the store always opens
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for run_id, status, n in con.execute("SELECT id, status, n_findings FROM scan_run").fetchall():
            rows = con.execute("SELECT COUNT(*) FROM finding WHERE run_id = ?", (run_id,)).fetchone()[0]
            aggs, judged, systems = con.execute(
                "SELECT COUNT(*), SUM(n_pass + n_fail + n_error + n_waived + n_not_applicable), MAX(n_systems)"
                " FROM run_family_agg WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if status == "complete":  # one region, one family (TLS): one aggregate covering every verdict
                assert (n, rows, aggs, judged, systems) == (EXPECTED, EXPECTED, 1, EXPECTED, N_SYSTEMS), run_id
            else:
                assert (rows, aggs) == (0, 0), f"run {run_id} ({status}) holds {rows} findings: half a run stored"
        dupes = con.execute(
            "SELECT run_id, fingerprint, COUNT(*) FROM finding GROUP BY run_id, fingerprint HAVING COUNT(*) > 1"
        ).fetchall()
        assert not dupes, f"duplicated findings: {dupes[:5]}"
        states = con.execute("SELECT COUNT(*), COUNT(DISTINCT fingerprint) FROM finding_state").fetchone()
        assert tuple(states) == (EXPECTED, EXPECTED), f"fingerprints: {states}"
        # Every fingerprint's state is the newest complete run's verdict, and points at that run's finding row.
        newest = con.execute("SELECT MAX(id) FROM scan_run WHERE status = 'complete'").fetchone()[0]
        off = con.execute(
            "SELECT COUNT(*) FROM finding_state s LEFT JOIN finding f ON f.id = s.finding_id "
            "WHERE s.last_run_id != ? OR f.run_id != ? OR f.status != s.status OR f.fingerprint != s.fingerprint",
            (newest, newest),
        ).fetchone()[0]
        assert off == 0, f"{off} fingerprints do not show the newest complete run's verdict"
    finally:
        con.close()


def test_killed_at_every_named_point_the_store_stays_whole(tmp_path: Path, hang_up_port: int) -> None:
    db = tmp_path / "hcscan.db"
    targets = (_closed_port(), hang_up_port)
    code, err, _ = _scan(tmp_path, targets[0], None)
    assert code == 1, err  # every endpoint fails or errors: exit 1
    _check_store(db)

    timings: dict[str, list[float]] = {p: [] for p in POINTS}
    stored = 0  # the target of the newest complete run: every scan looks at the other one, so all verdicts change
    for repeat in range(REPEATS):
        for point in POINTS:
            before = set(_runs(db))
            code, err, elapsed = _scan(tmp_path, targets[1 - stored], point)
            assert code == -signal.SIGKILL, f"{point}: the scan was not killed (exit {code}): {err[-2000:]}"
            timings[point].append(elapsed)
            (killed,) = set(_runs(db)) - before
            status, _, _ = _runs(db)[killed]
            assert status == ("complete" if point == "after_commit" else "running"), (point, status)
            if status == "complete":
                stored = 1 - stored
            _check_store(db)

            # The next scan on this host marks the dead process's run interrupted and completes its own.
            code, err, _ = _scan(tmp_path, targets[1 - stored], None)
            stored = 1 - stored
            assert code == 1, f"recovery after {point} (repeat {repeat}): {err[-2000:]}"
            runs = _runs(db)
            if point == "after_commit":
                assert runs[killed][0] == "complete"
            else:
                assert runs[killed][0] == "interrupted", (point, runs[killed])
                assert "ended before the run completed" in runs[killed][2]
            assert all(status != "running" for status, _, _ in runs.values()), runs
            _check_store(db)
    summary = ", ".join(f"{p} {min(t):.1f}–{max(t):.1f}s" for p, t in timings.items())
    print(f"\n{len(POINTS)} kill points × {REPEATS}: {len(_runs(db))} runs; time to the kill: {summary}")

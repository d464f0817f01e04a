"""The agent as a real process: jobs fire on a fast schedule, survive kill -9, stop within the SIGTERM bound,
and two agents serving one region on one PostgreSQL run every slot's scan exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest

from tests.agent.conftest import AgentProcess, SwitchableEndpoint, agent_workspace, query, wait_until
from tests.postgres import PostgresCluster

EVERY_2S = "*/2 * * * * *"
DAILY = "0 0 * * *"  # with a 2-day grace, the last midnight is always a missed slot to catch up


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _url(config: Path) -> str:
    return f"sqlite:///{config.parent / 'hcscan.db'}"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_jobs_fire_on_a_fast_schedule_and_status_shows_them(
    tmp_path: Path, agents: Callable[..., AgentProcess]
) -> None:
    config = agent_workspace(
        tmp_path, _closed_port(), [{"id": "tls-2s", "cron": EVERY_2S, "scope": {"families": ["tls"]}}]
    )
    agent = agents(config)
    agent.wait_event("agent.started")
    url = _url(config)
    wait_until(lambda: len(query(url, "select id from scan_run where status='complete'")) >= 3, 15, "three runs")
    rss = _rss_mb(agent.pid)
    started = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.wait(10) == 0
    assert time.monotonic() - started < 5
    assert rss <= 150, f"idle agent RSS {rss:.0f} MB"

    rows = query(
        url,
        "select s.slot_start, s.state, r.status, r.agent_id from job_slot s join scan_run r on r.id = s.run_id "
        "order by s.slot_start",
    )
    assert len(rows) >= 3
    assert all(
        state == "done" and status == "complete" and agent_id == "agent-1" for _, state, status, agent_id in rows
    )
    starts = [datetime.fromisoformat(str(r[0])) for r in rows]
    assert all(b - a == timedelta(seconds=2) for a, b in pairwise(starts[1:]))
    n_runs = query(url, "select count(*) from scan_run")[0][0]
    assert n_runs == len(rows)  # no run without a slot

    status = subprocess.run(
        [sys.executable, "-m", "scanner", "agent", "status", "--config", str(config), "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    (job,) = json.loads(status.stdout)
    assert (job["job_id"], job["scope"], job["state"], job["run_status"]) == (
        "tls-2s",
        "region:testregion",
        "done",
        "complete",
    )
    assert job["next_run"] is not None


@pytest.mark.slow
def test_kill_9_mid_scan_then_restart_leaves_an_interrupted_run_and_a_clean_next_run(
    tmp_path: Path, agents: Callable[..., AgentProcess], endpoint: SwitchableEndpoint
) -> None:
    config = agent_workspace(
        tmp_path, endpoint.port, [{"id": "nightly", "cron": DAILY}], agent={"catchup_grace_s": 2 * 86400}, timeout_s=60
    )
    url = _url(config)
    first = agents(config, name="first")
    first.wait_event("slot.claimed")
    wait_until(lambda: query(url, "select status from scan_run") == [("running",)], 15, "the run to start")
    wait_until(lambda: endpoint.accepted > 0, 10, "the scan to reach the endpoint")
    first.proc.kill()  # SIGKILL: no chance to clean up
    first.wait(10)
    assert query(url, "select status from scan_run") == [("running",)]
    assert query(url, "select state from job_slot") == [("running",)]

    endpoint.release()  # the target answers (by closing) from now on, so the catch-up finishes quickly
    second = agents(config, "--once", name="second")
    assert second.wait(30) == 0
    runs = query(url, "select id, status, status_detail from scan_run order by id")
    assert [(r[0], r[1]) for r in runs] == [(1, "interrupted"), (2, "complete")]
    assert "ended before the run completed" in runs[0][2]
    (slot,) = query(url, "select state, run_id, takeovers from job_slot")
    assert slot == ("done", 2, 1)  # the same slot, taken over from the dead holder and completed once
    recovered = second.wait_event("agent.recovered")
    assert recovered["interrupted_runs"] == [1]


@pytest.mark.slow
def test_sigterm_stops_within_the_bound_and_marks_the_run_interrupted(
    tmp_path: Path, agents: Callable[..., AgentProcess], endpoint: SwitchableEndpoint
) -> None:
    bound = 1.5
    config = agent_workspace(
        tmp_path,
        endpoint.port,
        [{"id": "nightly", "cron": DAILY}],
        agent={"catchup_grace_s": 2 * 86400, "shutdown_grace_s": bound},
        timeout_s=60,
    )
    url = _url(config)
    agent = agents(config)
    wait_until(lambda: query(url, "select status from scan_run") == [("running",)], 15, "the run to start")
    wait_until(lambda: endpoint.accepted > 0, 10, "the scan to reach the endpoint")
    started = time.monotonic()
    agent.signal(signal.SIGTERM)
    assert agent.wait(bound + 10) == 0
    elapsed = time.monotonic() - started
    assert bound <= elapsed < bound + 3, elapsed
    (run,) = query(url, "select status, status_detail from scan_run")
    assert run[0] == "interrupted" and "stopped (signal)" in run[1]
    assert query(url, "select state from job_slot") == [("interrupted",)]
    assert agent.wait_event("agent.stopped")["clean"] is False


@pytest.mark.slow
def test_once_runs_due_jobs_once_and_then_nothing_is_due(tmp_path: Path, agents: Callable[..., AgentProcess]) -> None:
    schedules = [{"id": "nightly", "cron": DAILY}, {"id": "availability", "kind": "sample", "cron": "* * * * *"}]
    config = agent_workspace(tmp_path, _closed_port(), schedules, agent={"catchup_grace_s": 2 * 86400})
    url = _url(config)
    assert agents(config, "--once", name="first").wait(30) == 0
    assert query(url, "select status from scan_run") == [("complete",)]
    (sample,) = query(url, "select state, detail from job_slot where job_id='availability'")
    assert sample[0] == "done" and sample[1].startswith("round #1: 0 up, 1 down"), sample
    assert agents(config, "--once", name="second").wait(30) == 0
    assert query(url, "select count(*) from scan_run") == [(1,)]  # the slot was done; nothing ran twice


@pytest.mark.slow
@pytest.mark.needs_postgres
def test_two_agents_for_one_region_run_each_slot_exactly_once(
    tmp_path: Path, agents: Callable[..., AgentProcess], postgres_cluster: PostgresCluster
) -> None:
    url = postgres_cluster.new_database()
    port = _closed_port()
    schedules = [
        {"id": "tls-2s", "cron": EVERY_2S, "scope": {"regions": ["testregion"], "families": ["tls"]}},
        {"id": "report-4s", "kind": "report", "cron": "*/4 * * * * *"},
    ]
    procs = []
    for name in ("agent-a", "agent-b"):
        root = tmp_path / name
        config = agent_workspace(root, port, schedules, store_url=url, agent={"id": name, "regions": ["testregion"]})
        procs.append(agents(config, name=name))
    for p in procs:
        p.wait_event("agent.started", timeout=30)
    time.sleep(9)  # several periods of both jobs
    for p in procs:
        p.signal(signal.SIGTERM)
    for p in procs:
        assert p.wait(15) == 0

    scan_slots = query(
        url,
        "select s.slot_start, s.state, s.agent_id, s.run_id from job_slot s where s.job_id='tls-2s' order by 1",
    )
    runs = query(url, "select id, status, agent_id from scan_run")
    done = [s for s in scan_slots if s[1] == "done"]
    assert len(done) >= 4, scan_slots
    # A slot is done once, or skipped because the job's previous slot was still running (never overlapping).
    assert {state for _, state, _, _ in scan_slots} <= {"done", "skipped"}, scan_slots
    assert all((state == "done") == (run_id is not None) for _, state, _, run_id in scan_slots), scan_slots
    # Every scan that ran belongs to exactly one slot, and every done slot has exactly one complete run.
    runs_per_slot = Counter(run_id for *_, run_id in done)
    assert all(n == 1 for n in runs_per_slot.values()), runs_per_slot
    assert sorted(r[0] for r in runs) == sorted(runs_per_slot), (runs, scan_slots)
    assert all(status == "complete" for _, status, _ in runs)
    # No period was lost between the first and the last slot: both agents raced for each, one won.
    starts = [datetime.fromisoformat(str(s[0])) for s in scan_slots]
    assert all(b - a == timedelta(seconds=2) for a, b in pairwise(starts)), starts
    report_slots = query(url, "select slot_start, state, detail from job_slot where job_id='report-4s' order by 1")
    assert len(report_slots) >= 2
    # Rendering may outlast the 4 s period on a busy machine: the next slot is then skipped, never run alongside.
    assert any(state == "done" for _, state, _ in report_slots), report_slots
    for _, state, detail in report_slots:
        assert state == "done" or (state == "skipped" and "is still running" in detail), report_slots
    claimed_by = Counter(agent_id for _, _, agent_id, _ in scan_slots)
    print(f"slots per agent: {dict(claimed_by)}; report slots: {len(report_slots)}")

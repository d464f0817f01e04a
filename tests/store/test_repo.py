"""The store: atomic runs, finding lifecycle across runs, interrupted runs, migrations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from scanner.models import Status
from scanner.results import FindingRecord, RunMeta
from scanner.store import queries, repo
from scanner.store.db import known_heads, open_store

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def meta(pid: int = 1, host: str = "scanner-host") -> RunMeta:
    return RunMeta("0.1.0", "c" * 64, "i" * 64, "f" * 64, {}, ["r1"], host, pid)


def rec(status: Status, control: str = "TLS-01", system: str = "s1") -> FindingRecord:
    return FindingRecord(
        control, "tls", "high", "r1", system, f"{system}/web", "critical", status, f"{status}", {"x": 1}
    )


def run_once(engine: Engine, records: list[FindingRecord], at: datetime) -> dict[str, int]:
    run_id = repo.start_run(engine, meta(), at)
    return repo.complete_run(engine, run_id, records, at + timedelta(minutes=1)).changes


def test_lifecycle_new_unchanged_fixed_regressed(engine: Engine) -> None:
    day = timedelta(days=1)
    assert run_once(engine, [rec(Status.FAIL), rec(Status.PASS, "TLS-02")], T0) == {"new": 2}  # first sightings
    assert run_once(engine, [rec(Status.FAIL), rec(Status.PASS, "TLS-02")], T0 + day) == {"unchanged": 2}
    assert run_once(engine, [rec(Status.PASS), rec(Status.PASS, "TLS-02")], T0 + 2 * day) == {
        "fixed": 1,
        "unchanged": 1,
    }
    # TLS-01 failed before (failing again); TLS-02 never did (a first failure).
    assert run_once(engine, [rec(Status.FAIL), rec(Status.FAIL, "TLS-02")], T0 + 3 * day) == {"regressed": 1, "new": 1}
    assert run_once(engine, [rec(Status.ERROR), rec(Status.ERROR, "TLS-02")], T0 + 4 * day) == {"unassessed": 2}
    assert run_once(engine, [rec(Status.FAIL), rec(Status.NOT_APPLICABLE, "TLS-02")], T0 + 5 * day) == {
        "confirmed": 1,
        "no_longer_applicable": 1,
    }
    state = {f.control_id: f for f in queries.latest_findings(engine, "r1")}
    assert state["TLS-01"].status == "fail" and state["TLS-01"].change == "confirmed"
    assert state["TLS-01"].first_seen_at == T0 + timedelta(minutes=1)
    assert state["TLS-01"].last_verified_at == T0 + 5 * day + timedelta(minutes=1)
    with engine.connect() as conn:
        reopened = conn.execute(
            text("select times_reopened, resolved_at from finding_state where control_id='TLS-01'")
        ).one()
    assert tuple(reopened) == (1, None)


def test_a_failed_write_leaves_no_half_run(engine: Engine) -> None:
    run_id = repo.start_run(engine, meta(), T0)
    bad = FindingRecord("TLS-01", "tls", "high", "r1", "s1", "s1/web", "critical", Status.FAIL, "m", {"x": object()})
    with pytest.raises(Exception):  # noqa: B017 - evidence that is not JSON makes the insert fail
        repo.complete_run(engine, run_id, [rec(Status.PASS, "TLS-02"), bad], T0)
    assert queries.count_findings(engine) == 0
    (run,) = queries.runs(engine)
    assert run.status == "running"
    repo.end_run(engine, run_id, repo.INTERRUPTED, "write failed")
    assert queries.runs(engine)[0].status == "interrupted"


def test_runs_of_dead_processes_are_marked_interrupted(engine: Engine) -> None:
    dead = repo.start_run(engine, meta(pid=111), T0)
    alive = repo.start_run(engine, meta(pid=222), T0)
    elsewhere = repo.start_run(engine, meta(pid=111, host="other-host"), T0)
    marked = repo.mark_interrupted_runs(engine, "scanner-host", alive=lambda pid: pid == 222)
    assert marked == [dead]
    status = {r.id: r.status for r in queries.runs(engine)}
    assert status == {dead: "interrupted", alive: "running", elsewhere: "running"}


def test_sqlite_pragmas_on_every_connection(tmp_path: Path) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'pragmas.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("pragma journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("pragma foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("pragma busy_timeout").scalar() == 30000
        assert conn.exec_driver_sql("pragma synchronous").scalar() == 1  # NORMAL


def test_migrations_match_the_models(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlmodel import SQLModel

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []


def test_opening_twice_is_idempotent(store_url: str) -> None:
    open_store(store_url).dispose()
    engine = open_store(store_url)
    with engine.connect() as conn:
        heads = set(conn.exec_driver_sql("select version_num from alembic_version").scalars())
    engine.dispose()
    assert heads == known_heads() == {"0007"}  # one linear history after the merge revision


def test_a_run_interrupted_by_another_process_is_not_completed(store_url: str) -> None:
    """If the run was marked interrupted meanwhile (killed agent's slot taken over), its findings are not stored."""
    engine = open_store(store_url)
    run_id = repo.start_run(engine, meta(), T0)
    repo.end_run(engine, run_id, repo.INTERRUPTED, "taken over")
    with pytest.raises(repo.RunNoLongerRunning):
        repo.complete_run(engine, run_id, [rec(Status.PASS)], T0)
    assert queries.count_findings(engine) == 0
    assert queries.runs(engine)[0].status == "interrupted"
    repo.end_run(engine, run_id, repo.INTERRUPTED, "again")  # a closed run is never reopened or overwritten
    engine.dispose()

"""Completing and closing one run at the same time (hardening issue #8), on a real SQLite file and on PostgreSQL.

Two agents on one store, or an agent and `hcscan` marking the runs of dead processes `interrupted`, may reach the
same run together. Whoever's conditional UPDATE lands first wins; every other contender sees a run that is no
longer `running` and changes nothing. The run's findings are stored exactly once, or (interrupted) not at all.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from scanner.models import Status
from scanner.results import FindingRecord, RunMeta, RunSummary
from scanner.store import repo
from scanner.store.retry import retry_locked

T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOST = "race-host"
N_SYSTEMS = 60
CONTROLS = ("TLS-01", "TLS-02", "TLS-03", "TLS-04", "TLS-05")  # 300 findings per run
ROUNDS = 12
STATUSES = (Status.PASS, Status.FAIL, Status.ERROR, Status.NOT_APPLICABLE, Status.WAIVED)


def _meta() -> RunMeta:
    return RunMeta("0.1.0", "c" * 64, "i" * 64, "f" * 64, {}, ["r1"], HOST, 4242)


def _records(tag: str) -> list[FindingRecord]:
    return [
        FindingRecord(
            control, "tls", "high", "r1", f"{tag}-{i:03d}", f"{tag}-{i:03d}/web", "high",
            STATUSES[(i + j) % len(STATUSES)], f"{control} on {tag}-{i:03d}", {"i": i},
        )
        for i in range(N_SYSTEMS)
        for j, control in enumerate(CONTROLS)
    ]  # fmt: skip


def _attempt(engine: Engine, kind: str, run_id: int, records: list[FindingRecord]) -> bool:
    """One contender, as the app calls it (whole transaction retried on a transient lock); True if it won."""
    if kind == "complete":
        try:
            summary: RunSummary = retry_locked(lambda: repo.complete_run(engine, run_id, records, T0))
        except repo.RunNoLongerRunning:
            return False
        return summary.status == repo.COMPLETE
    if kind == "end":
        return retry_locked(lambda: repo.end_run(engine, run_id, repo.INTERRUPTED, "stopped by the race test"))
    if kind == "mark":
        return run_id in retry_locked(lambda: repo.mark_interrupted_runs(engine, HOST, alive=lambda _pid: False))
    raise AssertionError(kind)


def _in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def body() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the test thread
            out["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


def _check_run(engine: Engine, run_id: int, records: list[FindingRecord], completed: bool) -> None:
    """Complete: every finding, state and aggregate exactly once. Interrupted: none of them."""
    fingerprints = sorted({r.fingerprint for r in records})
    with engine.connect() as conn:
        status = conn.execute(text("select status from scan_run where id = :r"), {"r": run_id}).scalar_one()
        rows, distinct = conn.execute(
            text("select count(*), count(distinct fingerprint) from finding where run_id = :r"), {"r": run_id}
        ).one()
        states = conn.execute(
            text("select count(*) from finding_state where last_run_id = :r"), {"r": run_id}
        ).scalar_one()
        aggs, judged = conn.execute(
            text("select count(*), coalesce(sum(n_pass + n_fail + n_error + n_waived + n_not_applicable), 0)"
                 " from run_family_agg where run_id = :r"),
            {"r": run_id},
        ).one()  # fmt: skip
    expected = len(fingerprints) if completed else 0
    assert status == (repo.COMPLETE if completed else repo.INTERRUPTED)
    assert (rows, distinct, states) == (expected, expected, expected), f"run {run_id} stored {rows} findings"
    assert (aggs, judged) == ((1, expected) if completed else (0, 0))  # one region, one family


def _contend(barrier: threading.Barrier, engine: Engine, kind: str, run_id: int, records: list[FindingRecord]) -> bool:
    barrier.wait(timeout=30)  # all contenders start together
    return _attempt(engine, kind, run_id, records)


CONTENDERS = {
    "two-completers": ("complete", "complete"),
    "completer-vs-end_run": ("complete", "end"),
    "completer-vs-mark_interrupted": ("complete", "mark"),
    "everyone": ("complete", "complete", "end", "mark"),
}


@pytest.mark.parametrize("contenders", list(CONTENDERS.values()), ids=list(CONTENDERS))
def test_exactly_one_contender_wins_and_findings_are_stored_once(engine: Engine, contenders: tuple[str, ...]) -> None:
    winners: Counter[str] = Counter()
    for n in range(ROUNDS):
        records = _records(f"r{n}")
        run_id = repo.start_run(engine, _meta(), T0 + timedelta(minutes=n))
        barrier = threading.Barrier(len(contenders))

        started = [
            (kind, *_in_thread(functools.partial(_contend, barrier, engine, kind, run_id, records)))
            for kind in contenders
        ]
        outcomes: list[tuple[str, bool]] = []
        for kind, thread, out in started:
            thread.join(timeout=120)
            assert not thread.is_alive(), f"{kind} hung"
            if "error" in out:
                raise out["error"]
            outcomes.append((kind, bool(out["value"])))
        won = [kind for kind, ok in outcomes if ok]
        assert len(won) == 1, f"round {n}: {outcomes}"
        winners[won[0]] += 1
        _check_run(engine, run_id, records, completed=won[0] == "complete")
    print(f"\n{engine.dialect.name} {'+'.join(contenders)}: winners over {ROUNDS} rounds: {dict(winners)}")


@contextmanager
def _paused_before(
    engine: Engine, statement_prefix: str
) -> Iterator[tuple[threading.Event, threading.Event, list[int]]]:
    """Hold the thread whose id is put in the list at the first statement starting with `statement_prefix`."""
    reached, release = threading.Event(), threading.Event()
    who: list[int] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if who and threading.get_ident() == who[0] and statement.lstrip().upper().startswith(statement_prefix):
            reached.set()
            release.wait(timeout=60)

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield reached, release, who
    finally:
        release.set()
        event.remove(engine, "before_cursor_execute", before)


@pytest.mark.parametrize("interrupter", ["end", "mark"])
def test_an_interrupter_waits_for_a_completion_in_progress_and_loses(engine: Engine, interrupter: str) -> None:
    """The completer holds its transaction open (inside, just before its last insert): the interrupter blocks,
    and once the run commits as complete it matches nothing — the complete run is never overwritten."""
    records = _records("held")
    run_id = repo.start_run(engine, _meta(), T0)
    with _paused_before(engine, "INSERT INTO RUN_FAMILY_AGG") as (reached, release, who):

        def complete() -> RunSummary:
            who.append(threading.get_ident())
            return repo.complete_run(engine, run_id, records, T0)

        completer, completed = _in_thread(complete)
        assert reached.wait(timeout=30), "the completer never reached its last insert"
        other, interrupted = _in_thread(lambda: _attempt(engine, interrupter, run_id, records))
        time.sleep(0.5)
        assert other.is_alive(), f"{interrupter} did not wait for the completion in progress: {interrupted}"
        release.set()
        completer.join(timeout=60)
        other.join(timeout=60)
    assert "error" not in completed and "error" not in interrupted, (completed, interrupted)
    assert completed["value"].status == repo.COMPLETE
    assert interrupted["value"] is False
    _check_run(engine, run_id, records, completed=True)


def test_a_completion_waits_for_an_interruption_in_progress_and_stores_nothing(engine: Engine) -> None:
    """An interrupter's UPDATE is in an open transaction: the completer blocks at its first statement, then
    finds the run interrupted, raises RunNoLongerRunning and leaves nothing of the run behind."""
    records = _records("late")
    run_id = repo.start_run(engine, _meta(), T0)
    with engine.connect() as conn:
        trans = conn.begin()
        result = conn.execute(
            text("update scan_run set status = 'interrupted' where id = :r and status = 'running'"), {"r": run_id}
        )
        assert result.rowcount == 1
        completer, completed = _in_thread(lambda: repo.complete_run(engine, run_id, records, T0))
        time.sleep(0.5)
        assert completer.is_alive(), f"the completer did not wait for the interruption in progress: {completed}"
        trans.commit()
    completer.join(timeout=60)
    assert isinstance(completed.get("error"), repo.RunNoLongerRunning), completed
    _check_run(engine, run_id, records, completed=False)


def test_two_runs_over_the_same_fingerprints_complete_one_after_the_other(engine: Engine) -> None:
    """Two runs (an agent and a manual scan) judging the same systems finish together: both complete, and the
    second one's lifecycle is computed from the first one's verdicts (no lost update, no duplicate state)."""
    failing = [r for r in _records("same") if r.status is Status.FAIL]
    passing = [
        FindingRecord(
            r.control_id, r.family, r.severity, r.region_id, r.system_id, r.endpoint_key, r.criticality,
            Status.PASS, "ok", {},
        )
        for r in failing
    ]  # fmt: skip
    ids = {name: repo.start_run(engine, _meta(), T0) for name in ("failing", "passing")}
    barrier = threading.Barrier(2)

    def finish(name: str, records: list[FindingRecord]) -> RunSummary:
        barrier.wait(timeout=30)
        return retry_locked(lambda: repo.complete_run(engine, ids[name], records, T0))

    threads = {name: _in_thread(functools.partial(finish, name, recs)) for name, recs in (("failing", failing), ("passing", passing))}  # fmt: skip
    summaries: dict[str, RunSummary] = {}
    for name, (thread, out) in threads.items():
        thread.join(timeout=120)
        assert "error" not in out, out
        summaries[name] = out["value"]
    n = len(failing)
    changes = {name: s.changes for name, s in summaries.items()}
    # Either order is fine; each run's labels follow from the other's verdicts.
    assert changes in (
        {"failing": {"new": n}, "passing": {"fixed": n}},  # failing first
        {"passing": {"new": n}, "failing": {"new": n}},  # passing first (a first sighting), then a first failure
    ), changes
    with engine.connect() as conn:
        states = conn.execute(text("select count(*), count(distinct last_run_id) from finding_state")).one()
        statuses = set(conn.execute(text("select status from scan_run")).scalars())
    assert tuple(states) == (n, 1) and statuses == {repo.COMPLETE}

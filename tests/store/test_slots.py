"""Slot claims and named locks: the cross-agent locks of the scheduled agent, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from scanner.results import RunMeta
from scanner.store import queries, repo, slots
from scanner.store.db import open_store
from scanner.store.locks import exclusive

SLOT = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)
LEASE = timedelta(minutes=5)
A = slots.Holder("agent-a", "host-a", 101)
B = slots.Holder("agent-b", "host-b", 202)


def test_a_slot_is_claimed_once(engine: Engine) -> None:
    first = slots.claim(engine, "nightly", "region:r1", SLOT, A, LEASE)
    assert first is not None
    assert slots.claim(engine, "nightly", "region:r1", SLOT, B, LEASE) is None
    assert slots.claim(engine, "nightly", "region:r1", SLOT, A, LEASE) is None  # not even twice by its holder
    # Another scope, job or time is another slot.
    assert slots.claim(engine, "nightly", "region:r2", SLOT, B, LEASE) is not None
    assert slots.claim(engine, "weekly", "region:r1", SLOT, B, LEASE) is not None
    assert slots.claim(engine, "nightly", "region:r1", SLOT + timedelta(days=1), B, LEASE) is not None


def test_racing_claimants_get_exactly_one_winner(engine: Engine) -> None:
    winners: list[int] = []
    barrier = threading.Barrier(8)

    def race(i: int) -> None:
        barrier.wait()
        got = slots.claim(engine, "nightly", "region:r1", SLOT, slots.Holder(f"agent-{i}", "h", i), LEASE)
        if got is not None:
            winners.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1
    (slot,) = slots.slots(engine)
    assert slot.agent_id == f"agent-{winners[0]}"


def test_an_expired_lease_is_taken_over_and_the_old_holder_notices(engine: Engine) -> None:
    slot_id = slots.claim(engine, "nightly", "region:r1", SLOT, A, timedelta(seconds=-1))
    assert slot_id is not None
    assert slots.claim(engine, "nightly", "region:r1", SLOT, B, LEASE) == slot_id
    assert not slots.renew(engine, slot_id, A, LEASE)
    assert not slots.finish(engine, slot_id, A, slots.DONE)
    assert slots.renew(engine, slot_id, B, LEASE)
    assert slots.finish(engine, slot_id, B, slots.DONE, "run #1")
    (view,) = slots.slots(engine)
    assert (view.state, view.agent_id, view.takeovers, view.detail) == (slots.DONE, "agent-b", 1, "run #1")


def test_a_live_lease_is_not_taken_over(engine: Engine) -> None:
    slot_id = slots.claim(engine, "nightly", "region:r1", SLOT, A, LEASE)
    assert slot_id is not None and slots.set_running(engine, slot_id, A)
    assert slots.claim(engine, "nightly", "region:r1", SLOT, B, LEASE) is None


def test_interrupted_slots_may_be_taken_over_finished_ones_never(engine: Engine) -> None:
    for state, scope in [(slots.INTERRUPTED, "r1"), (slots.DONE, "r2"), (slots.FAILED, "r3"), (slots.SKIPPED, "r4")]:
        slot_id = slots.claim(engine, "nightly", scope, SLOT, A, LEASE)
        assert slot_id is not None
        slots.finish(engine, slot_id, A, state)
    assert slots.claim(engine, "nightly", "r1", SLOT, B, LEASE) is not None
    for scope in ("r2", "r3", "r4"):
        assert slots.claim(engine, "nightly", scope, SLOT, B, LEASE) is None


def test_claims_of_dead_processes_on_this_host_are_released(engine: Engine) -> None:
    dead = slots.claim(engine, "nightly", "r1", SLOT, A, LEASE)
    alive = slots.claim(engine, "nightly", "r2", SLOT, slots.Holder("agent-a", "host-a", 102), LEASE)
    elsewhere = slots.claim(engine, "nightly", "r3", SLOT, B, LEASE)
    assert slots.release_dead_claims(engine, "host-a", alive=lambda pid: pid == 102) == [dead]
    state = {s.id: s.state for s in slots.slots(engine)}
    assert state == {dead: slots.INTERRUPTED, alive: slots.CLAIMED, elsewhere: slots.CLAIMED}
    assert slots.claim(engine, "nightly", "r1", SLOT, B, LEASE) == dead  # now free to take over


def test_interrupting_a_run_never_overwrites_a_completed_one(engine: Engine) -> None:
    meta = RunMeta("0.1.0", "c" * 64, "i" * 64, "f" * 64, {}, ["r1"], "h", 1, agent_id="agent-a")
    running = repo.start_run(engine, meta, SLOT)
    done = repo.start_run(engine, meta, SLOT)
    repo.complete_run(engine, done, [], SLOT)
    assert slots.interrupt_run(engine, running, "stopped")
    assert not slots.interrupt_run(engine, done, "stopped")
    assert {r.id: r.status for r in queries.runs(engine)} == {running: "interrupted", done: "complete"}


def test_an_earlier_slot_still_running_elsewhere_is_seen(engine: Engine) -> None:
    earlier = slots.claim(engine, "nightly", "r1", SLOT, B, LEASE)
    later = slots.claim(engine, "nightly", "r1", SLOT + timedelta(hours=1), A, LEASE)
    assert earlier is not None and later is not None
    seen = slots.earlier_active(engine, later, A)
    assert seen is not None and seen.id == earlier
    slots.finish(engine, earlier, B, slots.DONE)
    assert slots.earlier_active(engine, later, A) is None


def test_latest_slot_per_job_and_scope(engine: Engine) -> None:
    for hours in (0, 1, 2):
        sid = slots.claim(engine, "nightly", "r1", SLOT + timedelta(hours=hours), A, LEASE)
        assert sid is not None
        slots.finish(engine, sid, A, slots.DONE)
    slots.claim(engine, "nightly", "r2", SLOT, A, LEASE)
    latest = slots.latest_slots(engine)
    assert set(latest) == {("nightly", "r1"), ("nightly", "r2")}
    assert latest[("nightly", "r1")].slot_start == SLOT + timedelta(hours=2)
    assert latest[("nightly", "r2")].state == slots.CLAIMED


def test_a_named_lock_is_held_by_one_holder_at_a_time(engine: Engine) -> None:
    with exclusive(engine, "central-report", "a", LEASE) as got_a:
        assert got_a
        with exclusive(engine, "central-report", "b", LEASE) as got_b:
            assert not got_b
        with exclusive(engine, "other-lock", "b", LEASE) as got_other:
            assert got_other
    with exclusive(engine, "central-report", "b", LEASE) as got_b:
        assert got_b


def test_an_expired_lock_row_is_taken_over_on_sqlite(tmp_path: Path) -> None:
    # SQLite only: PostgreSQL's advisory locks end with their session, there is no row to expire.
    engine = open_store(f"sqlite:///{tmp_path / 'locks.db'}")
    with exclusive(engine, "central-report", "a", timedelta(seconds=-1)) as got_a:
        assert got_a
        with exclusive(engine, "central-report", "b", LEASE) as got_b:
            assert got_b

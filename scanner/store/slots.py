"""Scheduled slots claimed as rows: the cross-agent lock that makes every slot's scan run exactly once.

A claim is `INSERT … ON CONFLICT DO NOTHING` on UNIQUE(job_id, scope, slot_start): of several agents racing
for one slot exactly one inserts. The holder renews `lease_expires_at` while it works; a slot whose holder died
(lease expired) or was stopped (state `interrupted`) may be taken over by a single conditional UPDATE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col

from scanner.store.models import JobSlot, ScanRun
from scanner.store.repo import pid_alive

CLAIMED, RUNNING, DONE, FAILED, INTERRUPTED, SKIPPED = "claimed", "running", "done", "failed", "interrupted", "skipped"
ACTIVE = (CLAIMED, RUNNING)
_TAKEOVER_FROM = (CLAIMED, RUNNING, INTERRUPTED)


@dataclass(frozen=True)
class Holder:
    """Who claims: the agent's name plus where it runs, so a restarted agent can tell its dead claims apart."""

    agent_id: str
    host: str
    pid: int

    @property
    def key(self) -> str:
        return f"{self.agent_id}@{self.host}:{self.pid}"


@dataclass(frozen=True)
class SlotView:
    id: int
    job_id: str
    scope: str
    slot_start: datetime
    state: str
    holder: str
    agent_id: str
    claimed_at: datetime
    lease_expires_at: datetime
    finished_at: datetime | None
    run_id: int | None
    run_status: str | None
    takeovers: int
    detail: str


def _now() -> datetime:
    return datetime.now(UTC)


def _insert(engine: Engine) -> Any:
    name = engine.dialect.name
    if name == "postgresql":
        return postgresql.insert(JobSlot)
    if name == "sqlite":
        return sqlite.insert(JobSlot)
    raise RuntimeError(f"slot claims need INSERT … ON CONFLICT; unsupported database '{name}'")


def claim(
    engine: Engine, job_id: str, scope: str, slot_start: datetime, holder: Holder, lease: timedelta
) -> int | None:
    """Claim one slot; return its row id, or None when another agent has it (or it is finished)."""
    now = _now()
    values = {
        "job_id": job_id,
        "scope": scope,
        "slot_start": slot_start,
        "state": CLAIMED,
        "holder": holder.key,
        "agent_id": holder.agent_id,
        "host": holder.host,
        "pid": holder.pid,
        "claimed_at": now,
        "lease_expires_at": now + lease,
        "finished_at": None,
        "run_id": None,
        "takeovers": 0,
        "detail": "",
    }
    key = and_(col(JobSlot.job_id) == job_id, col(JobSlot.scope) == scope, col(JobSlot.slot_start) == slot_start)
    with Session(engine) as session, session.begin():
        stmt = (
            _insert(engine)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["job_id", "scope", "slot_start"])
            .returning(col(JobSlot.id))
        )
        inserted = session.execute(stmt).scalar_one_or_none()
        if inserted is not None:
            return int(inserted)
        # Taken: take it over only if its holder stopped renewing or left it interrupted — one UPDATE, atomic.
        taken = session.execute(
            update(JobSlot)
            .where(
                key,
                col(JobSlot.state).in_(_TAKEOVER_FROM),
                or_(col(JobSlot.state) == INTERRUPTED, col(JobSlot.lease_expires_at) < now),
            )
            .values(
                state=CLAIMED,
                holder=holder.key,
                agent_id=holder.agent_id,
                host=holder.host,
                pid=holder.pid,
                claimed_at=now,
                lease_expires_at=now + lease,
                finished_at=None,
                run_id=None,
                takeovers=col(JobSlot.takeovers) + 1,
                detail="taken over from a holder that stopped",
            )
            .returning(col(JobSlot.id))
        ).scalar_one_or_none()
        return None if taken is None else int(taken)


def earlier_active(engine: Engine, slot_id: int, holder: Holder) -> SlotView | None:
    """An earlier slot of the same job and scope still held (live lease) by another agent: we would overlap it."""
    now = _now()
    with Session(engine) as session:
        mine = session.get(JobSlot, slot_id)
        if mine is None:
            return None
        other = (
            session.execute(
                select(JobSlot)
                .where(
                    col(JobSlot.job_id) == mine.job_id,
                    col(JobSlot.scope) == mine.scope,
                    col(JobSlot.slot_start) < mine.slot_start,
                    col(JobSlot.state).in_(ACTIVE),
                    col(JobSlot.lease_expires_at) >= now,
                    col(JobSlot.holder) != holder.key,
                )
                .order_by(col(JobSlot.slot_start).desc())
                .limit(1)
            )
            .scalars()
            .first()
        )
        return None if other is None else _view(other, None)


def _mine(slot_id: int, holder: Holder) -> Any:
    return and_(col(JobSlot.id) == slot_id, col(JobSlot.holder) == holder.key, col(JobSlot.state).in_(ACTIVE))


def renew(engine: Engine, slot_id: int, holder: Holder, lease: timedelta) -> bool:
    """Extend the lease of a slot we still hold; False when it was taken from us."""
    with Session(engine) as session, session.begin():
        result = session.execute(update(JobSlot).where(_mine(slot_id, holder)).values(lease_expires_at=_now() + lease))
        return bool(result.rowcount)  # type: ignore[attr-defined]


def set_running(engine: Engine, slot_id: int, holder: Holder, run_id: int | None = None) -> bool:
    values: dict[str, Any] = {"state": RUNNING}
    if run_id is not None:
        values["run_id"] = run_id
    with Session(engine) as session, session.begin():
        result = session.execute(update(JobSlot).where(_mine(slot_id, holder)).values(**values))
        return bool(result.rowcount)  # type: ignore[attr-defined]


def finish(engine: Engine, slot_id: int, holder: Holder, state: str, detail: str = "") -> bool:
    """Close a slot we hold. Interrupted slots get an expired lease so another agent may take them over."""
    now = _now()
    values: dict[str, Any] = {"state": state, "finished_at": now, "detail": detail[:2000]}
    if state == INTERRUPTED:
        values["lease_expires_at"] = now
    with Session(engine) as session, session.begin():
        result = session.execute(update(JobSlot).where(_mine(slot_id, holder)).values(**values))
        return bool(result.rowcount)  # type: ignore[attr-defined]


def interrupt_run(engine: Engine, run_id: int, detail: str) -> bool:
    """Mark a run `interrupted` only if it is still `running` (a run that completed meanwhile stays complete)."""
    with Session(engine) as session, session.begin():
        result = session.execute(
            update(ScanRun)
            .where(col(ScanRun.id) == run_id, col(ScanRun.status) == "running")
            .values(status="interrupted", status_detail=detail[:2000], finished_at=_now())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def release_dead_claims(engine: Engine, host: str, alive: Callable[[int], bool] = pid_alive) -> list[int]:
    """Slots left claimed/running on this host by a process that no longer exists become `interrupted`."""
    now = _now()
    with Session(engine) as session, session.begin():
        rows = session.execute(
            select(JobSlot).where(col(JobSlot.host) == host, col(JobSlot.state).in_(ACTIVE))
        ).scalars()
        dead = [r.id for r in rows if r.id is not None and not alive(r.pid)]
        if dead:
            session.execute(
                update(JobSlot)
                .where(col(JobSlot.id).in_(dead), col(JobSlot.state).in_(ACTIVE))
                .values(
                    state=INTERRUPTED,
                    finished_at=now,
                    lease_expires_at=now,
                    detail="the agent holding this slot ended before it finished",
                )
            )
        return dead


def _view(slot: JobSlot, run_status: str | None) -> SlotView:
    assert slot.id is not None
    return SlotView(
        id=slot.id,
        job_id=slot.job_id,
        scope=slot.scope,
        slot_start=slot.slot_start,
        state=slot.state,
        holder=slot.holder,
        agent_id=slot.agent_id,
        claimed_at=slot.claimed_at,
        lease_expires_at=slot.lease_expires_at,
        finished_at=slot.finished_at,
        run_id=slot.run_id,
        run_status=run_status,
        takeovers=slot.takeovers,
        detail=slot.detail,
    )


def slots(engine: Engine, job_id: str | None = None) -> list[SlotView]:
    """Every slot (optionally of one job), oldest first, with its run's status."""
    stmt = select(JobSlot, col(ScanRun.status)).outerjoin(ScanRun, col(ScanRun.id) == col(JobSlot.run_id))
    if job_id is not None:
        stmt = stmt.where(col(JobSlot.job_id) == job_id)
    with Session(engine) as session:
        rows = session.execute(stmt.order_by(col(JobSlot.slot_start), col(JobSlot.scope))).all()
        return [_view(s, status) for s, status in rows]


def latest_slots(engine: Engine) -> dict[tuple[str, str], SlotView]:
    """The newest slot of every (job, scope), for `hcscan agent status`."""
    newest = (
        select(col(JobSlot.job_id), col(JobSlot.scope), func.max(col(JobSlot.slot_start)).label("latest"))
        .group_by(col(JobSlot.job_id), col(JobSlot.scope))
        .subquery()
    )
    stmt = (
        select(JobSlot, col(ScanRun.status))
        .join(
            newest,
            and_(
                col(JobSlot.job_id) == newest.c.job_id,
                col(JobSlot.scope) == newest.c.scope,
                col(JobSlot.slot_start) == newest.c.latest,
            ),
        )
        .outerjoin(ScanRun, col(ScanRun.id) == col(JobSlot.run_id))
    )
    with Session(engine) as session:
        return {(s.job_id, s.scope): _view(s, status) for s, status in session.execute(stmt).all()}

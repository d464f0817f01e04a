"""Named one-at-a-time locks for jobs such as the central report.

PostgreSQL: a session advisory lock on a dedicated connection — released by the server if the holder dies.
SQLite: a row in `agent_lock` with an expiry, taken over once expired (one process host, so a dead holder's
row simply times out).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, text, update
from sqlalchemy.dialects import sqlite
from sqlmodel import Session, col

from scanner.store.models import AgentLock


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for pg_advisory_lock from a lock name."""
    return int.from_bytes(hashlib.sha256(f"hcscan:{name}".encode()).digest()[:8], "big", signed=True)


@contextmanager
def exclusive(engine: Engine, name: str, holder: str, ttl: timedelta) -> Iterator[bool]:
    """Try to take the named lock without waiting; yield whether we hold it, release on exit."""
    if engine.dialect.name == "postgresql":
        with _advisory(engine, name) as got:
            yield got
        return
    with _lock_row(engine, name, holder, ttl) as got:
        yield got


@contextmanager
def _advisory(engine: Engine, name: str) -> Iterator[bool]:
    key = advisory_key(name)
    with engine.connect() as conn:
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


@contextmanager
def _lock_row(engine: Engine, name: str, holder: str, ttl: timedelta) -> Iterator[bool]:
    now = datetime.now(UTC)
    with Session(engine) as session, session.begin():
        inserted = session.execute(
            sqlite.insert(AgentLock)
            .values(name=name, holder=holder, acquired_at=now, expires_at=now + ttl)
            .on_conflict_do_nothing(index_elements=["name"])
        ).rowcount  # type: ignore[attr-defined]
        if not inserted:
            inserted = session.execute(
                update(AgentLock)
                .where(col(AgentLock.name) == name, col(AgentLock.expires_at) < now)
                .values(holder=holder, acquired_at=now, expires_at=now + ttl)
            ).rowcount  # type: ignore[attr-defined]
    got = bool(inserted)
    try:
        yield got
    finally:
        if got:
            with Session(engine) as session, session.begin():
                session.execute(delete(AgentLock).where(col(AgentLock.name) == name, col(AgentLock.holder) == holder))

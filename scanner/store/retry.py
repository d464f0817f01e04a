"""Retry a whole store transaction when the database is locked, with exponential backoff.

SQLite's busy_timeout waits for a lock, but a transaction that read first and then writes after another
writer committed gets SQLITE_BUSY at once (its snapshot is stale): only running the whole transaction
again helps. PostgreSQL's serialization failures and deadlocks are handled the same way.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

T = TypeVar("T")

_TRANSIENT = ("database is locked", "database table is locked", "deadlock detected", "could not serialize")


def is_transient(exc: BaseException) -> bool:
    """A lock or serialization conflict that a later attempt may not meet."""
    return isinstance(exc, OperationalError | DBAPIError) and any(t in str(exc).lower() for t in _TRANSIENT)


def retry_locked(
    fn: Callable[[], T],
    *,
    attempts: int = 8,
    first_delay_s: float = 0.05,
    max_delay_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `fn` (one whole transaction); on a transient lock error wait 50 ms, 100 ms … (with jitter) and retry."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except (OperationalError, DBAPIError) as exc:
            if attempt == attempts or not is_transient(exc):
                raise
        sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter, not cryptography)
        delay = min(delay * 2, max_delay_s)
    raise AssertionError("unreachable")  # the loop returns or raises

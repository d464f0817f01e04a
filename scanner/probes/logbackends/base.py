"""The log-backend interface: the newest event time, the oldest event time and a sample of recent events.

A backend answers with a `LogSnapshot` or raises `LogBackendError`; the audit-log probe turns the
error into a typed probe error (an `error` finding), never a pass. Snapshots carry no personal data
out of the backend: an event keeps only its time and which of user, subject and action it names.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from scanner.probes.base import ProbeContext, ProbeErrorReason

EVENT_FIELDS = ("time", "user", "subject", "action")


class LogBackendError(Exception):
    """The backend could not be read: missing file, unreachable server, bad credentials, garbage answer."""

    def __init__(self, reason: ProbeErrorReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class LogEvent:
    """One sampled access event, reduced to what LOG-03 judges."""

    time: dt.datetime | None
    user: bool
    subject: bool
    action: bool

    def missing(self) -> list[str]:
        present = {"time": self.time is not None, "user": self.user, "subject": self.subject, "action": self.action}
        return [name for name in EVENT_FIELDS if not present[name]]


@dataclass(frozen=True)
class LogSnapshot:
    """What a backend knows about one system's access log right now."""

    source: str  # file path or URL without query string: evidence, never a secret
    latest: dt.datetime | None
    oldest: dt.datetime | None
    sample: tuple[LogEvent, ...]  # newest first
    malformed: int = 0  # lines/records in the sampled window that could not be parsed
    year_inferred: bool = False  # timestamps without a year (RFC 3164): the year was inferred
    latest_in: str | None = None  # the file (current or rotated) that held the newest event; None: `source`
    oldest_in: str | None = None  # the file that held the oldest event; None: `source`
    unread: tuple[str, ...] = ()  # files that could not be read in full, each with why


class LogBackend(Protocol):
    """One kind of log backend. `snapshot` gets the validated spec and must raise only LogBackendError."""

    name: ClassVar[str]

    def snapshot(self, spec: Any, *, timeout_s: float, ctx: ProbeContext) -> LogSnapshot: ...


# -- helpers shared by backends --------------------------------------------------------------------


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO-8601 string or an epoch number (s, ms, µs or ns, told apart by size) as aware UTC; None if neither.

    Times without a zone are taken as UTC.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds <= 0:
            return None
        for scale in (1e9, 1e6, 1e3):
            if seconds > scale * 1e9:  # later than 2001 in a smaller unit: this is the unit
                seconds /= scale
                break
        try:
            return dt.datetime.fromtimestamp(seconds, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        text = value.strip()
        if len(text) < 10 or len(text) > 64:
            return None
        if text.isdigit():
            return parse_time(int(text))
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None
        return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
    return None


MAX_EMBEDDED_JSON = 65_536  # characters of a JSON-encoded string field a path may step into


def _embedded_json(text: str) -> Any:
    """A log line that is itself a JSON object (Loki, many shippers): parsed, so a path can step into it."""
    stripped = text.strip()
    if not stripped.startswith("{") or len(stripped) > MAX_EMBEDDED_JSON:
        return None
    try:
        return json.loads(stripped)
    except (ValueError, RecursionError):  # a hostile line may nest deeper than the parser's stack
        return None


def dig(data: Any, path: str) -> Any:
    """The value at a dotted path (`hits.hits`, `_source.user.name`, `entity.0.what`); None when absent.

    A step into a string that holds a JSON object parses it first (`1.user` reads the `user` of a Loki line).
    """
    if path == "":
        return data
    cur = data
    for part in path.split("."):
        if isinstance(cur, str):
            cur = _embedded_json(cur)
        if isinstance(cur, Mapping):
            cur = cur.get(part)
        elif isinstance(cur, Sequence) and not isinstance(cur, str) and part.isdigit():
            idx = int(part)
            cur = cur[idx] if idx < len(cur) else None
        else:
            return None
        if cur is None:
            return None
    return cur


def collect(data: Any, path: str) -> list[Any] | None:
    """The list at a dotted path where `*` stands for every element of a list (or value of an object), the
    lists found under each concatenated: `data.result.*.values` gathers the events of all Loki streams.
    None when the path leads nowhere or not to lists."""
    head, star, rest = path.partition("*")
    if not star:
        found = dig(data, path)
        return found if isinstance(found, list) else None
    parent = dig(data, head.rstrip("."))
    members = list(parent.values()) if isinstance(parent, Mapping) else parent
    if not isinstance(members, list):
        return None
    out: list[Any] = []
    for member in members:
        found = collect(member, rest.lstrip("."))
        if found is None:
            return None
        out.extend(found)
    return out


def has_value(value: Any) -> bool:
    """A field counts as present when it holds something other than null, '' or '-' (syslog's nil)."""
    if value is None:
        return False
    if isinstance(value, str):
        return value.strip() not in ("", "-")
    if isinstance(value, list | dict):
        return bool(value)
    return True


def newest_first(events: Sequence[LogEvent]) -> tuple[LogEvent, ...]:
    floor = dt.datetime.min.replace(tzinfo=dt.UTC)
    return tuple(sorted(events, key=lambda e: e.time or floor, reverse=True))

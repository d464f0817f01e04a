"""Availability in the store: writing a round of samples (with coverage spans and hourly rollups kept at insert
time), SLA figures over any window read from spans and rollups, and the `sla` fact provider for controls.

Coverage (issue 4): a sample at t covers [t, min(next sample, t + 2 × interval)). Consecutive samples of one
state whose coverage touches form one *span*; a down span is an outage; time outside every span is unknown.
Keeping spans at insert time means a 30-day SLA over a thousand endpoints reads a few thousand span rows and
720 rollup rows per endpoint instead of 43 million samples — and stays exact at any window edge.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import Connection, Engine, Table, bindparam, case, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import SQLModel

import scanner.store.models  # noqa: F401  (registers the avl_* tables on SQLModel.metadata)
from scanner.availability import (
    N_LATENCY_BUCKETS,
    Interval,
    SystemAvailability,
    clip,
    from_ms,
    latency_bucket,
    merge,
    overlap,
    parse_window,
    percentile_bounds,
    service_coverage,
    to_ms,
)
from scanner.config import AvailabilityConfig
from scanner.probes.availability import SLA_FACTS, SLA_KIND, SLA_PROTOCOLS, Sample
from scanner.probes.base import (
    SYSTEM_LEVEL,
    FactSpec,
    JSONValue,
    ProbeContext,
    ProbeError,
    ProbeErrorReason,
    ProbeFacts,
    ProbeOutcome,
    Target,
)

HOUR_MS = 3_600_000
MAX_OUTAGES_LISTED = 20
_CHUNK = 500
_BUCKETS = [f"b{i}" for i in range(N_LATENCY_BUCKETS)]

T_ENDPOINT: Table = SQLModel.metadata.tables["avl_endpoint"]
T_SAMPLE: Table = SQLModel.metadata.tables["avl_sample"]
T_SPAN: Table = SQLModel.metadata.tables["avl_span"]
T_HOUR: Table = SQLModel.metadata.tables["avl_hour"]
T_ROUND: Table = SQLModel.metadata.tables["avl_round"]


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -- writing a round -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundSummary:
    round_id: int
    t: datetime
    n_samples: int  # measurements stored
    n_up: int
    n_down: int
    n_unknown: int  # no measurement (hcscan's own failure): left as unknown time
    n_rejected: int  # not newer than the endpoint's newest sample: ignored


@dataclass
class _Cursor:
    id: int
    last_ms: int | None
    last_up: bool | None
    span_start_ms: int | None
    span_end_ms: int | None


def _cursors(conn: Connection, samples: Sequence[Sample], regions: Mapping[str, str]) -> dict[str, _Cursor]:
    keys = sorted({s.key for s in samples})
    found: dict[str, _Cursor] = {}
    c = T_ENDPOINT.c
    cols = (c.id, c.key, c.last_ms, c.last_up, c.span_start_ms, c.span_end_ms)

    def load(batch: Sequence[str]) -> None:
        for row in conn.execute(select(*cols).where(T_ENDPOINT.c.key.in_(batch))):
            found[row.key] = _Cursor(row.id, row.last_ms, row.last_up, row.span_start_ms, row.span_end_ms)

    for batch in _chunks(keys):
        load(batch)
    missing = [s for s in {s.key: s for s in samples}.values() if s.key not in found]
    if missing:
        conn.execute(
            insert(T_ENDPOINT),
            [
                {"key": s.key, "system_id": s.system_id, "region_id": regions.get(s.system_id, ""), "method": s.method}
                for s in missing
            ],
        )
        for batch in _chunks([s.key for s in missing]):
            load(batch)
    return found


def _upsert_hours(conn: Connection, rows: list[dict[str, int]]) -> None:
    if not rows:
        return
    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        raise NotImplementedError(f"availability rollups need SQLite or PostgreSQL, not {dialect}")
    ins = sqlite.insert(T_HOUR) if dialect == "sqlite" else postgresql.insert(T_HOUR)
    counted = ["n", "n_up", *_BUCKETS]
    stmt = ins.on_conflict_do_update(
        index_elements=[T_HOUR.c.endpoint_id, T_HOUR.c.hour],
        set_={c: T_HOUR.c[c] + ins.excluded[c] for c in counted},
    )
    conn.execute(stmt, rows)


def record_round(
    engine: Engine,
    t: datetime,
    interval_s: int,
    samples: Sequence[Sample],
    regions: Mapping[str, str],
    *,
    host: str = "",
    finished: datetime | None = None,
) -> RoundSummary:
    """Store one round taken at `t` in one transaction: samples, spans, hourly rollups, cursors and the heartbeat.

    regions: system id → region id (recorded with endpoints seen for the first time).
    """
    t_ms = to_ms(t)
    interval_ms = interval_s * 1000
    measured = sorted((s for s in samples if s.up is not None), key=lambda s: s.key)
    n_unknown = len(samples) - len(measured)
    sample_rows: list[dict[str, Any]] = []
    span_new: list[dict[str, Any]] = []
    span_extend: list[dict[str, Any]] = []
    span_close: list[dict[str, Any]] = []
    cursor_rows: list[dict[str, Any]] = []
    hour_rows: list[dict[str, int]] = []
    rejected = 0
    with engine.begin() as conn:
        cursors = _cursors(conn, measured, regions) if measured else {}
        for s in measured:
            cur = cursors[s.key]
            up = bool(s.up)
            if cur.last_ms is not None and t_ms <= cur.last_ms:
                rejected += 1  # not newer than what is stored: coverage is built in time order only
                continue
            end_ms = t_ms + 2 * interval_ms
            contiguous = cur.span_end_ms is not None and t_ms < cur.span_end_ms
            if contiguous and cur.last_up == up:
                span_extend.append({"b_ep": cur.id, "b_start": cur.span_start_ms, "b_end": end_ms, "b_last": t_ms})
                span_start = cur.span_start_ms
            else:
                if contiguous:  # state changed: the previous sample's coverage ends at this sample
                    span_close.append({"b_ep": cur.id, "b_start": cur.span_start_ms, "b_end": t_ms})
                span_new.append(
                    {
                        "endpoint_id": cur.id,
                        "start_ms": t_ms,
                        "end_ms": end_ms,
                        "last_ms": t_ms,
                        "up": up,
                        "n_samples": 1,
                    }
                )
                span_start = t_ms
            cursor_rows.append(
                {
                    "b_id": cur.id,
                    "b_last": t_ms,
                    "b_up": up,
                    "b_sstart": span_start,
                    "b_send": end_ms,
                    "b_method": s.method,
                }
            )
            sample_rows.append(
                {
                    "endpoint_id": cur.id,
                    "t_ms": t_ms,
                    "up": up,
                    "latency_ms": s.latency_ms,
                    "reason": s.reason,
                    "detail": s.detail,
                    "attempts": s.attempts,
                }
            )
            hour = {"endpoint_id": cur.id, "hour": t_ms // HOUR_MS, "n": 1, "n_up": int(up)}
            hour.update(dict.fromkeys(_BUCKETS, 0))
            if up and s.latency_ms is not None:
                hour[_BUCKETS[latency_bucket(s.latency_ms)]] = 1
            hour_rows.append(hour)
        if sample_rows:
            conn.execute(insert(T_SAMPLE), sample_rows)
        if span_close:
            conn.execute(
                update(T_SPAN)
                .where(T_SPAN.c.endpoint_id == bindparam("b_ep"), T_SPAN.c.start_ms == bindparam("b_start"))
                .values(end_ms=bindparam("b_end")),
                span_close,
            )
        if span_extend:
            conn.execute(
                update(T_SPAN)
                .where(T_SPAN.c.endpoint_id == bindparam("b_ep"), T_SPAN.c.start_ms == bindparam("b_start"))
                .values(end_ms=bindparam("b_end"), last_ms=bindparam("b_last"), n_samples=T_SPAN.c.n_samples + 1),
                span_extend,
            )
        if span_new:
            conn.execute(insert(T_SPAN), span_new)
        if cursor_rows:
            conn.execute(
                update(T_ENDPOINT)
                .where(T_ENDPOINT.c.id == bindparam("b_id"))
                .values(
                    last_ms=bindparam("b_last"),
                    last_up=bindparam("b_up"),
                    span_start_ms=bindparam("b_sstart"),
                    span_end_ms=bindparam("b_send"),
                    method=bindparam("b_method"),
                ),
                cursor_rows,
            )
        _upsert_hours(conn, hour_rows)
        n_up = sum(1 for r in sample_rows if r["up"])
        round_id = conn.execute(
            insert(T_ROUND)
            .values(
                t_ms=t_ms,
                finished_ms=to_ms(finished or datetime.now(UTC)),
                interval_s=interval_s,
                host=host,
                n_samples=len(sample_rows),
                n_up=n_up,
                n_down=len(sample_rows) - n_up,
                n_unknown=n_unknown,
            )
            .returning(T_ROUND.c.id)
        ).scalar_one()
    return RoundSummary(int(round_id), t, len(sample_rows), n_up, len(sample_rows) - n_up, n_unknown, rejected)


# -- reading: SLA figures over a window --------------------------------------------------------------------


@dataclass(frozen=True)
class Outage:
    start: datetime
    end: datetime
    seconds: float  # inside the window, maintenance removed
    ongoing: bool
    ended_by: str  # up | unknown (a sampling gap followed) | ongoing

    def as_json(self) -> dict[str, JSONValue]:
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "seconds": self.seconds,
            "ongoing": self.ongoing,
            "ended_by": self.ended_by,
        }


@dataclass(frozen=True)
class WindowStats:
    """Measured availability of one endpoint over one window. Milliseconds, maintenance removed."""

    key: str
    start: datetime
    end: datetime
    measured_ms: int
    maintenance_ms: int
    up_ms: int
    down_ms: int
    samples: int
    last_sample_at: datetime | None
    outages: tuple[Outage, ...]  # the longest MAX_OUTAGES_LISTED, newest first
    outage_count: int
    longest_outage_ms: int
    latency_counts: tuple[int, ...] = field(default=(0,) * N_LATENCY_BUCKETS)

    @property
    def unknown_ms(self) -> int:
        return self.measured_ms - self.up_ms - self.down_ms

    def _pct(self, part: int) -> float | None:
        return None if self.measured_ms <= 0 else round(100.0 * part / self.measured_ms, 6)

    @property
    def lower_percent(self) -> float | None:
        return self._pct(self.up_ms)

    @property
    def upper_percent(self) -> float | None:
        return self._pct(self.up_ms + self.unknown_ms)

    @property
    def coverage_percent(self) -> float | None:
        return self._pct(self.up_ms + self.down_ms)

    @property
    def latency_samples(self) -> int:
        return sum(self.latency_counts)

    def p95_bounds(self) -> tuple[float, float | None] | None:
        return percentile_bounds(self.latency_counts, 0.95)


def _endpoint_ids(conn: Connection, keys: Sequence[str] | None) -> dict[str, tuple[int, int | None, int | None]]:
    """key → (id, last_ms, span_start_ms)."""
    q = select(T_ENDPOINT.c.key, T_ENDPOINT.c.id, T_ENDPOINT.c.last_ms, T_ENDPOINT.c.span_start_ms)
    out: dict[str, tuple[int, int | None, int | None]] = {}
    if keys is None:
        rows: Iterable[Any] = conn.execute(q)
        out = {r.key: (r.id, r.last_ms, r.span_start_ms) for r in rows}
    else:
        for batch in _chunks(sorted(set(keys))):
            out.update(
                {r.key: (r.id, r.last_ms, r.span_start_ms) for r in conn.execute(q.where(T_ENDPOINT.c.key.in_(batch)))}
            )
    return out


def _join_touching(spans: list[tuple[int, int, bool | None]]) -> list[tuple[int, int, int, bool | None]]:
    """Down spans (start, end, state of the span that follows) → outages (start, end, start of the last span,
    state that follows). Spans that touch are one outage: a state change to 'down' after a missed round starts a
    new span where coverage had not yet run out, though the endpoint never answered in between."""
    out: list[tuple[int, int, int, bool | None]] = []
    for s0, s1, next_up in sorted(spans):
        if out and out[-1][1] == s0:
            out[-1] = (out[-1][0], s1, s0, next_up)
        else:
            out.append((s0, s1, s0, next_up))
    return out


def window_stats(
    engine: Engine,
    keys: Sequence[str] | None,
    start: datetime,
    end: datetime,
    maintenance: Mapping[str, Sequence[Interval]] | None = None,
) -> dict[str, WindowStats]:
    """SLA figures per endpoint key over [start, end); `end` is normally now. keys None: every sampled endpoint.

    maintenance: key → declared maintenance intervals (ms); they are removed from the window before judging.
    Keys never sampled get all-unknown figures. Latency and sample counts come from whole hours overlapping
    the window.
    """
    w: Interval = (to_ms(start), to_ms(end))
    maintenance = maintenance or {}
    with engine.connect() as conn:
        ids = _endpoint_ids(conn, keys)
        by_id = {v[0]: k for k, v in ids.items()}
        wanted = set(by_id)
        start_c = case((T_SPAN.c.start_ms < w[0], w[0]), else_=T_SPAN.c.start_ms)
        end_c = case((T_SPAN.c.end_ms > w[1], w[1]), else_=T_SPAN.c.end_ms)
        in_window = (T_SPAN.c.end_ms > w[0], T_SPAN.c.start_ms < w[1])
        covered: dict[tuple[int, bool], int] = {}
        for row in conn.execute(
            select(T_SPAN.c.endpoint_id, T_SPAN.c.up, func.sum(end_c - start_c))
            .where(*in_window)
            .group_by(T_SPAN.c.endpoint_id, T_SPAN.c.up)
        ):
            if row[0] in wanted:
                covered[(row[0], bool(row[1]))] = int(row[2] or 0)
        maint = {ids[k][0]: merge(clip(i, w) for i in v) for k, v in maintenance.items() if k in ids and v}
        removed: dict[tuple[int, bool], int] = defaultdict(int)
        for batch in _chunks(sorted(maint)):
            q = select(T_SPAN.c.endpoint_id, T_SPAN.c.up, T_SPAN.c.start_ms, T_SPAN.c.end_ms)
            for row in conn.execute(q.where(*in_window, T_SPAN.c.endpoint_id.in_(batch))):
                removed[(row[0], bool(row[1]))] += overlap(clip((row[2], row[3]), w), maint[row[0]])
        nxt = T_SPAN.alias("nxt")
        outages: dict[int, list[Outage]] = defaultdict(list)
        outage_count: dict[int, int] = defaultdict(int)
        longest: dict[int, int] = defaultdict(int)
        q_out = (
            select(T_SPAN.c.endpoint_id, T_SPAN.c.start_ms, T_SPAN.c.end_ms, nxt.c.up.label("next_up"))
            .outerjoin(nxt, (nxt.c.endpoint_id == T_SPAN.c.endpoint_id) & (nxt.c.start_ms == T_SPAN.c.end_ms))
            .where(*in_window, T_SPAN.c.up == False)  # noqa: E712 (SQL expression)
        )
        down_spans: dict[int, list[tuple[int, int, bool | None]]] = defaultdict(list)
        for ep_id, s0, s1, next_up in conn.execute(q_out):
            if ep_id in wanted:
                down_spans[ep_id].append((s0, s1, None if next_up is None else bool(next_up)))
        for ep_id, spans in down_spans.items():
            for s0, s1, last_s0, next_up in _join_touching(spans):
                part = clip((s0, s1), w)
                ms = part[1] - part[0] - overlap(part, maint.get(ep_id, []))
                if ms <= 0:
                    continue  # entirely inside maintenance
                ongoing = ids[by_id[ep_id]][2] == last_s0 and s1 > w[1]
                ended_by = "ongoing" if ongoing else ("up" if next_up else "unknown")
                outage_count[ep_id] += 1
                longest[ep_id] = max(longest[ep_id], ms)
                outages[ep_id].append(Outage(from_ms(s0), from_ms(min(s1, w[1])), ms / 1000, ongoing, ended_by))
        hours: dict[int, tuple[int, tuple[int, ...]]] = {}
        hour_cols = [func.sum(T_HOUR.c[c]) for c in _BUCKETS]
        for row in conn.execute(
            select(T_HOUR.c.endpoint_id, func.sum(T_HOUR.c.n), *hour_cols)
            .where(T_HOUR.c.hour >= w[0] // HOUR_MS, T_HOUR.c.hour <= (w[1] - 1) // HOUR_MS)
            .group_by(T_HOUR.c.endpoint_id)
        ):
            if row[0] in wanted:
                hours[row[0]] = (int(row[1] or 0), tuple(int(x or 0) for x in row[2:]))
    result: dict[str, WindowStats] = {}
    window_ms = w[1] - w[0]
    for key in keys if keys is not None else sorted(ids):
        maint_key = merge(clip(i, w) for i in maintenance.get(key, ()))
        maint_ms = sum(b - a for a, b in maint_key)
        if key not in ids:
            result[key] = WindowStats(key, start, end, window_ms - maint_ms, maint_ms, 0, 0, 0, None, (), 0, 0)
            continue
        ep_id, last_ms, _ = ids[key]
        listed = sorted(outages.get(ep_id, []), key=lambda o: (-o.seconds, o.start))[:MAX_OUTAGES_LISTED]
        n, counts = hours.get(ep_id, (0, (0,) * N_LATENCY_BUCKETS))
        result[key] = WindowStats(
            key=key,
            start=start,
            end=end,
            measured_ms=window_ms - maint_ms,
            maintenance_ms=maint_ms,
            up_ms=covered.get((ep_id, True), 0) - removed.get((ep_id, True), 0),
            down_ms=covered.get((ep_id, False), 0) - removed.get((ep_id, False), 0),
            samples=n,
            last_sample_at=from_ms(last_ms) if last_ms is not None else None,
            outages=tuple(sorted(listed, key=lambda o: o.start, reverse=True)),
            outage_count=outage_count.get(ep_id, 0),
            longest_outage_ms=longest.get(ep_id, 0),
            latency_counts=counts,
        )
    return result


def service_stats(
    engine: Engine,
    key: str,
    instance_keys: Sequence[str],
    start: datetime,
    end: datetime,
    maintenance: Sequence[Interval] = (),
    now: datetime | None = None,
) -> WindowStats:
    """SLA figures of a redundant service over [start, end): up while any instance was seen up, down only while
    every instance was seen down, unknown otherwise (`scanner.availability.service_coverage`). Read from the
    instances' spans, so exact at any window edge; samples and latency are the instances' hourly sums. An outage
    is ongoing if the instances' coverage still shows it at `now` (default: `end`)."""
    w: Interval = (to_ms(start), to_ms(end))
    now_ms = to_ms(now or end)
    maint = merge(clip(i, w) for i in maintenance)
    maint_ms = sum(b - a for a, b in maint)
    with engine.connect() as conn:
        ids = _endpoint_ids(conn, instance_keys)
        spans: dict[int, tuple[list[Interval], list[Interval]]] = {v[0]: ([], []) for v in ids.values()}
        hour_cols = [func.sum(T_HOUR.c[c]) for c in _BUCKETS]
        n, counts = 0, [0] * N_LATENCY_BUCKETS
        if spans:
            wanted = sorted(spans)
            # also a span starting right at the window's end: it tells what ended an outage that runs up to it
            q = select(T_SPAN.c.endpoint_id, T_SPAN.c.up, T_SPAN.c.start_ms, T_SPAN.c.end_ms).where(
                T_SPAN.c.end_ms > w[0], T_SPAN.c.start_ms <= w[1], T_SPAN.c.endpoint_id.in_(wanted)
            )
            for ep_id, up, s0, s1 in conn.execute(q):
                spans[ep_id][0 if up else 1].append((s0, s1))
            hours = conn.execute(
                select(func.sum(T_HOUR.c.n), *hour_cols).where(
                    T_HOUR.c.hour >= w[0] // HOUR_MS,
                    T_HOUR.c.hour <= (w[1] - 1) // HOUR_MS,
                    T_HOUR.c.endpoint_id.in_(wanted),
                )
            ).one()
            n, counts = int(hours[0] or 0), [int(x or 0) for x in hours[1:]]
    # Instances never sampled count with no coverage at all: the service cannot be down while they are unseen.
    coverage = list(spans.values()) + [([], [])] * (len(set(instance_keys)) - len(spans))
    up, down = service_coverage(coverage)
    up_in = [clip(i, w) for i in up if i[1] > w[0] and i[0] < w[1]]
    up_ms = sum(b - a for a, b in up_in) - sum(overlap(i, maint) for i in up_in)
    outages: list[Outage] = []
    down_ms = longest_ms = 0
    for s0, s1 in down:
        part = clip((s0, s1), w)
        if part[1] <= part[0]:
            continue
        ms = part[1] - part[0] - overlap(part, maint)
        down_ms += ms
        if ms <= 0:
            continue  # entirely inside maintenance
        ongoing = s1 > now_ms
        ended_by = "ongoing" if ongoing else ("up" if overlap((s1, s1 + 1), up) else "unknown")
        longest_ms = max(longest_ms, ms)
        outages.append(Outage(from_ms(s0), from_ms(min(s1, w[1])), ms / 1000, ongoing, ended_by))
    listed = sorted(outages, key=lambda o: (-o.seconds, o.start))[:MAX_OUTAGES_LISTED]
    last = max((v[1] for v in ids.values() if v[1] is not None), default=None)
    return WindowStats(
        key=key,
        start=start,
        end=end,
        measured_ms=w[1] - w[0] - maint_ms,
        maintenance_ms=maint_ms,
        up_ms=up_ms,
        down_ms=down_ms,
        samples=n,
        last_sample_at=from_ms(last) if last is not None else None,
        outages=tuple(sorted(listed, key=lambda o: o.start, reverse=True)),
        outage_count=len(outages),
        longest_outage_ms=longest_ms,
        latency_counts=tuple(counts),
    )


@dataclass(frozen=True)
class InstanceState:
    key: str
    state: str  # up | down | unknown
    last_sample_at: datetime | None


def instance_states(engine: Engine, keys: Sequence[str], now: datetime) -> dict[str, InstanceState]:
    """Newest sample per endpoint, if its coverage still reaches `now` (sampled within 2 × interval)."""
    now_ms = to_ms(now)
    out = {k: InstanceState(k, "unknown", None) for k in keys}
    with engine.connect() as conn:
        q = select(T_ENDPOINT.c.key, T_ENDPOINT.c.last_ms, T_ENDPOINT.c.last_up, T_ENDPOINT.c.span_end_ms)
        for batch in _chunks(sorted(set(keys))):
            for row in conn.execute(q.where(T_ENDPOINT.c.key.in_(batch))):
                last = from_ms(row.last_ms) if row.last_ms is not None else None
                fresh = (
                    row.span_end_ms is not None and row.last_ms is not None and row.last_ms <= now_ms < row.span_end_ms
                )
                state = ("up" if row.last_up else "down") if fresh else "unknown"
                out[row.key] = InstanceState(row.key, state, last)
    return out


@dataclass(frozen=True)
class Heartbeat:
    rounds: int
    covered_ms: int
    window_ms: int
    last_round_at: datetime | None

    @property
    def coverage_percent(self) -> float:
        return 100.0 * self.covered_ms / self.window_ms if self.window_ms else 0.0


def heartbeat(engine: Engine, start: datetime, end: datetime) -> Heartbeat:
    """How much of the window the sampler itself covered (each round covers like a sample does)."""
    w = (to_ms(start), to_ms(end))
    with engine.connect() as conn:
        rows = conn.execute(
            select(T_ROUND.c.t_ms, T_ROUND.c.interval_s)
            .where(T_ROUND.c.t_ms >= w[0] - 2 * 3600 * 1000, T_ROUND.c.t_ms < w[1])
            .order_by(T_ROUND.c.t_ms)
        ).all()
        last = conn.execute(select(func.max(T_ROUND.c.t_ms))).scalar()
    spans: list[Interval] = []
    for i, (t, interval) in enumerate(rows):
        nxt = rows[i + 1][0] if i + 1 < len(rows) else None
        cover_end = t + 2 * interval * 1000 if nxt is None else min(nxt, t + 2 * interval * 1000)
        spans.append(clip((t, cover_end), w))
    covered = sum(b - a for a, b in merge(spans))
    n_in = sum(1 for t, _ in rows if t >= w[0])
    return Heartbeat(n_in, covered, w[1] - w[0], from_ms(int(last)) if last is not None else None)


# -- the `sla` fact provider (a Probe implemented over the store) ---------------------------------------------


def system_availability(declared: Mapping[str, Any]) -> SystemAvailability:
    raw = (declared.get("system") or {}).get("availability")
    return SystemAvailability.model_validate(raw) if raw else SystemAvailability()


def redundant_instance_keys(system_id: str, declared: SystemAvailability) -> list[str]:
    """Endpoint keys of a system's declared instances when there are at least two (a redundant service)."""
    keys = sorted({f"{system_id}/{i.endpoint}" for i in declared.instances})
    return keys if len(keys) >= 2 else []


def sla_target(declared: Mapping[str, Any], settings: AvailabilityConfig) -> tuple[float | None, str]:
    """The system's own sla_percent, else the target for its criticality (None when config has none)."""
    own = system_availability(declared).sla_percent
    if own is not None:
        return own, "system"
    criticality = str((declared.get("system") or {}).get("criticality", ""))
    return settings.sla_targets.get(criticality), f"criticality:{criticality}"


def _endpoint_facts(
    stats: WindowStats, target: float | None, source: str, window: str, budget: int | None
) -> dict[str, JSONValue]:
    p95 = stats.p95_bounds()
    return {
        "sla.window": window,
        "sla.window_start": stats.start.isoformat(),
        "sla.window_end": stats.end.isoformat(),
        "sla.target_percent": target,
        "sla.target_source": source,
        "sla.measured_seconds": stats.measured_ms / 1000,
        "sla.maintenance_seconds": stats.maintenance_ms / 1000,
        "sla.up_seconds": stats.up_ms / 1000,
        "sla.down_seconds": stats.down_ms / 1000,
        "sla.unknown_seconds": stats.unknown_ms / 1000,
        "sla.lower_percent": stats.lower_percent,
        "sla.upper_percent": stats.upper_percent,
        "sla.coverage_percent": stats.coverage_percent,
        "sla.samples": stats.samples,
        "sla.last_sample_at": stats.last_sample_at.isoformat() if stats.last_sample_at else None,
        "sla.outage_count": stats.outage_count,
        "sla.longest_outage_seconds": stats.longest_outage_ms / 1000,
        "sla.outages": [o.as_json() for o in stats.outages],
        "sla.latency_budget_ms": budget,
        "sla.latency_samples": stats.latency_samples,
        "sla.latency_p95_low_ms": p95[0] if p95 else None,
        "sla.latency_p95_high_ms": p95[1] if p95 else None,
    }


class SlaProvider:
    """Facts of kind `sla` from stored samples: SLA over the configured window (AVL-01), p95 latency (AVL-03),
    and for system-level targets the state of each declared instance (AVL-02). Reads only."""

    kind: ClassVar[str] = SLA_KIND
    facts: ClassVar[Sequence[FactSpec]] = SLA_FACTS
    protocols: ClassVar[frozenset[str]] = SLA_PROTOCOLS

    def __init__(
        self, engine: Engine, settings: AvailabilityConfig, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.now = now

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        try:
            return self._gather(targets)
        except SQLAlchemyError as exc:
            err = ProbeError(ProbeErrorReason.TOOL_FAILED, f"availability store: {type(exc).__name__}: {exc}"[:500])
            return {t.key: err for t in targets}

    def _gather(self, targets: Sequence[Target]) -> dict[str, ProbeOutcome]:
        now = self.now()
        start = now - parse_window(self.settings.window)
        w = (to_ms(start), to_ms(now))
        endpoint_targets = [t for t in targets if t.protocol != SYSTEM_LEVEL]
        maintenance = {t.key: system_availability(t.declared).maintenance_intervals(w) for t in endpoint_targets}
        stats = window_stats(self.engine, [t.key for t in endpoint_targets], start, now, maintenance)
        out: dict[str, ProbeOutcome] = {}
        for t in endpoint_targets:
            declared = system_availability(t.declared)
            target, source = sla_target(t.declared, self.settings)
            facts = _endpoint_facts(stats[t.key], target, source, self.settings.window, declared.latency_budget_ms)
            facts["sla.basis"] = "instance" if t.key in redundant_instance_keys(t.system_id, declared) else "endpoint"
            out[t.key] = ProbeFacts(facts)
        for t in targets:
            if t.protocol == SYSTEM_LEVEL:
                out[t.key] = ProbeFacts(self._instances(t, now) | self._service(t, start, now))
        return out

    def _service(self, t: Target, start: datetime, now: datetime) -> dict[str, JSONValue]:
        """System level: the SLA figures of a redundant service (up while any declared instance answers)."""
        declared = system_availability(t.declared)
        keys = redundant_instance_keys(t.system_id, declared)
        if not keys:
            return {"sla.basis": "none"}
        maintenance = declared.maintenance_intervals((to_ms(start), to_ms(now)))
        stats = service_stats(self.engine, t.key, keys, start, now, maintenance)
        target, source = sla_target(t.declared, self.settings)
        return {"sla.basis": "service"} | _endpoint_facts(
            stats, target, source, self.settings.window, declared.latency_budget_ms
        )

    def _instances(self, t: Target, now: datetime) -> dict[str, JSONValue]:
        declared = system_availability(t.declared).instances
        keys = [f"{t.system_id}/{i.endpoint}" for i in declared]
        states = instance_states(self.engine, keys, now)
        rows: list[JSONValue] = []
        counts = {"up": 0, "down": 0, "unknown": 0}
        for inst, key in zip(declared, keys, strict=True):
            st = states[key]
            counts[st.state] += 1
            rows.append(
                {
                    "endpoint": inst.endpoint,
                    "site": inst.site,
                    "state": st.state,
                    "last_sample_at": st.last_sample_at.isoformat() if st.last_sample_at else None,
                }
            )
        return {
            "sla.instances_declared": len(declared),
            "sla.sites_declared": len({i.site for i in declared}),
            "sla.instances": rows,
            "sla.instances_up": counts["up"],
            "sla.instances_down": counts["down"],
            "sla.instances_unknown": counts["unknown"],
        }

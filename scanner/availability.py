"""Availability as declared and as measured: per-system settings from the inventory, and the pure time arithmetic
(windows, maintenance intervals, coverage) that SLA figures are built from.

Times are integer milliseconds since the epoch (UTC) throughout, so coverage sums are exact.
Coverage rule (issue 4): a sample taken at t covers [t, min(next sample, t + 2 × interval)); time no sample
covers is *unknown* — neither up nor down.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from scanner.config import Strict

Interval = tuple[int, int]  # [start_ms, end_ms)
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SampleMethod = Literal["tcp", "tls", "http", "fhir", "dicom"]
_WINDOW = re.compile(r"^([1-9][0-9]{0,4})([mhd])$")
# Upper bounds (ms) of the latency histogram kept per endpoint and hour; the last bucket is open-ended.
# Common budgets (100, 200, 250, 300, 500, 750, 1000, 1500, 2000, 3000, 5000 ms) are bucket edges, so a p95
# judged against them is exact.
LATENCY_BOUNDS_MS: tuple[int, ...] = (
    5,
    10,
    20,
    30,
    50,
    75,
    100,
    150,
    200,
    250,
    300,
    400,
    500,
    750,
    1000,
    1500,
    2000,
    3000,
    5000,
    10000,
)
N_LATENCY_BUCKETS = len(LATENCY_BOUNDS_MS) + 1


def to_ms(moment: datetime) -> int:
    """Aware datetime → integer epoch milliseconds."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime; use aware UTC")
    return round(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def parse_window(text: str) -> timedelta:
    """'90m', '24h', '7d', '30d' → timedelta. Raises ValueError on anything else."""
    m = _WINDOW.match(text.strip())
    if m is None:
        raise ValueError(f"window '{text}' is not <n>m, <n>h or <n>d (e.g. 24h, 7d, 30d)")
    n, unit = int(m.group(1)), m.group(2)
    return timedelta(minutes=n) if unit == "m" else timedelta(hours=n) if unit == "h" else timedelta(days=n)


def latency_bucket(latency_ms: float) -> int:
    """Index of the histogram bucket a latency falls in (bucket i holds (bound[i-1], bound[i]])."""
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if latency_ms <= bound:
            return i
    return len(LATENCY_BOUNDS_MS)


def percentile_bounds(counts: Sequence[int], fraction: float) -> tuple[float, float | None] | None:
    """The bucket the given percentile falls in, as (low, high]: the true value is above low and at most high.

    high is None for the open-ended last bucket. None when there are no counts.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = fraction * total  # the smallest value v with count(x <= v) >= rank
    running = 0
    for i, n in enumerate(counts):
        running += n
        if running >= rank and n > 0:
            low = 0.0 if i == 0 else float(LATENCY_BOUNDS_MS[i - 1])
            high = float(LATENCY_BOUNDS_MS[i]) if i < len(LATENCY_BOUNDS_MS) else None
            return low, high
    return float(LATENCY_BOUNDS_MS[-1]), None


# -- interval arithmetic -----------------------------------------------------------------------------


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping, non-empty union of the intervals."""
    out: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def overlap(a: Interval, merged: Sequence[Interval]) -> int:
    """Milliseconds of interval a that lie inside the (merged) intervals."""
    total = 0
    for start, end in merged:
        if end <= a[0]:
            continue
        if start >= a[1]:
            break
        total += min(end, a[1]) - max(start, a[0])
    return total


def clip(a: Interval, window: Interval) -> Interval:
    return (max(a[0], window[0]), min(a[1], window[1]))


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """Intersection of two merged (sorted, non-overlapping) interval lists."""
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if end > start:
            out.append((start, end))
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    """The parts of merged intervals a outside merged intervals b."""
    out: list[Interval] = []
    j = 0
    for start, end in a:
        cur = start
        while j < len(b) and b[j][1] <= cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < end:
            out.append((cur, end))
    return out


def service_coverage(
    instances: Sequence[tuple[Sequence[Interval], Sequence[Interval]]],
) -> tuple[list[Interval], list[Interval]]:
    """When a redundant service was up and when it was down, from its instances' (up, down) coverage.

    Up while any instance was seen up; down only while every instance was seen down; any other time (one down,
    another not sampled) is unknown — never counted as up or as down.
    """
    if not instances:
        return [], []
    up = merge(i for ups, _ in instances for i in ups)
    down = merge(instances[0][1])
    for _, downs in instances[1:]:
        down = intersect(down, merge(downs))
    return up, subtract(down, up)


# -- declared availability (inventory) ---------------------------------------------------------------


class MaintenanceWindow(Strict):
    """A declared maintenance window: weekly (days + start + duration, in a time zone) or one-off (start–end)."""

    days: list[Weekday] | None = Field(None, description="Weekly: days of the week, e.g. [sun].")
    at: time | None = Field(None, description="Weekly: local start time, 'HH:MM'.")
    duration_min: int | None = Field(None, ge=1, le=7 * 24 * 60, description="Weekly: length in minutes.")
    tz: str = Field("UTC", description="Weekly: IANA time zone of `at`, e.g. Europe/Copenhagen.")
    start: datetime | None = Field(None, description="One-off: start (ISO 8601 with offset).")
    end: datetime | None = Field(None, description="One-off: end (ISO 8601 with offset).")

    @field_validator("tz")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone '{value}'") from exc
        return value

    @model_validator(mode="after")
    def _one_form(self) -> MaintenanceWindow:
        weekly = self.days is not None or self.at is not None or self.duration_min is not None
        one_off = self.start is not None or self.end is not None
        if weekly == one_off:
            raise ValueError("a maintenance window is either weekly (days, at, duration_min) or one-off (start, end)")
        if weekly and (not self.days or self.at is None or self.duration_min is None):
            raise ValueError("a weekly maintenance window needs days, at and duration_min")
        if one_off:
            if self.start is None or self.end is None:
                raise ValueError("a one-off maintenance window needs start and end")
            if self.start.tzinfo is None or self.end.tzinfo is None:
                raise ValueError("start and end need a UTC offset (e.g. 2026-03-01T22:00:00+01:00)")
            if self.end <= self.start:
                raise ValueError("end must be after start")
        return self

    def intervals(self, window: Interval) -> list[Interval]:
        """The window's parts inside this maintenance window (ms intervals, possibly overlapping)."""
        if self.start is not None and self.end is not None:
            return [clip((to_ms(self.start), to_ms(self.end)), window)]
        assert self.days is not None and self.at is not None and self.duration_min is not None
        zone = ZoneInfo(self.tz)
        wanted = {WEEKDAYS.index(d) for d in self.days}
        length = timedelta(minutes=self.duration_min)
        first = from_ms(window[0]).astimezone(zone).date() - timedelta(days=8)  # a window may reach back a week
        last = from_ms(window[1]).astimezone(zone).date()
        out: list[Interval] = []
        day = first
        while day <= last:
            if day.weekday() in wanted:
                begin = datetime.combine(day, self.at, tzinfo=zone)
                span = clip((to_ms(begin), to_ms(begin + length)), window)
                if span[1] > span[0]:
                    out.append(span)
            day += timedelta(days=1)
        return out


class Instance(Strict):
    """One redundant instance of a system: the endpoint that answers for it and the site it runs at."""

    endpoint: str = Field(description="Endpoint id (within this system) that must answer for this instance.")
    site: str = Field(min_length=1, description="Data centre / site name.")


# A DICOM AE title as hcscan sends it (the node's own, called AE title): 1 to 16 characters out of letters, digits and
# _ . : / @ + -. A strict subset of DICOM's AE value representation (default character repertoire, no backslash, no
# control characters) that nmap's dicom-ping carries in --script-args (plain values: no spaces, commas, quotes or
# braces) and pynetdicom accepts. No spaces at all, so leading or trailing padding (not significant in DICOM) is
# never part of a declared title.
AE_TITLE_PATTERN = r"^[A-Za-z0-9_.:/@+-]{1,16}$"
AE_TITLE = re.compile(AE_TITLE_PATTERN)


class EndpointCheck(Strict):
    """How to sample one endpoint, when the protocol's default is not right."""

    method: SampleMethod | None = Field(None, description="tcp, tls, http, fhir or dicom (default: by protocol).")
    path: str | None = Field(
        None, pattern=r"^/[!-~]*$", description="HTTP path (default / ; FHIR <endpoint path>/metadata)."
    )
    expect_status: list[int] | None = Field(None, description="HTTP statuses that count as up (default: < 500).")
    keyword: str | None = Field(None, min_length=1, max_length=200, description="Text the body must contain.")
    ae_title: str | None = Field(
        None,
        min_length=1,
        max_length=16,
        json_schema_extra={"pattern": AE_TITLE_PATTERN},
        description="The DICOM node's own (called) AE title, also used by EXP-02 (default ANY-SCP): 1-16 of "
        "A-Z a-z 0-9 _ . : / @ + - (no spaces or backslashes).",
    )
    calling_ae_title: str | None = Field(
        None,
        min_length=1,
        max_length=16,
        json_schema_extra={"pattern": AE_TITLE_PATTERN},
        description="The calling AE title the availability sample's C-ECHO uses: one the node knows, so a node that "
        "checks AE titles accepts it (default HCSCAN; EXP-02 always calls from an unknown one). Same characters "
        "as ae_title.",
    )

    @field_validator("ae_title", "calling_ae_title")
    @classmethod
    def _ae_title(cls, value: str | None) -> str | None:
        if value is not None and not AE_TITLE.match(value):
            raise ValueError(
                f"{value!r} is not an AE title hcscan can send: 1 to 16 characters out of A-Z a-z 0-9 _ . : / @ + - "
                "(no spaces, also not leading or trailing ones, no backslash)"
            )
        return value


class SystemAvailability(Strict):
    """`availability:` of a system in the inventory."""

    sla_percent: float | None = Field(None, gt=0, le=100, description="Overrides the criticality's SLA target.")
    latency_budget_ms: int | None = Field(None, ge=1, description="p95 response-time budget (AVL-03).")
    maintenance: list[MaintenanceWindow] = Field(default_factory=list)
    instances: list[Instance] = Field(default_factory=list, description="Redundant instances (AVL-02).")
    checks: dict[str, EndpointCheck] = Field(default_factory=dict, description="Endpoint id → how to sample it.")

    @field_validator("instances")
    @classmethod
    def _distinct_instances(cls, value: list[Instance]) -> list[Instance]:
        seen: set[str] = set()
        for inst in value:
            if inst.endpoint in seen:
                raise ValueError(
                    f"endpoint '{inst.endpoint}' is declared as an instance twice: an instance runs at one site; "
                    "declare each instance's own endpoint"
                )
            seen.add(inst.endpoint)
        return value

    def check_endpoints(self, endpoint_ids: set[str]) -> None:
        """Every endpoint named here must be declared in the system."""
        named = [i.endpoint for i in self.instances] + list(self.checks)
        unknown = sorted(set(named) - endpoint_ids)
        if unknown:
            raise ValueError(f"availability names unknown endpoint(s) {unknown}; declared: {sorted(endpoint_ids)}")

    def maintenance_intervals(self, window: Interval) -> list[Interval]:
        return merge(i for w in self.maintenance for i in w.intervals(window))


DEFAULT_METHODS: dict[str, SampleMethod] = {
    "http": "http",
    "https": "http",
    "fhir": "fhir",
    "tls": "tls",
    "dicom-tls": "dicom",  # an association over TLS: the same up/down rules as plain DICOM
    "mllp-tls": "tls",
    "syslog-tls": "tls",
    "ldaps": "tls",
    "dicom": "dicom",
}


def default_method(protocol: str) -> SampleMethod:
    """How an endpoint is sampled when its system does not say: by protocol, else a TCP connect."""
    return DEFAULT_METHODS.get(protocol, "tcp")

"""Tables. Flat rows with foreign-key ids; evidence rows are append-only (JSON edits in place are not saved)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, TypeDecorator, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC, on SQLite and PostgreSQL alike."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _dt(nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, index=index))


class ScanRun(SQLModel, table=True):
    """One scan: what was judged, by what, when, and whether it completed."""

    __tablename__ = "scan_run"

    id: int | None = Field(default=None, primary_key=True)
    started_at: datetime = _dt(index=True)
    finished_at: datetime | None = _dt(nullable=True)
    status: str = Field(index=True)  # running | complete | interrupted | failed
    status_detail: str = ""
    tool_version: str
    catalog_digest: str
    inventory_digest: str
    config_digest: str
    selection: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    regions: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    host: str = ""
    pid: int = 0
    agent_id: str = ""
    n_findings: int = 0
    n_pass: int = 0
    n_fail: int = 0
    n_error: int = 0
    n_not_applicable: int = 0
    n_waived: int = 0


class Finding(SQLModel, table=True):
    """One control judged on one endpoint in one run, with the evidence it was judged on."""

    __tablename__ = "finding"
    __table_args__ = (Index("ix_finding_run_region", "run_id", "region_id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="scan_run.id", index=True)
    fingerprint: str = Field(index=True)
    control_id: str = Field(index=True)
    family: str
    severity: str
    region_id: str
    system_id: str = Field(index=True)
    endpoint_key: str
    criticality: str
    status: str
    change: str  # lifecycle label (scanner.store.lifecycle): new | unchanged | fixed | regressed | waived | …
    message: str
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    observed_at: datetime = _dt()


class FindingState(SQLModel, table=True):
    """The lifecycle of one fingerprint (control + system + endpoint) across runs."""

    __tablename__ = "finding_state"

    fingerprint: str = Field(primary_key=True)
    control_id: str
    region_id: str = Field(index=True)
    system_id: str
    endpoint_key: str
    status: str
    first_seen_at: datetime | None = _dt(nullable=True)  # first run it was not compliant
    last_seen_at: datetime | None = _dt(nullable=True)  # last run it was not compliant
    resolved_at: datetime | None = _dt(nullable=True)  # when it last turned compliant
    last_verified_at: datetime = _dt()  # last run that judged it, whatever the verdict
    last_run_id: int = Field(foreign_key="scan_run.id")
    times_reopened: int = 0
    # Issue 7: the current finding row (a row is written only when the verdict changes) and its verdict digest.
    finding_id: int | None = None
    verdict_digest: str = ""
    severity: str = ""
    family: str = ""
    # The volatile readings (probes' FactSpec.volatile: clock skew, uptime, timestamps…) of the run that last
    # verified this verdict, replaced as a whole on every run: they are not part of the digest, so an unchanged
    # verdict writes no finding row, but the latest measurement is kept. None: the verdict has no such evidence.
    latest_evidence: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class ControlDef(SQLModel, table=True):
    """What a control said when a catalogue version judged: reports read titles and remediation from here."""

    __tablename__ = "control_def"

    catalog_digest: str = Field(primary_key=True)
    control_id: str = Field(primary_key=True)
    title: str
    family: str
    severity: str
    rationale: str
    remediation: str
    references: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class SystemDef(SQLModel, table=True):
    """The declared system as an inventory version described it."""

    __tablename__ = "system_def"

    inventory_digest: str = Field(primary_key=True)
    system_id: str = Field(primary_key=True)
    region_id: str
    region_name: str
    name: str
    owner: str
    criticality: str
    fragile: bool


class JobSlot(SQLModel, table=True):
    """One scheduled slot of one agent job and scope, claimed by exactly one agent (the claim is the lock).

    A holder that dies stops renewing `lease_expires_at`; another agent may then take the slot over.
    """

    __tablename__ = "job_slot"
    __table_args__ = (UniqueConstraint("job_id", "scope", "slot_start", name="uq_job_slot"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(index=True)
    scope: str  # "region:<id>" for scans, "all" for the central report
    slot_start: datetime = _dt()
    state: str = Field(index=True)  # claimed | running | done | failed | interrupted | skipped
    holder: str  # agent_id@host:pid of the current claimant
    agent_id: str
    host: str
    pid: int
    claimed_at: datetime = _dt()
    lease_expires_at: datetime = _dt()
    finished_at: datetime | None = _dt(nullable=True)
    run_id: int | None = Field(default=None, foreign_key="scan_run.id")
    takeovers: int = 0
    detail: str = ""


class AgentLock(SQLModel, table=True):
    """A named one-at-a-time lock on SQLite (PostgreSQL uses an advisory lock instead)."""

    __tablename__ = "agent_lock"

    name: str = Field(primary_key=True)
    holder: str
    acquired_at: datetime = _dt()
    expires_at: datetime = _dt()


# -- availability (issue 4): samples, coverage spans, hourly latency rollups, sampler heartbeat --------------
# Times are integer epoch milliseconds (BIGINT): coverage sums stay exact and rows stay small.


def _ms(primary_key: bool = False, nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_column=Column(BigInteger(), primary_key=primary_key, nullable=nullable, index=index))


class AvlEndpoint(SQLModel, table=True):
    """A sampled endpoint and its cursor: where its newest coverage span stands (for span upkeep at insert)."""

    __tablename__ = "avl_endpoint"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)  # "<system_id>/<endpoint_id>"
    system_id: str = Field(index=True)
    region_id: str
    method: str  # tcp | tls | http | fhir | dicom
    last_ms: int | None = _ms(nullable=True)  # newest sample
    last_up: bool | None = None
    span_start_ms: int | None = _ms(nullable=True)  # the open span (avl_span primary key with id)
    span_end_ms: int | None = _ms(nullable=True)  # coverage end if no further sample arrives: last + 2 × interval


class AvlSample(SQLModel, table=True):
    """One sample: up/down, latency of the successful attempt, and why it was down."""

    __tablename__ = "avl_sample"
    __table_args__ = {"sqlite_with_rowid": False}

    endpoint_id: int = Field(primary_key=True)
    t_ms: int = _ms(primary_key=True)
    up: bool
    latency_ms: float | None = None
    reason: str | None = None  # refused | timeout | unreachable | protocol | status | keyword | dicom
    detail: str | None = None  # first 200 characters of the error
    attempts: int = 1


class AvlSpan(SQLModel, table=True):
    """A run of consecutive samples with the same state and no gap: [start_ms, end_ms) is covered up (or down).

    A down span is an outage. Spans are kept at insert time, so SLA queries read spans, not samples.
    """

    __tablename__ = "avl_span"
    __table_args__ = (Index("ix_avl_span_end", "end_ms"), {"sqlite_with_rowid": False})

    endpoint_id: int = Field(primary_key=True)
    start_ms: int = _ms(primary_key=True)
    end_ms: int = _ms()
    last_ms: int = _ms()  # newest sample in the span
    up: bool
    n_samples: int


class AvlHour(SQLModel, table=True):
    """Per endpoint and hour: sample counts and the latency histogram of up samples (p95 for AVL-03)."""

    __tablename__ = "avl_hour"
    __table_args__ = (Index("ix_avl_hour_hour", "hour"), {"sqlite_with_rowid": False})

    endpoint_id: int = Field(primary_key=True)
    hour: int = Field(primary_key=True)  # epoch hours
    n: int = 0
    n_up: int = 0
    # latency histogram of up samples: b<i> counts latencies in bucket i of scanner.availability.LATENCY_BOUNDS_MS
    b0: int = 0
    b1: int = 0
    b2: int = 0
    b3: int = 0
    b4: int = 0
    b5: int = 0
    b6: int = 0
    b7: int = 0
    b8: int = 0
    b9: int = 0
    b10: int = 0
    b11: int = 0
    b12: int = 0
    b13: int = 0
    b14: int = 0
    b15: int = 0
    b16: int = 0
    b17: int = 0
    b18: int = 0
    b19: int = 0
    b20: int = 0


class AvlRound(SQLModel, table=True):
    """The sampler's own heartbeat: one row per round. Gaps between rounds are time the scanner was not looking."""

    __tablename__ = "avl_round"

    id: int | None = Field(default=None, primary_key=True)
    t_ms: int = _ms(index=True)  # the round's sample time
    finished_ms: int = _ms()
    interval_s: int
    host: str
    n_samples: int
    n_up: int
    n_down: int
    n_unknown: int


# -- reports (issue 7): per-run aggregates for trends, and notices already sent ---------------------------------


class RunFamilyAgg(SQLModel, table=True):
    """What one run judged of one control family in one region, counted and weighted (score = w_pass / w_total).

    Trends read only this. A run scheduled for some families (nightly TLS, weekly patching) changes only those
    families' state, so a trend point is the sum of each family's latest aggregate up to that run. Rows with
    family '' were written before aggregates were split by family (migration 0006): one row for the whole run.
    """

    __tablename__ = "run_family_agg"

    run_id: int = Field(foreign_key="scan_run.id", primary_key=True)
    region_id: str = Field(primary_key=True)
    family: str = Field(primary_key=True)
    n_systems: int = 0
    n_pass: int = 0
    n_fail: int = 0
    n_error: int = 0
    n_waived: int = 0
    n_not_applicable: int = 0
    w_pass: int = 0
    w_total: int = 0


class NoticeSent(SQLModel, table=True):
    """A notification already delivered (key = kind + subject), so each notice goes out once, not every run."""

    __tablename__ = "notice_sent"

    key: str = Field(primary_key=True)
    kind: str
    sent_at: datetime = _dt()
    channels: str = ""

"""Tables. Flat rows with foreign-key ids; evidence rows are append-only (JSON edits in place are not saved)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, TypeDecorator
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
    change: str  # new | unchanged | fixed | regressed | waived
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

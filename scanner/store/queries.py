"""Read-only queries reports use. They return plain dataclasses, never ORM rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, func, select
from sqlmodel import Session, col

from scanner.results import ControlInfo, SystemInfo
from scanner.store.models import ControlDef, Finding, FindingState, ScanRun, SystemDef


@dataclass(frozen=True)
class FindingView:
    fingerprint: str
    control_id: str
    family: str
    severity: str
    region_id: str
    system_id: str
    endpoint_key: str
    criticality: str
    status: str
    change: str
    message: str
    evidence: dict[str, Any]
    observed_at: datetime
    first_seen_at: datetime | None
    last_verified_at: datetime
    run_id: int


@dataclass(frozen=True)
class RunView:
    id: int
    started_at: datetime
    finished_at: datetime | None
    status: str
    status_detail: str
    tool_version: str
    catalog_digest: str
    inventory_digest: str
    regions: list[str]
    counts: dict[str, int]


ControlView = ControlInfo
SystemView = SystemInfo


def _run_view(r: ScanRun) -> RunView:
    assert r.id is not None
    return RunView(
        id=r.id,
        started_at=r.started_at,
        finished_at=r.finished_at,
        status=r.status,
        status_detail=r.status_detail,
        tool_version=r.tool_version,
        catalog_digest=r.catalog_digest,
        inventory_digest=r.inventory_digest,
        regions=list(r.regions),
        counts={
            "pass": r.n_pass,
            "fail": r.n_fail,
            "error": r.n_error,
            "not_applicable": r.n_not_applicable,
            "waived": r.n_waived,
        },
    )


def regions_with_findings(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return sorted(session.execute(select(col(FindingState.region_id)).distinct()).scalars())


def latest_findings(engine: Engine, region_id: str) -> list[FindingView]:
    """The newest verdict of every fingerprint in the region (from whichever run last judged it)."""
    stmt = (
        select(Finding, FindingState)
        .join(
            FindingState,
            and_(
                col(Finding.fingerprint) == col(FindingState.fingerprint),
                col(Finding.run_id) == col(FindingState.last_run_id),
            ),
        )
        .where(col(FindingState.region_id) == region_id)
        .order_by(col(Finding.system_id), col(Finding.endpoint_key), col(Finding.control_id))
    )
    out: list[FindingView] = []
    with Session(engine) as session:
        for f, s in session.execute(stmt).all():
            out.append(
                FindingView(
                    fingerprint=f.fingerprint,
                    control_id=f.control_id,
                    family=f.family,
                    severity=f.severity,
                    region_id=f.region_id,
                    system_id=f.system_id,
                    endpoint_key=f.endpoint_key,
                    criticality=f.criticality,
                    status=f.status,
                    change=f.change,
                    message=f.message,
                    evidence=dict(f.evidence),
                    observed_at=f.observed_at,
                    first_seen_at=s.first_seen_at,
                    last_verified_at=s.last_verified_at,
                    run_id=f.run_id,
                )
            )
    return out


def runs(engine: Engine, ids: list[int] | None = None, limit: int = 50) -> list[RunView]:
    """Newest first."""
    stmt = select(ScanRun).order_by(col(ScanRun.started_at).desc()).limit(limit)
    if ids is not None:
        stmt = select(ScanRun).where(col(ScanRun.id).in_(ids)).order_by(col(ScanRun.started_at).desc())
    with Session(engine) as session:
        return [_run_view(r) for r in session.execute(stmt).scalars()]


def last_run(engine: Engine) -> RunView | None:
    found = runs(engine, limit=1)
    return found[0] if found else None


def control_defs(engine: Engine, catalog_digests: set[str]) -> dict[str, ControlView]:
    """Control descriptions; where several catalogue versions judged, the newest run's wins."""
    stmt = select(ControlDef).where(col(ControlDef.catalog_digest).in_(catalog_digests))
    out: dict[str, ControlView] = {}
    with Session(engine) as session:
        for c in session.execute(stmt).scalars():
            out[c.control_id] = ControlView(
                c.control_id, c.title, c.family, c.severity, c.rationale, c.remediation, dict(c.references)
            )
    return out


def system_defs(engine: Engine, inventory_digests: set[str]) -> dict[str, SystemView]:
    stmt = select(SystemDef).where(col(SystemDef.inventory_digest).in_(inventory_digests))
    out: dict[str, SystemView] = {}
    with Session(engine) as session:
        for s in session.execute(stmt).scalars():
            out[s.system_id] = SystemView(
                s.system_id, s.region_id, s.region_name, s.name, s.owner, s.criticality, s.fragile
            )
    return out


def count_findings(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(Finding)).scalar_one())

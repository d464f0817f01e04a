"""Read-only queries reports use. They return plain dataclasses, never ORM rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from scanner.results import ControlInfo, SystemInfo
from scanner.store import lifecycle
from scanner.store.models import ControlDef, Finding, FindingState, NoticeSent, RunFamilyAgg, ScanRun, SystemDef
from scanner.textsafe import clean_text, clean_value

# Endpoint id of a finding judged once per system (scanner.engine.SYSTEM_ENDPOINT_ID): its key `system/*` names no
# declared endpoint.
SYSTEM_LEVEL_ENDPOINT = "*"


def declared_endpoints(endpoint_keys: Iterable[str]) -> set[str]:
    """The declared endpoints among findings' endpoint keys, without the per-system pseudo-endpoints (`system/*`)."""
    return {key for key in endpoint_keys if key.rpartition("/")[2] != SYSTEM_LEVEL_ENDPOINT}


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
    resolved_at: datetime | None = None
    times_reopened: int = 0


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
    selection: dict[str, Any] = field(default_factory=dict)


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
        selection=dict(r.selection),
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


def _finding_view(f: Finding, s: FindingState | None) -> FindingView:
    return FindingView(
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
        message=clean_text(f.message),
        evidence=clean_value(dict(f.evidence)),
        observed_at=f.observed_at,
        first_seen_at=s.first_seen_at if s else None,
        last_verified_at=s.last_verified_at if s else f.observed_at,
        run_id=s.last_run_id if s else f.run_id,
        resolved_at=s.resolved_at if s else None,
        times_reopened=s.times_reopened if s else 0,
    )


def latest_findings(engine: Engine, region_id: str | None = None) -> list[FindingView]:
    """The newest verdict of every fingerprint in the region (all regions when None), whichever run judged it.

    `finding` holds a row per verdict change; `finding_state.finding_id` points at the current one.
    """
    # Plain columns, not ORM entities: a region of 60,000 findings loads several times faster.
    f, s = Finding.__table__.c, FindingState.__table__.c  # type: ignore[attr-defined]
    stmt = select(
        f.fingerprint, f.control_id, f.family, f.severity, f.region_id, f.system_id, f.endpoint_key, f.criticality,
        f.status, f.change, f.message, f.evidence, f.observed_at, s.first_seen_at, s.last_verified_at,
        s.last_run_id, s.resolved_at, s.times_reopened, s.latest_evidence,
    ).join(FindingState.__table__, f.id == s.finding_id)  # type: ignore[attr-defined]  # fmt: skip
    if region_id is not None:
        stmt = stmt.where(s.region_id == region_id)
    stmt = stmt.order_by(f.system_id, f.endpoint_key, f.control_id)
    with engine.connect() as conn:
        rows = list(conn.execute(stmt))
    # An unchanged verdict writes no new row: its volatile readings of the latest verification (clock skew, uptime,
    # log ages …) are on the state, laid over the row's evidence so reports and exports show the latest measurement.
    # A store written before target text was cleaned on entry may hold a lone surrogate (a JSON \ud83d escape in
    # evidence) or an escape character: cleaned on the way out too, so one old finding cannot stop a report.
    views = [(FindingView(*row[:-1]), row[-1]) for row in rows]
    return [
        replace(v, message=clean_text(v.message), evidence=clean_value({**v.evidence, **(latest or {})}))
        for v, latest in views
    ]


def changed_in_run(engine: Engine, region_id: str, run_id: int) -> list[FindingView]:
    """Verdicts that changed state in this run: every lifecycle label but `unchanged` and `waived`.

    (new, regressed, reactivated — waiver expired —, confirmed, fixed, reassessed, unassessed, no longer applicable;
    see scanner.store.lifecycle.)
    """
    stmt = (
        select(Finding, FindingState)
        .outerjoin(FindingState, col(Finding.fingerprint) == col(FindingState.fingerprint))
        .where(
            col(Finding.run_id) == run_id,
            col(Finding.region_id) == region_id,
            col(Finding.change).in_(lifecycle.NOTABLE),
        )
        .order_by(col(Finding.system_id), col(Finding.control_id))
    )
    with Session(engine) as session:
        return [_finding_view(f, s) for f, s in session.execute(stmt).all()]


@dataclass(frozen=True)
class RunPoint:
    """The region's state as of one run: each family's latest aggregate up to that run, summed."""

    run_id: int
    started_at: datetime
    w_pass: int
    w_total: int
    counts: dict[str, int]
    systems: int


_AGG_COUNTS = ("n_pass", "n_fail", "n_error", "n_waived", "n_not_applicable", "w_pass", "w_total")


def _narrowed(selection: Mapping[str, Any]) -> bool:
    """A run narrowed to some systems or controls judged part of a family: it cannot stand for the family."""
    return bool(selection.get("systems") or selection.get("controls"))


def region_history(engine: Engine, region_id: str, limit: int = 12) -> list[RunPoint]:
    """The region's state after each of its last `limit` complete runs, oldest first.

    Runs are often scheduled per family (nightly TLS, weekly patching), so one run's own verdicts are not the
    region's state: a point sums, for every family, the aggregate of the latest run up to it that judged that
    family. Runs narrowed to some systems or controls are left out. Aggregates written before migration 0006
    (family '') cover their whole run and stand alone while they are the newest; after an upgrade, the points until
    every family has been judged again show only the families judged since (an old row cannot be split by family)."""
    a = RunFamilyAgg.__table__.c  # type: ignore[attr-defined]
    stmt = (
        select(
            a.run_id,
            col(ScanRun.started_at),
            col(ScanRun.selection),
            a.family,
            a.n_systems,
            *(a[c] for c in _AGG_COUNTS),
        )
        .join(ScanRun, col(ScanRun.id) == a.run_id)
        .where(a.region_id == region_id, col(ScanRun.status) == "complete")
        .order_by(a.run_id)
    )
    rows_by_run: dict[int, list[Any]] = {}
    started: dict[int, datetime] = {}
    with engine.connect() as conn:
        for row in conn.execute(stmt):
            if _narrowed(row.selection or {}):
                continue
            rows_by_run.setdefault(int(row.run_id), []).append(row)
            started[int(row.run_id)] = row.started_at
    latest: dict[str, Any] = {}  # family → its newest row so far ('' = a whole pre-0006 run)
    points: list[RunPoint] = []
    for run_id in sorted(rows_by_run):
        for row in rows_by_run[run_id]:
            if row.family == "":
                latest = {"": row}
            else:
                latest.pop("", None)
                latest[row.family] = row
        sums = {c: sum(int(r._mapping[c]) for r in latest.values()) for c in _AGG_COUNTS}
        counts = {c.removeprefix("n_"): sums[c] for c in _AGG_COUNTS if c.startswith("n_")}
        systems = max((int(r.n_systems) for r in latest.values()), default=0)
        points.append(RunPoint(run_id, started[run_id], sums["w_pass"], sums["w_total"], counts, systems))
    return points[-limit:]


def notices_already_sent(engine: Engine, keys: list[str]) -> set[str]:
    found: set[str] = set()
    with Session(engine) as session:
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            found.update(session.execute(select(col(NoticeSent.key)).where(col(NoticeSent.key).in_(chunk))).scalars())
    return found


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

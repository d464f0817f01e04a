"""View models: what a report page shows, computed from store queries."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from scanner.models import Status
from scanner.report.scoring import FORMULA, Score, score
from scanner.store import queries
from scanner.store.queries import ControlView, FindingView, RunView, SystemView

_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
_STATUS_ORDER = {"fail": 0, "error": 1, "waived": 2, "pass": 3, "not_applicable": 4}


@dataclass(frozen=True)
class SystemSection:
    system: SystemView
    score: Score
    findings: list[FindingView]


@dataclass(frozen=True)
class RegionPage:
    region_id: str
    region_name: str
    generated_at: datetime
    score: Score
    formula: str
    systems: list[SystemSection]
    errors: list[FindingView]
    waived: list[FindingView]
    failures: list[FindingView]
    changes: dict[str, int]
    runs: list[RunView]
    controls: dict[str, ControlView]
    by_family: dict[str, Score] = field(default_factory=dict)


def _triples(findings: list[FindingView]) -> list[tuple[str, str, str]]:
    return [(f.status, f.severity, f.criticality) for f in findings]


def region_page(engine: Engine, region_id: str, generated_at: datetime) -> RegionPage:
    findings = queries.latest_findings(engine, region_id)
    run_ids = sorted({f.run_id for f in findings})
    runs = queries.runs(engine, ids=run_ids)
    controls = queries.control_defs(engine, {r.catalog_digest for r in runs})
    systems = queries.system_defs(engine, {r.inventory_digest for r in runs})
    per_system: dict[str, list[FindingView]] = defaultdict(list)
    for f in findings:
        per_system[f.system_id].append(f)
    sections = []
    for system_id, items in per_system.items():
        items.sort(key=lambda f: (_STATUS_ORDER.get(f.status, 9), _SEVERITY_ORDER.get(f.severity, 9), f.control_id))
        view = systems.get(system_id) or SystemView(system_id, region_id, region_id, system_id, "?", "medium", False)
        sections.append(SystemSection(view, score(_triples(items)), items))
    sections.sort(key=lambda s: (s.score.percent if s.score.percent is not None else -1.0, s.system.system_id))
    region_name = next((s.system.region_name for s in sections), region_id)
    families: dict[str, list[FindingView]] = defaultdict(list)
    for f in findings:
        families[f.family].append(f)
    latest_run = max(run_ids) if run_ids else None
    changes: dict[str, int] = defaultdict(int)
    for f in findings:
        if f.run_id == latest_run:
            changes[f.change] += 1
    by_severity = sorted(
        (f for f in findings if f.status == Status.FAIL.value),
        key=lambda f: (_SEVERITY_ORDER.get(f.severity, 9), f.system_id, f.control_id),
    )
    return RegionPage(
        region_id=region_id,
        region_name=region_name,
        generated_at=generated_at,
        score=score(_triples(findings)),
        formula=FORMULA,
        systems=sections,
        errors=[f for f in findings if f.status == Status.ERROR.value],
        waived=[f for f in findings if f.status == Status.WAIVED.value],
        failures=by_severity,
        changes=dict(changes),
        runs=runs,
        controls=controls,
        by_family={k: score(_triples(v)) for k, v in sorted(families.items())},
    )

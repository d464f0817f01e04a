"""View models: what a report page shows, computed from store queries (read-only)."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from scanner.models import Status
from scanner.report.scoring import FORMULA, Score, score, score_from_weights
from scanner.store import queries
from scanner.store.queries import ControlView, FindingView, RunPoint, RunView, SystemView

_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
_STATUS_ORDER = {"fail": 0, "error": 1, "waived": 2, "pass": 3, "not_applicable": 4}
FAMILIES = ("tls", "patching", "exposure", "availability", "logging")
DEFAULT_SLA_DAYS: dict[str, int] = {"critical": 7, "high": 30, "medium": 90, "low": 180}
# Framework lenses: the reference key in controls/*.yaml and how the report names it.
LENSES: tuple[tuple[str, str], ...] = (
    ("nis2", "NIS2 Art. 21(2)"),
    ("iso27001", "ISO/IEC 27001:2022 Annex A"),
    ("cis", "CIS Controls v8"),
    ("dk_strategy", "Danish health-sector strategy tracks"),
    ("hipaa", "HIPAA 164.312"),
)
EOL_CONTROLS = ("PAT-01", "PAT-03")
STALE_LOG_CONTROLS = ("LOG-01",)
CERT_CONTROL = "TLS-04"
CERT_WINDOWS = (30, 60, 90)


@dataclass(frozen=True)
class SystemSection:
    system: SystemView
    score: Score
    findings: list[FindingView]  # not passing: fail, error, waived — each with message, evidence, remediation
    n_passing: int  # passing and not-applicable findings, counted only (a page of 10,000 systems stays readable)
    endpoints: int  # declared endpoints with findings (not the system-level `system/*`)


@dataclass(frozen=True)
class TrendPoint:
    run_id: int
    started_at: datetime
    score: Score


@dataclass(frozen=True)
class Trend:
    points: list[TrendPoint]
    polyline: str  # SVG points "x,y x,y …" in a 0..width × 0..height box (y down)
    width: int
    height: int
    dots: list[tuple[float, float, str]]  # x, y, label

    @property
    def delta(self) -> float | None:
        pcts = [p.score.percent for p in self.points if p.score.percent is not None]
        return pcts[-1] - pcts[-2] if len(pcts) >= 2 else None


@dataclass(frozen=True)
class LensRow:
    requirement: str
    controls: list[str]
    counts: dict[str, int]
    score: Score


@dataclass(frozen=True)
class Lens:
    key: str
    name: str
    rows: list[LensRow]


@dataclass(frozen=True)
class Overdue:
    finding: FindingView
    due: date
    days_over: int


@dataclass(frozen=True)
class CertExpiry:
    finding: FindingView
    subject: str
    not_after: str
    days_left: int
    window: int  # 0 = already expired, else 30 / 60 / 90


@dataclass(frozen=True)
class WaiverView:
    finding: FindingView
    scope: str
    reason: str
    approved_by: str
    approved_on: str
    expires: str
    compensating_control: str
    days_left: int


@dataclass(frozen=True)
class AvailabilityRow:
    finding: FindingView
    lower: float | None
    upper: float | None
    target: float | None
    coverage: float | None
    outages: int
    longest_s: float
    instances: int | None = None  # a redundant service judged as a whole (sla.basis 'service'): its instance count


@dataclass(frozen=True)
class ControlFailures:
    control_id: str
    title: str
    severity: str
    n_fail: int
    n_systems: int


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
    n_endpoints: int = 0  # declared endpoints only, as `hcscan validate` counts them
    freshness: dict[str, datetime] = field(default_factory=dict)
    version_data: str | None = None
    trend: Trend | None = None
    lenses: list[Lens] = field(default_factory=list)
    new_failures: list[FindingView] = field(default_factory=list)
    regressions: list[FindingView] = field(default_factory=list)
    resolved: list[FindingView] = field(default_factory=list)
    reactivated: list[FindingView] = field(default_factory=list)
    confirmed: list[FindingView] = field(default_factory=list)  # error → fail: a failure newly confirmed
    reassessed: list[FindingView] = field(default_factory=list)  # error → pass: assessed again, passes
    unassessed: list[FindingView] = field(default_factory=list)  # → error: could no longer be assessed
    no_longer_applicable: list[FindingView] = field(default_factory=list)  # → not_applicable
    overdue: list[Overdue] = field(default_factory=list)
    sla_days: dict[str, int] = field(default_factory=dict)
    worst_systems: list[SystemSection] = field(default_factory=list)
    most_failed: list[ControlFailures] = field(default_factory=list)
    certificates: list[CertExpiry] = field(default_factory=list)
    eol: list[FindingView] = field(default_factory=list)
    availability: list[AvailabilityRow] = field(default_factory=list)
    stale_logs: list[FindingView] = field(default_factory=list)
    waivers_active: list[WaiverView] = field(default_factory=list)
    waivers_expired: list[WaiverView] = field(default_factory=list)
    crit_high_open: int = 0
    systems_not_assessed: int = 0
    waivers_expiring_30: int = 0
    demo_history: bool = False


def _triples(findings: list[FindingView]) -> list[tuple[str, str, str]]:
    return [(f.status, f.severity, f.criticality) for f in findings]


def build_trend(points: list[RunPoint], width: int = 640, height: int = 180, pad: int = 24) -> Trend:
    """Score per run as an inline SVG polyline (no external assets); y axis 0–100 %."""
    tps = [TrendPoint(p.run_id, p.started_at, score_from_weights(p.w_pass, p.w_total, p.counts)) for p in points]
    n = len(tps)
    coords: list[tuple[float, float, str]] = []
    for i, tp in enumerate(tps):
        if tp.score.percent is None:
            continue
        x = pad + (width - 2 * pad) * (i / (n - 1) if n > 1 else 0.5)
        y = pad + (height - 2 * pad) * (1 - tp.score.percent / 100.0)
        coords.append((round(x, 1), round(y, 1), f"#{tp.run_id} {tp.started_at:%Y-%m-%d}: {tp.score.label}"))
    return Trend(tps, " ".join(f"{x},{y}" for x, y, _ in coords), width, height, coords)


def _days_left(iso: str, today: date) -> int | None:
    try:
        when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (when.date() - today).days


def _waiver_view(f: FindingView, today: date) -> WaiverView | None:
    w = f.evidence.get("waiver")
    if not isinstance(w, dict):
        if f.status != Status.WAIVED.value:
            return None
        # Stored before waivers carried their details: the message still names them.
        w = {"expires": str(f.evidence.get("waiver_expires", "")), "reason": f.message}
    expires = str(w.get("expires", ""))
    left = _days_left(expires, today)
    return WaiverView(
        f,
        str(w.get("scope", "")),
        str(w.get("reason", "")),
        str(w.get("approved_by", "")),
        str(w.get("approved_on", "")),
        expires,
        str(w.get("compensating_control", "")),
        left if left is not None else 0,
    )


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _lenses(findings: list[FindingView], controls: dict[str, ControlView]) -> list[Lens]:
    out: list[Lens] = []
    for key, name in LENSES:
        by_req: dict[str, list[FindingView]] = defaultdict(list)
        req_controls: dict[str, set[str]] = defaultdict(set)
        for f in findings:
            c = controls.get(f.control_id)
            for req in (c.references.get(key) or []) if c else []:
                by_req[str(req)].append(f)
                req_controls[str(req)].add(f.control_id)
        rows = [
            LensRow(req, sorted(req_controls[req]), score(_triples(items)).counts, score(_triples(items)))
            for req, items in sorted(by_req.items())
        ]
        if rows:
            out.append(Lens(key, name, rows))
    return out


def region_page(
    engine: Engine,
    region_id: str,
    generated_at: datetime,
    sla_days: dict[str, int] | None = None,
    findings: list[FindingView] | None = None,
) -> RegionPage:
    """Everything the region page shows, from the store alone."""
    sla = {**DEFAULT_SLA_DAYS, **(sla_days or {})}
    today = generated_at.astimezone(UTC).date()
    if findings is None:
        findings = queries.latest_findings(engine, region_id)
    run_ids = sorted({f.run_id for f in findings})
    runs = queries.runs(engine, ids=run_ids)
    controls = queries.control_defs(engine, {r.catalog_digest for r in runs})
    systems = queries.system_defs(engine, {r.inventory_digest for r in runs})
    per_system: dict[str, list[FindingView]] = defaultdict(list)
    for f in findings:
        per_system[f.system_id].append(f)
    sections: list[SystemSection] = []
    for system_id, items in per_system.items():
        shown = [f for f in items if f.status in (Status.FAIL.value, Status.ERROR.value, Status.WAIVED.value)]
        shown.sort(key=lambda f: (_STATUS_ORDER.get(f.status, 9), _SEVERITY_ORDER.get(f.severity, 9), f.control_id))
        view = systems.get(system_id) or SystemView(system_id, region_id, region_id, system_id, "?", "medium", False)
        n_ep = len(queries.declared_endpoints(f.endpoint_key for f in items))
        sections.append(SystemSection(view, score(_triples(items)), shown, len(items) - len(shown), n_ep))
    sections.sort(key=lambda s: (s.score.percent if s.score.percent is not None else -1.0, s.system.system_id))
    region_name = next((s.system.region_name for s in sections), region_id)

    families: dict[str, list[FindingView]] = defaultdict(list)
    freshness: dict[str, datetime] = {}
    for f in findings:
        families[f.family].append(f)
        if f.status != Status.ERROR.value and (f.family not in freshness or f.last_verified_at > freshness[f.family]):
            freshness[f.family] = f.last_verified_at
    order = {fam: i for i, fam in enumerate(FAMILIES)}
    by_family = {
        k: score(_triples(v)) for k, v in sorted(families.items(), key=lambda kv: (order.get(kv[0], 99), kv[0]))
    }
    version_data = next(
        (str(f.evidence["versiondata.generated"]) for f in findings if f.evidence.get("versiondata.generated")), None
    )

    latest_run = max(run_ids) if run_ids else None
    changed = queries.changed_in_run(engine, region_id, latest_run) if latest_run is not None else []
    changes = Counter(f.change for f in changed)

    failures = sorted(
        (f for f in findings if f.status == Status.FAIL.value),
        key=lambda f: (_SEVERITY_ORDER.get(f.severity, 9), f.system_id, f.control_id),
    )
    overdue: list[Overdue] = []
    for f in findings:
        if f.status in (Status.FAIL.value, Status.ERROR.value) and f.first_seen_at is not None:
            due = f.first_seen_at.date() + timedelta(days=sla.get(f.severity, 180))
            if due < today:
                overdue.append(Overdue(f, due, (today - due).days))
    overdue.sort(key=lambda o: (_SEVERITY_ORDER.get(o.finding.severity, 9), -o.days_over, o.finding.endpoint_key))

    fail_count: Counter[str] = Counter(f.control_id for f in failures)
    fail_systems: dict[str, set[str]] = defaultdict(set)
    for f in failures:
        fail_systems[f.control_id].add(f.system_id)
    most_failed = [
        ControlFailures(
            cid,
            controls[cid].title if cid in controls else "",
            controls[cid].severity if cid in controls else "",
            n,
            len(fail_systems[cid]),
        )
        for cid, n in sorted(fail_count.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    ]

    by_endpoint_subject: dict[str, str] = {}
    for f in findings:
        subj = f.evidence.get("tls.leaf.subject")
        if isinstance(subj, str) and subj:
            by_endpoint_subject[f.endpoint_key] = subj
    certificates: list[CertExpiry] = []
    for f in findings:
        if f.control_id != CERT_CONTROL or not isinstance(f.evidence.get("tls.leaf.not_after"), str):
            continue
        not_after = str(f.evidence["tls.leaf.not_after"])
        left = _days_left(not_after, today)
        if left is None or left > CERT_WINDOWS[-1]:
            continue
        window = 0 if left < 0 else next(w for w in CERT_WINDOWS if left <= w)
        certificates.append(CertExpiry(f, by_endpoint_subject.get(f.endpoint_key, ""), not_after, left, window))
    certificates.sort(key=lambda c: (c.days_left, c.finding.endpoint_key))

    eol = [f for f in findings if f.control_id in EOL_CONTROLS and f.status in (Status.FAIL.value, Status.WAIVED.value)]
    stale = [f for f in findings if f.control_id in STALE_LOG_CONTROLS and f.status != Status.PASS.value]
    stale = [f for f in stale if f.status != Status.NOT_APPLICABLE.value]
    availability = [
        AvailabilityRow(
            f,
            _float(f.evidence.get("sla.lower_percent")),
            _float(f.evidence.get("sla.upper_percent")),
            _float(f.evidence.get("sla.target_percent")),
            _float(f.evidence.get("sla.coverage_percent")),
            int(f.evidence.get("sla.outage_count") or 0),
            float(f.evidence.get("sla.longest_outage_seconds") or 0.0),
            int(f.evidence.get("sla.instances_declared") or 0) if f.evidence.get("sla.basis") == "service" else None,
        )
        for f in findings
        # SLA findings (AVL-01 per endpoint, AVL-04 per redundant service, or an admin's own on the same facts);
        # an instance judged with its service is not a row of its own
        if (f.control_id in ("AVL-01", "AVL-04") or "sla.lower_percent" in f.evidence)
        and f.status != Status.NOT_APPLICABLE.value
    ]

    waivers_active = [w for f in findings if f.status == Status.WAIVED.value if (w := _waiver_view(f, today))]
    waivers_expired = [
        w
        for f in findings
        if f.status == Status.FAIL.value and isinstance(f.evidence.get("waiver"), dict)
        if (w := _waiver_view(f, today))
    ]
    waivers_active.sort(key=lambda w: (w.expires, w.finding.endpoint_key))
    errors = [f for f in findings if f.status == Status.ERROR.value]
    crit_high = sum(1 for f in findings if f.status == Status.FAIL.value and f.severity in ("critical", "high"))
    history = queries.region_history(engine, region_id, 12)
    return RegionPage(
        region_id=region_id,
        region_name=region_name,
        generated_at=generated_at,
        score=score(_triples(findings)),
        formula=FORMULA,
        systems=sections,
        errors=errors,
        waived=[f for f in findings if f.status == Status.WAIVED.value],
        failures=failures,
        changes=dict(changes),
        runs=runs,
        controls=controls,
        by_family=by_family,
        n_endpoints=len(queries.declared_endpoints(f.endpoint_key for f in findings)),
        freshness=freshness,
        version_data=version_data,
        trend=build_trend(history),
        lenses=_lenses(findings, controls),
        new_failures=[f for f in changed if f.change == "new" and f.status == Status.FAIL.value],
        regressions=[f for f in changed if f.change == "regressed"],
        resolved=[f for f in changed if f.change == "fixed"],
        reactivated=[f for f in changed if f.change == "reactivated"],
        confirmed=[f for f in changed if f.change == "confirmed"],
        reassessed=[f for f in changed if f.change == "reassessed"],
        unassessed=[f for f in changed if f.change == "unassessed"],
        no_longer_applicable=[f for f in changed if f.change == "no_longer_applicable"],
        overdue=overdue,
        sla_days=sla,
        worst_systems=[s for s in sections if s.score.percent is not None and s.score.percent < 100.0][:10],
        most_failed=most_failed,
        certificates=certificates,
        eol=eol,
        availability=availability,
        stale_logs=stale,
        waivers_active=waivers_active,
        waivers_expired=waivers_expired,
        crit_high_open=crit_high,
        systems_not_assessed=len({f.system_id for f in errors}),
        waivers_expiring_30=sum(1 for w in waivers_active if w.days_left <= 30),
        demo_history=any(r.selection.get("demo_history") for r in queries.runs(engine, limit=50)),
    )

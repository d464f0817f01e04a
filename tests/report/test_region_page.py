"""The region page's content, computed from a three-run store: trend, changes, waivers, SLAs, certificates."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from scanner.models import Status
from scanner.report.i18n import LABELS
from scanner.report.notices import due_notices
from scanner.report.render import render_reports
from scanner.report.scoring import score
from scanner.report.views import region_page
from scanner.results import FindingRecord, RunMeta
from scanner.store import lifecycle, queries, repo
from scanner.store.db import open_store
from tests.report.history import HOSTILE, NOW, build_history, week


@pytest.fixture
def store(tmp_path: Path) -> Engine:
    engine = open_store(f"sqlite:///{tmp_path / 'h.db'}")
    build_history(engine)
    return engine


def test_unchanged_verdicts_write_no_new_finding_rows(store: Engine) -> None:
    # 8 fingerprints; week 1 changes 3 verdicts (TLS-01 epj, TLS-07 epj fixed), week 2 changes 3 (regress, expire, error)
    assert queries.count_findings(store) < 3 * len(week(0))
    latest = {(f.control_id, f.system_id): f for f in queries.latest_findings(store, "r1")}
    assert latest[("TLS-07", "pacs")].status == "fail" and latest[("TLS-04", "epj")].status == "pass"


def test_trend_and_score_come_from_per_run_aggregates(store: Engine) -> None:
    page = region_page(store, "r1", NOW)
    assert page.trend is not None and len(page.trend.points) == 3
    for point, n in zip(page.trend.points, range(3), strict=True):
        expected = score([(r.status.value, r.severity, r.criticality) for r in week(n)])
        assert point.score.percent == pytest.approx(expected.percent)
    assert page.score.percent == pytest.approx(page.trend.points[-1].score.percent)


def test_what_changed_since_the_previous_scan(store: Engine) -> None:
    page = region_page(store, "r1", NOW)
    assert [(f.control_id, f.system_id) for f in page.regressions] == [("TLS-01", "epj")]
    assert [(f.control_id, f.system_id) for f in page.reactivated] == [("TLS-07", "pacs")]
    assert page.resolved == [] and page.new_failures == []
    # pump TLS-07 passed, then could not be assessed: not a regression, and said so.
    assert [(f.control_id, f.system_id) for f in page.unassessed] == [("TLS-07", "pump")]
    assert page.confirmed == [] and page.reassessed == [] and page.no_longer_applicable == []


def test_every_lifecycle_label_reads_in_english_and_danish(store: Engine, tmp_path: Path) -> None:
    for label in lifecycle.LABELS:
        entry = LABELS[f"change_{label}"]
        assert entry["en"] and entry["da"] and entry["en"] != entry["da"], label
    for label in ("confirmed", "reassessed", "unassessed", "no_longer_applicable"):
        assert LABELS[label]["en"] and LABELS[label]["da"]
    en = render_reports(store, tmp_path / "en", now=NOW)[0].read_text()
    assert 'data-testid="changes-unassessed">1<' in en and "Could no longer be assessed (1)" in en
    assert '<span data-change="unassessed">could no longer be assessed</span>' in en
    da = render_reports(store, tmp_path / "da", language="da", now=NOW)[0].read_text()
    assert "Kunne ikke længere vurderes (1)" in da and '<span data-change="regressed">fejler igen</span>' in da


def test_a_newly_confirmed_critical_failure_is_noticed(tmp_path: Path) -> None:
    """error → fail of a critical control was `unchanged` before: now `confirmed`, and a new-critical notice."""
    engine = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    meta = RunMeta("0.1.0", "c" * 64, "i" * 64, "f" * 64, {}, ["r1"], "h", 1)
    for n, status in enumerate((Status.ERROR, Status.FAIL)):
        when = NOW - timedelta(days=2 - n)
        record = FindingRecord(
            "TLS-04", "tls", "critical", "r1", "pump", "pump/mgmt", "high", status, f"{status.value}", {}
        )
        repo.complete_run(engine, repo.start_run(engine, meta, when), [record], when)
    (latest,) = queries.latest_findings(engine, "r1")
    assert latest.change == "confirmed"
    assert [n.kind for n in due_notices(engine, NOW)] == ["new_critical"]


def test_waivers_sla_certificates_logs_and_lenses(store: Engine) -> None:
    page = region_page(store, "r1", NOW)
    assert [(w.finding.control_id, w.expires, w.days_left) for w in page.waivers_active] == [
        ("TLS-01", "2026-12-03", 10)
    ]
    assert [w.finding.control_id for w in page.waivers_expired] == ["TLS-07"]
    assert page.waivers_expired[0].compensating_control == "Reverse proxy, internal only"
    assert page.waivers_expiring_30 == 1
    overdue = {(o.finding.control_id, o.finding.system_id): o for o in page.overdue}
    assert ("TLS-04", "pump") in overdue and overdue[("TLS-04", "pump")].days_over == 14 - 7
    assert ("LOG-01", "pacs") not in overdue  # high: 30 days, failing for 14
    certs = {c.finding.system_id: c for c in page.certificates}
    assert certs["epj"].window == 30 and certs["epj"].subject == HOSTILE and certs["pump"].window == 0
    assert [f.system_id for f in page.stale_logs] == ["pacs"]
    nis2 = next(lens for lens in page.lenses if lens.key == "nis2")
    h = next(r for r in nis2.rows if r.requirement == "21(2)(h)")
    assert h.counts["fail"] == 3 and h.counts["error"] == 1 and h.counts["waived"] == 1
    assert {lens.key for lens in page.lenses} >= {"nis2", "iso27001", "cis", "dk_strategy"}
    assert [e.control_id for e in page.errors] == ["TLS-07"]


def test_rendered_page_in_english_and_danish(store: Engine, tmp_path: Path) -> None:
    en = render_reports(store, tmp_path / "en", now=NOW)[0].read_text()
    assert "Overdue remediation (1)" in en and "Waiver expired — counts again" in en
    assert "<polyline" in en and 'data-testid="trend"' in en
    assert "<script>alert" not in en and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&#34;quoted&#34;" in en
    da = render_reports(store, tmp_path / "da", language="da", now=NOW)
    html = da[0].read_text()
    assert '<html lang="da">' in html and "Overskredne udbedringsfrister (1)" in html and "Dispensationer" in html
    assert "Sundhedsvæsenets informationssikkerhed" in da[1].read_text()


def test_availability_table_shows_endpoints_and_redundant_services_not_their_instances(tmp_path: Path) -> None:
    from scanner.results import ControlInfo, SystemInfo

    engine = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    controls = tuple(
        ControlInfo(cid, f"SLA {cid}", "availability", "high", "Why.", "Fix.", {"nis2": ["21(2)(c)"]})
        for cid in ("AVL-01", "AVL-04")
    )
    systems = (SystemInfo("lis", "r1", "Region Test", "Lab system", "Lab IT", "critical", False),)
    meta = RunMeta("0.1.0", "c" * 64, "i" * 64, "f" * 64, {}, ["r1"], "h", 1, controls=controls, systems=systems)

    def sla(basis: str, lower: float, **more: object) -> dict[str, object]:
        return {"sla.basis": basis, "sla.lower_percent": lower, "sla.upper_percent": lower,
                "sla.coverage_percent": 100.0, "sla.target_percent": 99.9, "sla.outage_count": 1,
                "sla.longest_outage_seconds": 120.0, **more}  # fmt: skip

    def rec(cid: str, key: str, status: Status, ev: dict[str, object]) -> FindingRecord:
        return FindingRecord(cid, "availability", "high", "r1", "lis", key, "critical", status, "m", ev)

    records = [
        rec("AVL-01", "lis/admin", Status.FAIL, sla("endpoint", 98.0)),
        rec("AVL-01", "lis/a", Status.NOT_APPLICABLE, sla("instance", 80.0)),
        rec("AVL-01", "lis/b", Status.NOT_APPLICABLE, sla("instance", 75.0)),
        rec("AVL-04", "lis/*", Status.FAIL, sla("service", 90.0, **{"sla.instances_declared": 2})),
    ]
    run_id = repo.start_run(engine, meta, NOW)
    repo.complete_run(engine, run_id, records, NOW + timedelta(minutes=1))
    page = region_page(engine, "r1", NOW)
    rows = {(a.finding.endpoint_key, a.lower, a.instances) for a in page.availability}
    assert rows == {("lis/admin", 98.0, None), ("lis/*", 90.0, 2)}
    html = render_reports(engine, tmp_path / "out", now=NOW)[0].read_text()
    assert "service: any of 2 instances" in html
    da = render_reports(engine, tmp_path / "da", language="da", now=NOW)[0].read_text()
    assert "tjeneste: en af 2 instanser" in da


def test_the_header_counts_declared_endpoints_not_system_level_findings(tmp_path: Path) -> None:
    """Issue 12.7: "32 endpoints" where `validate` said 18 — each system-level finding (`system/*`) counted as one."""
    from scanner.engine import SYSTEM_ENDPOINT_ID
    from tests.report.history import CONTROLS, SYSTEMS

    assert queries.SYSTEM_LEVEL_ENDPOINT == SYSTEM_ENDPOINT_ID  # the store names the engine's pseudo-endpoint

    def rec(control: str, system: str, endpoint: str, status: Status) -> FindingRecord:
        c = next(c for c in CONTROLS if c.control_id == control)
        s = next(s for s in SYSTEMS if s.system_id == system)
        return FindingRecord(
            control, c.family, c.severity, "r1", system, f"{system}/{endpoint}", s.criticality, status, "m", {}
        )

    records = [
        rec("TLS-01", "epj", "web", Status.PASS),
        rec("TLS-04", "epj", "web", Status.FAIL),
        rec("TLS-01", "epj", "api", Status.PASS),
        rec("LOG-01", "epj", SYSTEM_ENDPOINT_ID, Status.FAIL),  # judged once for the system
        rec("TLS-01", "pacs", "viewer", Status.PASS),
        rec("LOG-01", "pacs", SYSTEM_ENDPOINT_ID, Status.ERROR),
        rec("LOG-01", "pump", SYSTEM_ENDPOINT_ID, Status.PASS),  # a system whose only finding is system-level
    ]
    engine = open_store(f"sqlite:///{tmp_path / 'e.db'}")
    meta = RunMeta("0.1.0", "c" * 64, "i" * 64, "f" * 64, {}, ["r1"], "h", 1, controls=CONTROLS, systems=SYSTEMS)
    run_id = repo.start_run(engine, meta, NOW)
    repo.complete_run(engine, run_id, records, NOW + timedelta(minutes=1))
    page = region_page(engine, "r1", NOW + timedelta(minutes=2))
    assert page.n_endpoints == 3  # epj/web, epj/api, pacs/viewer
    assert {s.system.system_id: s.endpoints for s in page.systems} == {"epj": 2, "pacs": 1, "pump": 0}
    html = render_reports(engine, tmp_path / "out", now=NOW + timedelta(minutes=2))[0].read_text()
    assert 'data-testid="n-systems">3</span> systems, 3 endpoints' in html
    engine.dispose()

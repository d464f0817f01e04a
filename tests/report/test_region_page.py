"""The region page's content, computed from a three-run store: trend, changes, waivers, SLAs, certificates."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from scanner.report.render import render_reports
from scanner.report.scoring import score
from scanner.report.views import region_page
from scanner.store import queries
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

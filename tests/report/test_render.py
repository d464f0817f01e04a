"""Region report: renders from the store only, escapes what came from targets, shows the store's numbers."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from scanner.models import Status
from scanner.report.render import render_reports
from scanner.report.scoring import score
from scanner.results import ControlInfo, FindingRecord, RunMeta, SystemInfo
from scanner.store import repo
from scanner.store.db import open_store

HOSTILE = "<script>document.title='pwned'</script>\"'><img src=x onerror=alert(1)>"
ARTIFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artifacts"


@pytest.fixture
def store(tmp_path: Path) -> Engine:
    engine = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    controls = tuple(
        ControlInfo(cid, f"Title of {cid}", "tls", sev, "Why it matters.", "How to fix it.", {"nis2": ["21(2)(h)"]})
        for cid, sev in (("TLS-01", "high"), ("TLS-07", "medium"))
    )
    systems = (
        SystemInfo("epj", "r1", "Region Test", "EPJ front end", "EPJ team", "critical", False),
        SystemInfo("pump", "r1", "Region Test", "Infusion pump gateway", "Medico", "high", True),
    )
    meta = RunMeta("0.1.0", "c" * 64, "i" * 64, "f" * 64, {}, ["r1"], "h", 1, controls=controls, systems=systems)
    run_id = repo.start_run(engine, meta, datetime(2026, 11, 22, tzinfo=UTC))
    records = [
        FindingRecord(
            "TLS-01",
            "tls",
            "high",
            "r1",
            "epj",
            "epj/web",
            "critical",
            Status.FAIL,
            "TLS 1.0 offered; " + HOSTILE,
            {"tls.leaf.subject": HOSTILE},
        ),
        FindingRecord("TLS-07", "tls", "medium", "r1", "epj", "epj/web", "critical", Status.PASS, "HSTS one year", {}),
        FindingRecord(
            "TLS-01", "tls", "high", "r1", "pump", "pump/mgmt", "high", Status.ERROR, "could not assess: timeout", {}
        ),
        FindingRecord(
            "TLS-07", "tls", "medium", "r1", "pump", "pump/mgmt", "high", Status.WAIVED, "waived until 2027-01-01", {}
        ),
    ]
    repo.complete_run(engine, run_id, records, datetime(2026, 11, 22, 0, 5, tzinfo=UTC))
    return engine


def test_render_writes_region_and_index_with_store_numbers(store: Engine, tmp_path: Path) -> None:
    paths = render_reports(store, tmp_path / "out")
    assert [p.name for p in paths] == ["region-r1.html", "index.html"]
    html = paths[0].read_text()
    expected = score([("fail", "high", "critical"), ("pass", "medium", "critical"), ("error", "high", "high")])
    assert f'data-testid="score">{expected.label}<' in html
    assert 'data-testid="count-fail">1<' in html and 'data-testid="count-error">1<' in html
    assert 'data-testid="count-waived">1<' in html
    assert "Could not assess (1)" in html and 'data-testid="waivers-active">1<' in html
    assert "Score = " in html  # the formula is printed
    assert "Infusion pump gateway" in html and "fragile" in html


def test_target_strings_are_escaped(store: Engine, tmp_path: Path) -> None:
    html = render_reports(store, tmp_path / "out")[0].read_text()
    assert "<script>document.title" not in html
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in html
    assert "<img src=x" not in html


def test_report_loads_nothing_from_the_network(store: Engine, tmp_path: Path) -> None:
    html = render_reports(store, tmp_path / "out")[0].read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "default-src 'none'" in html


@pytest.mark.browser
def test_report_in_headless_chromium(store: Engine, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian chromium is not installed (make test installs it)")
    page = render_reports(store, tmp_path / "out")[0]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "region-report.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--proxy-server=127.0.0.1:9",  # Chromium's own background calls must not leave the machine
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<title>Region Test — hcscan compliance report</title>" in dom.stdout  # the hostile title never ran
    assert "&lt;script&gt;document.title" in dom.stdout
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1280,1800", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000

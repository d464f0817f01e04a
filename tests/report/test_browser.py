"""The region and overview pages in real headless Chromium: no console errors, no network requests, the store's
numbers on the page, hostile certificate subjects shown as text; screenshots under out/test-artifacts/."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from scanner.report.render import render_reports
from scanner.report.views import region_page
from scanner.store.db import open_store
from tests.report.history import NOW, build_history

ARTIFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artifacts"
pytestmark = pytest.mark.browser


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Debian chromium is not installed (make test installs it)")
    return found


def _run(chromium: str, tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-quic", "--enable-logging=stderr", "--v=0",
        # Nothing may leave the machine: Chromium's own background calls (time, accounts) hit a closed proxy.
        "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={tmp / 'profile'}", f"--log-net-log={tmp / 'netlog.json'}", "--net-log-capture-mode=Default",
    ]  # fmt: skip
    return subprocess.run([chromium, *flags, *extra, url], capture_output=True, text=True, timeout=120)


def test_region_and_overview_in_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    engine = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    build_history(engine)
    region, index = render_reports(engine, tmp_path / "out", now=NOW)
    page = region_page(engine, "r1", NOW)
    dom = _run(chromium, tmp_path, region.as_uri(), "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not re.search(r"CONSOLE\(\d+\)|Uncaught|Refused to", dom.stderr), dom.stderr[-2000:]
    html = dom.stdout
    assert f'data-testid="score">{page.score.label}<' in html
    for status in ("pass", "fail", "error", "waived"):
        assert f'data-testid="count-{status}">{page.score.counts[status]}<' in html
    assert f'data-testid="overdue-count">{len(page.overdue)}<' in html
    assert 'data-testid="changes-regressed">1<' in html and 'data-testid="waivers-expired">1<' in html
    assert "<title>Region Test — hcscan compliance report</title>" in html  # the hostile subject never ran
    assert "&lt;script&gt;alert('x')&lt;/script&gt;\"quoted\" CN=evil" in html  # shown as text
    urls = re.findall(r'"url":"([^"]+)"', (tmp_path / "netlog.json").read_text(errors="replace"))
    # Only Chromium's own service calls (blocked by the proxy above) may appear; the page requests nothing.
    internal = re.compile(r"^https?://[a-z0-9.-]*(google\.com|googleapis\.com|gstatic\.com|gvt1\.com)[/:]")
    assert not [u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:")) and not internal.match(u)], urls
    overview = _run(chromium, tmp_path, index.as_uri(), "--dump-dom")
    assert f'data-testid="score-r1">{page.score.label}<' in overview.stdout
    assert 'data-testid="waivers-expiring-r1">1<' in overview.stdout
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for src, name in ((region, "region-history.png"), (index, "overview-history.png")):
        shot = ARTIFACTS / name
        _run(chromium, tmp_path, src.as_uri(), f"--screenshot={shot}", "--window-size=1280,2400")
        assert shot.stat().st_size > 10_000

"""`hcscan data update` against recorded endoflife.date, CISA KEV and NVD answers served over HTTPS on 127.0.0.1.

The answers are small hand-made documents in the shape of the real APIs (endoflife.date `/api/v1/products/<slug>`,
CISA `known_exploited_vulnerabilities.json`, NVD `/rest/json/cves/2.0?cveId=`); the server's certificate comes from
a test-made CA that the config names as the CA bundle. Every bad answer must leave the data file byte for byte as
it was and exit non-zero with a message naming what went wrong; the good one updates and keeps the previous file.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scanner.cli import main
from scanner.lab.certs import CertSpec, LabPKI
from scanner.versiondata import load_version_data
from scanner.versiondata.importer import cycles_from_endoflife
from scanner.versiondata.model import Cycle, Product
from scanner.versiondata.update import RateLimiter, fit_cycles
from tests.agent.conftest import AgentProcess
from tests.helpers import make_workspace as make_agent_workspace
from tests.helpers import system, write_yaml

PROXY_VARS = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)

# -- recorded answers -------------------------------------------------------------------------------------------


def eol_product(slug: str, releases: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "schema_version": "1.2.0",
        "generated_at": "2026-12-01T06:00:00+00:00",
        "last_modified": "2026-11-30T12:00:00+00:00",
        "result": {"name": slug, "label": slug.title(), "category": "server-app", "releases": releases},
    }


def release(name: str, released: str, eol: str | None, latest: str, latest_date: str) -> dict[str, Any]:
    return {
        "name": name,
        "codename": None,
        "label": name,
        "releaseDate": released,
        "isLts": False,
        "isEol": eol is not None,
        "eolFrom": eol,
        "isMaintained": eol is None,
        "latest": {"name": latest, "date": latest_date, "link": None},
    }


NGINX = eol_product(
    "nginx",
    [
        release("1.29", "2025-06-24", None, "1.29.3", "2025-10-28"),
        release("1.28", "2025-04-23", "2026-04-21", "1.28.1", "2025-08-13"),
    ],
)
TOMCAT = eol_product(
    "tomcat",
    [
        release("11.0", "2024-10-03", None, "11.0.14", "2025-11-12"),
        release("10.1", "2022-09-23", None, "10.1.49", "2025-11-12"),
        release("9.0", "2017-09-27", None, "9.0.112", "2025-11-12"),
        release("7.0", "2010-06-29", "2021-03-31", "7.0.109", "2021-04-28"),  # a line the data does not track
    ],
)


def kev_item(cve: str, vendor: str, product: str, name: str, added: str) -> dict[str, Any]:
    return {
        "cveID": cve,
        "vendorProject": vendor,
        "product": product,
        "vulnerabilityName": name,
        "dateAdded": added,
        "shortDescription": "",
        "requiredAction": "Apply mitigations per vendor instructions.",
        "dueDate": added,
        "knownRansomwareCampaignUse": "Unknown",
        "notes": "",
        "cwes": [],
    }


KEV_ITEMS = [
    kev_item("CVE-2020-1938", "Apache", "Tomcat", "Apache Tomcat Improper Privilege Management", "2022-03-03"),
    kev_item("CVE-2025-24813", "Apache", "Tomcat", "Apache Tomcat Path Equivalence\x1b[2J", "2025-04-01"),
    kev_item("CVE-2023-43208", "NextGen Healthcare", "Mirth Connect", "Mirth Connect Deserialization", "2024-05-20"),
    kev_item("CVE-2021-44228", "Apache", "Log4j2", "Apache Log4j2 Remote Code Execution", "2021-12-10"),
]


def kev_catalogue(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "title": "CISA Catalog of Known Exploited Vulnerabilities",
        "catalogVersion": "2026.12.01",
        "dateReleased": "2026-12-01T14:00:00.000Z",
        "count": len(items),
        "vulnerabilities": items,
    }


def tomcat_match(start: str, end: str) -> dict[str, Any]:
    return {
        "vulnerable": True,
        "criteria": "cpe:2.3:a:apache:tomcat:*:*:*:*:*:*:*:*",
        "versionStartIncluding": start,
        "versionEndExcluding": end,
        "matchCriteriaId": "00000000-0000-0000-0000-000000000000",
    }


def nvd_answer(cve: str, matches: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "resultsPerPage": 1,
        "startIndex": 0,
        "totalResults": 1,
        "format": "NVD_CVE",
        "version": "2.0",
        "timestamp": "2026-12-01T15:00:00.000",
        "vulnerabilities": [
            {
                "cve": {
                    "id": cve,
                    "sourceIdentifier": "security@apache.org",
                    "published": "2020-02-24T22:15:00.000",
                    "vulnStatus": "Analyzed",
                    "configurations": [{"nodes": [{"operator": "OR", "negate": False, "cpeMatch": matches}]}],
                }
            }
        ],
    }


NVD = {
    "CVE-2020-1938": nvd_answer(
        "CVE-2020-1938",
        [tomcat_match("7.0.0", "7.0.100"), tomcat_match("8.5.0", "8.5.51"), tomcat_match("9.0.0", "9.0.31")],
    ),
    "CVE-2025-24813": nvd_answer(
        "CVE-2025-24813",
        [
            tomcat_match("9.0.0.M1", "9.0.99"),
            tomcat_match("10.1.0-M1", "10.1.35"),
            tomcat_match("11.0.0-M1", "11.0.3"),
        ],
    ),
}


# -- the HTTPS server -------------------------------------------------------------------------------------------


@dataclass
class Answer:
    body: bytes
    status: int = 200
    delay_s: float = 0.0  # before the status line
    trickle_s: float = 0.0  # between the body's 16-byte pieces
    claimed_length: int | None = None  # Content-Length sent (None: the body's length; -1: none, close-delimited)
    headers: dict[str, str] = field(default_factory=dict)


def as_answer(doc: Any, **kwargs: Any) -> Answer:
    return Answer(json.dumps(doc).encode(), **kwargs)


class RecordedApis:
    """An HTTPS server on 127.0.0.1 answering GETs by path and query from `routes`; it records what it was asked."""

    def __init__(self, pki: LabPKI) -> None:
        issued = pki.issue(CertSpec(), "127.0.0.1", "recorded-apis")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(issued.chain_pem, issued.key_pem)
        self.routes: dict[str, Answer] = {}
        self.first: dict[str, list[Answer]] = {}  # answers given before the route's, once each, in order
        self.asked: list[tuple[str, dict[str, str]]] = []
        apis = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                apis.asked.append((self.path, dict(self.headers.items())))
                queued = apis.first.get(self.path)
                answer = (
                    queued.pop(0) if queued else apis.routes.get(self.path, Answer(b'{"message": "nf"}', status=404))
                )
                time.sleep(answer.delay_s)
                try:
                    self.send_response(answer.status)
                    self.send_header("Content-Type", "application/json")
                    length = len(answer.body) if answer.claimed_length is None else answer.claimed_length
                    if length >= 0:
                        self.send_header("Content-Length", str(length))
                    for key, value in answer.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    if answer.trickle_s:
                        for i in range(0, len(answer.body), 16):
                            self.wfile.write(answer.body[i : i + 16])
                            self.wfile.flush()
                            time.sleep(answer.trickle_s)
                    else:
                        self.wfile.write(answer.body)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # the client hung up (a cap or a deadline cut the answer short)
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True, do_handshake_on_connect=False)
        self.port: int = self.server.server_address[1]
        self.base = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def serve_good_answers(self) -> None:
        self.routes.clear()
        self.first.clear()
        self.routes["/api/v1/products/nginx"] = as_answer(NGINX)
        self.routes["/api/v1/products/tomcat"] = as_answer(TOMCAT)
        self.routes["/feeds/known_exploited_vulnerabilities.json"] = as_answer(kev_catalogue(KEV_ITEMS))
        for cve, doc in NVD.items():
            self.routes[f"/rest/json/cves/2.0?cveId={cve}"] = as_answer(doc)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPKI:
    return LabPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def apis(pki: LabPKI) -> Iterator[RecordedApis]:
    server = RecordedApis(pki)
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _no_proxy_from_the_test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


# -- the workspace ----------------------------------------------------------------------------------------------


def base_data() -> dict[str, Any]:
    """The shipped data's shape with three products (nginx and Tomcat refreshed online, IIS not) and hand-made
    cycles."""
    shipped = load_version_data().file.model_dump(mode="json", exclude_defaults=True)
    keep = {"nginx", "tomcat", "iis"}
    products = [copy.deepcopy(p) for p in shipped["products"] if p["id"] in keep]
    for p in products:
        if p["id"] == "nginx":
            p["as_of"] = "2025-04-23"
            p["cycles"] = [
                {"cycle": "1.28", "released": "2025-04-23", "latest": "1.28.0", "latest_date": "2025-04-23"},
                {"cycle": "1.26", "released": "2024-04-23", "eol": "2025-04-23", "latest": "1.26.3"},
            ]
        if p["id"] == "tomcat":
            p["as_of"] = "2024-03-31"
            p["cycles"] = [
                {"cycle": "10.1", "released": "2022-09-23", "latest": "10.1.20", "latest_date": "2024-03-25"},
                {"cycle": "9.0", "released": "2017-09-27", "latest": "9.0.87", "latest_date": "2024-03-25"},
                {"cycle": "8.5", "released": "2016-03-17", "eol": "2024-03-31", "latest": "8.5.100"},
            ]
    return {
        **{k: v for k, v in shipped.items() if k not in ("products", "kev", "distro_hints", "kev_snapshot")},
        "kev_snapshot": {"catalog_version": "2025.08.25", "date_released": "2025-08-25", "source": "cisa-kev"},
        "products": products,
        "kev": [
            {
                "cve": "CVE-2020-1938",
                "product": "tomcat",
                "date_added": "2022-03-03",
                "versions": [{"start_including": "9.0.0", "end_excluding": "9.0.31"}],
            },
            {
                "cve": "CVE-2017-12617",
                "product": "tomcat",
                "date_added": "2022-03-25",
                "versions": [{"start_including": "9.0.0", "end_excluding": "9.0.1"}],
            },
        ],
    }


@dataclass
class Workspace:
    config: Path
    data: Path

    @property
    def prev(self) -> Path:
        return self.data.with_name(self.data.name + ".prev")


def update_settings(apis: RecordedApis, pki: LabPKI, **update: Any) -> dict[str, Any]:
    return {
        "endoflife_url": f"{apis.base}/api/v1/products/",
        "kev_url": f"{apis.base}/feeds/known_exploited_vulnerabilities.json",
        "nvd_url": f"{apis.base}/rest/json/cves/2.0",
        "ca_bundle": str(pki.ca_bundle),
        "timeout_s": 2,
        "min_kev_entries": 3,
        "nvd_requests_per_30s": 50,
    } | update


def make_workspace(root: Path, apis: RecordedApis, pki: LabPKI, **update: Any) -> Workspace:
    data = write_yaml(root / "data" / "versions.yaml", base_data())
    config = write_yaml(
        root / "config.yaml",
        {"exposure": {"version_data": {"path": "data/versions.yaml", "update": update_settings(apis, pki, **update)}}},
    )
    load_version_data(data)  # the base itself is valid
    return Workspace(config, data)


def run(ws: Workspace, *args: str) -> Any:
    return CliRunner().invoke(main, ["data", "update", "--config", str(ws.config), *args], catch_exceptions=False)


# -- the good answers -------------------------------------------------------------------------------------------


def test_update_merges_every_source_keeps_the_previous_file_and_prints_what_changed(
    tmp_path: Path, apis: RecordedApis, pki: LabPKI
) -> None:
    apis.serve_good_answers()
    ws = make_workspace(tmp_path, apis, pki)
    before = ws.data.read_bytes()
    apis.asked.clear()
    result = run(ws)
    assert result.exit_code == 0, result.output + result.stderr
    assert ws.prev.read_bytes() == before
    data = load_version_data(ws.data)
    nginx = {c.cycle: c for c in data.products["nginx"].cycles}
    assert nginx["1.29"].latest == "1.29.3" and nginx["1.28"].latest == "1.28.1"
    assert str(nginx["1.28"].eol) == "2026-04-21"
    assert nginx["1.26"].latest == "1.26.3"  # a cycle the answer does not list is kept
    tomcat = {c.cycle: c for c in data.products["tomcat"].cycles}
    assert tomcat["11.0"].latest == "11.0.14" and tomcat["8.5"].latest == "8.5.100"
    # Knowledge as of the document's own date (generated_at), not the newest release it lists.
    assert data.products["nginx"].as_of == min(dt.date(2026, 12, 1), dt.datetime.now(dt.UTC).date())
    assert "7.0" not in tomcat
    assert data.products["iis"] == load_version_data(ws.prev).products["iis"]  # not on endoflife.date: as it was
    kev = {(k.cve, k.product): k for k in data.file.kev}
    assert set(kev) == {("CVE-2020-1938", "tomcat"), ("CVE-2025-24813", "tomcat")}  # 2017-12617 left the catalogue
    assert [r.end_excluding for r in kev[("CVE-2025-24813", "tomcat")].versions] == ["9.0.99", "10.1.35", "11.0.3"]
    assert len(kev[("CVE-2020-1938", "tomcat")].versions) == 3
    assert "\x1b" not in kev[("CVE-2025-24813", "tomcat")].name  # catalogue text is cleaned like target text
    snapshot = data.file.kev_snapshot
    assert snapshot is not None and (snapshot.catalog_version, str(snapshot.date_released), snapshot.count) == (
        "2026.12.01",
        "2026-12-01",
        4,
    )
    out = result.output
    for line in (
        "+ nginx cycle 1.29",
        "+ tomcat cycle 11.0",
        "~ nginx cycle 1.28: eol not stated → 2026-04-21, latest 1.28.0 → 1.28.1, latest_date 2025-04-23 → 2025-08-13",
        "not taken from endoflife.date: tomcat cycle 7.0: a line the data does not track, not newer than its lines",
        "+ KEV CVE-2025-24813 (tomcat)",
        "~ KEV CVE-2020-1938 (tomcat): affected versions changed",
        "- KEV CVE-2017-12617 (tomcat)",
        "~ KEV catalogue 2025.08.25 of 2025-08-25 → 2026.12.01 of 2026-12-01",
        "kept as they were (not on endoflife.date): iis",
    ):
        assert line in out, out
    assert f"previous file kept as {ws.prev}" in out
    # Only the KEV CVEs of products in the data were asked of NVD (not Mirth Connect or Log4j).
    nvd_asked = sorted(p for p, _ in apis.asked if p.startswith("/rest/"))
    assert nvd_asked == [f"/rest/json/cves/2.0?cveId={c}" for c in ("CVE-2020-1938", "CVE-2025-24813")]
    # A second update with the same answers changes nothing but the dates.
    again = run(ws)
    assert again.exit_code == 0 and "no change in products, cycles or KEV entries" in again.output


def test_kev_entries_checked_by_hand_stay_and_unverified_ones_get_nvd_ranges(
    tmp_path: Path, apis: RecordedApis, pki: LabPKI
) -> None:
    apis.serve_good_answers()
    ws = make_workspace(tmp_path, apis, pki)
    doc = load_version_data(ws.data).file.model_dump(mode="json", exclude_defaults=True)
    advisory = "https://tomcat.apache.org/security-11.html"
    doc["kev"] = [
        {"cve": "CVE-2020-1938", "product": "tomcat", "unverified": "no public advisory was available"},
        {
            "cve": "CVE-2025-24813",
            "product": "tomcat",
            "versions": [{"start_including": "11.0.0", "end_excluding": "11.0.3"}],
            "fixed": ["11.0.3"],
            "checked": advisory,
        },
    ]
    write_yaml(ws.data, doc)
    apis.asked.clear()
    result = run(ws)
    assert result.exit_code == 0, result.output + result.stderr
    kev = {k.cve: k for k in load_version_data(ws.data).file.kev}
    assert kev["CVE-2025-24813"].checked == advisory and len(kev["CVE-2025-24813"].versions) == 1  # as it was
    assert kev["CVE-2020-1938"].unverified == "" and len(kev["CVE-2020-1938"].versions) == 3  # NVD's ranges now
    assert kev["CVE-2020-1938"].checked.startswith("NVD")
    assert [p for p, _ in apis.asked if p.startswith("/rest/")] == ["/rest/json/cves/2.0?cveId=CVE-2020-1938"]


def test_a_newest_release_that_is_not_a_version_is_left_out_and_the_rest_is_taken(
    tmp_path: Path, apis: RecordedApis, pki: LabPKI
) -> None:
    apis.serve_good_answers()
    odd = copy.deepcopy(NGINX)
    odd["result"]["releases"][1]["latest"]["name"] = "1.28-XFR (VM only)"  # as PAN-OS 9.0-xfr's reads
    apis.routes["/api/v1/products/nginx"] = as_answer(odd)
    ws = make_workspace(tmp_path, apis, pki)
    result = run(ws)
    assert result.exit_code == 0, result.output + result.stderr
    nginx = {c.cycle: c for c in load_version_data(ws.data).products["nginx"].cycles}
    assert nginx["1.28"].latest == "1.28.0" and str(nginx["1.28"].eol) == "2026-04-21"  # kept; the eol taken
    assert "nginx cycle 1.28: newest release '1.28-XFR (VM only)' is not a version" in result.output


def test_a_document_older_than_the_data_is_not_taken(tmp_path: Path, apis: RecordedApis, pki: LabPKI) -> None:
    apis.serve_good_answers()
    apis.routes["/api/v1/products/nginx"] = as_answer(NGINX | {"generated_at": "2025-01-01T00:00:00+00:00"})
    ws = make_workspace(tmp_path, apis, pki)
    result = run(ws)
    assert result.exit_code == 0, result.output + result.stderr
    assert "is of 2025-01-01, older than the data's 2025-04-23" in result.output
    nginx = load_version_data(ws.data).products["nginx"]
    assert "1.29" not in {c.cycle for c in nginx.cycles} and str(nginx.as_of) == "2025-04-23"


def test_debian_takes_the_end_of_lts_and_windows_server_no_base_build_as_latest() -> None:
    debian = eol_product(
        "debian",
        [
            release("12", "2023-06-10", "2026-07-11", "12.12", "2026-07-11")
            | {"isEoes": False, "eoesFrom": "2028-06-30"},
            release("9", "2017-06-17", "2020-07-18", "9.13", "2020-07-18"),  # no extended support stated
        ],
    )
    cycles = {c.cycle: c for c in cycles_from_endoflife(debian, Path("debian.json"), "debian")}
    assert str(cycles["12"].eol) == "2028-06-30" and str(cycles["9"].eol) == "2020-07-18"
    windows = eol_product("windows-server", [release("2025", "2024-11-01", None, "10.0.26100", "2024-11-01")])
    (cycle,) = cycles_from_endoflife(windows, Path("windows-server.json"), "windows-server")
    assert cycle.latest is None and cycle.latest_date is None


def test_fit_cycles_takes_new_lines_and_precise_releases_only() -> None:
    nginx = Product.model_validate(next(p for p in base_data()["products"] if p["id"] == "nginx"))
    answer = [
        Cycle(cycle="1.30", released=dt.date(2026, 4, 1), latest="1.30.0 Update 2"),  # taken as 1.30.0
        Cycle(cycle="1.28", released=dt.date(2025, 4, 23), latest="1.28.2 CU8"),  # the version part is precise
        Cycle(cycle="1.26", released=dt.date(2024, 4, 23), latest="1.26.1"),  # behind the data's 1.26.3
        Cycle(cycle="1.24", released=dt.date(2023, 4, 11), latest="1.24.0"),  # older than every line the data has
    ]
    taken, notes = fit_cycles(nginx, answer)
    latest = {c.cycle: c.latest for c in taken}
    assert latest == {"1.30": "1.30.0", "1.28": "1.28.2", "1.26": None}
    assert notes == [
        "nginx cycle 1.26: newest release '1.26.1' is older than the data's 1.26.3",
        "nginx cycle 1.24: a line the data does not track, not newer than its lines",
    ]
    _, notes = fit_cycles(nginx, [Cycle(cycle="1.30", released=dt.date(2026, 4, 1), latest="1.30 Update 2")])
    assert notes == ["nginx cycle 1.30: newest release '1.30 Update 2' does not say which update of the line it is"]


def test_dry_run_reads_and_shows_the_diff_but_writes_nothing(tmp_path: Path, apis: RecordedApis, pki: LabPKI) -> None:
    apis.serve_good_answers()
    ws = make_workspace(tmp_path, apis, pki)
    before = ws.data.read_bytes()
    result = run(ws, "--dry-run")
    assert result.exit_code == 0, result.output + result.stderr
    assert "+ nginx cycle 1.29" in result.output and "dry run:" in result.output
    assert ws.data.read_bytes() == before and not ws.prev.exists()
    assert sorted(p.name for p in ws.data.parent.iterdir()) == ["versions.yaml"]  # no temporary file left


def test_nvd_api_key_is_sent_as_a_header_and_never_printed(
    tmp_path: Path, apis: RecordedApis, pki: LabPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "0123abcd-key-that-must-not-be-printed"
    monkeypatch.setenv("HCSCAN_TEST_NVD_KEY", secret)
    apis.serve_good_answers()
    apis.routes["/rest/json/cves/2.0?cveId=CVE-2025-24813"] = Answer(
        b"{}", status=404, headers={"message": f"Invalid apiKey {secret}.", "X-Key": secret}
    )
    ws = make_workspace(tmp_path, apis, pki, nvd_api_key_env="HCSCAN_TEST_NVD_KEY")
    apis.asked.clear()
    result = run(ws)
    assert result.exit_code == 3
    assert "HTTP 404 Not Found (Invalid apiKey …" in result.stderr and secret not in result.output + result.stderr
    sent = [h for p, h in apis.asked if p.startswith("/rest/")]
    assert sent and all(h.get("apiKey") == secret for h in sent)
    assert all("apiKey" not in h for p, h in apis.asked if not p.startswith("/rest/"))


# -- bad answers: the data stays byte for byte as it was -------------------------------------------------------


def _truncated(apis: RecordedApis) -> None:
    body = json.dumps(TOMCAT).encode()
    apis.routes["/api/v1/products/tomcat"] = Answer(body[: len(body) // 2], claimed_length=len(body))


def _truncated_json(apis: RecordedApis) -> None:
    body = json.dumps(kev_catalogue(KEV_ITEMS)).encode()
    apis.routes["/feeds/known_exploited_vulnerabilities.json"] = Answer(body[:-40], claimed_length=-1)


def _malformed(apis: RecordedApis) -> None:
    apis.routes["/feeds/known_exploited_vulnerabilities.json"] = Answer(b"<html>Service maintenance</html>")


def _wrong_shape(apis: RecordedApis) -> None:
    apis.routes["/api/v1/products/nginx"] = as_answer([{"cycle": "1.29", "eol": False}])  # API v0, not v1


def _slow(apis: RecordedApis) -> None:
    apis.routes["/rest/json/cves/2.0?cveId=CVE-2020-1938"] = as_answer(NVD["CVE-2020-1938"], delay_s=4)


def _trickle(apis: RecordedApis) -> None:
    # 16 bytes every 0.1 s: each read is quick, the whole answer would take about 30 s.
    apis.routes["/api/v1/products/nginx"] = as_answer(NGINX | {"padding": "x" * 4800}, trickle_s=0.1, claimed_length=-1)


def _too_many_requests(apis: RecordedApis) -> None:
    apis.routes["/rest/json/cves/2.0?cveId=CVE-2025-24813"] = Answer(b"{}", status=429, headers={"Retry-After": "1"})


def _unavailable(apis: RecordedApis) -> None:
    apis.routes["/api/v1/products/tomcat"] = Answer(b"<html>503</html>", status=503)


def _oversized_declared(apis: RecordedApis) -> None:
    apis.routes["/api/v1/products/tomcat"] = Answer(b"{}", claimed_length=40 * 1024 * 1024)


def _oversized_streamed(apis: RecordedApis) -> None:
    padding = json.dumps({**TOMCAT, "padding": "x" * (5 * 1024 * 1024)}).encode()
    apis.routes["/api/v1/products/tomcat"] = Answer(padding, claimed_length=-1)


def _empty_kev(apis: RecordedApis) -> None:
    apis.routes["/feeds/known_exploited_vulnerabilities.json"] = as_answer(kev_catalogue([]))


def _kev_cut_short(apis: RecordedApis) -> None:
    apis.routes["/feeds/known_exploited_vulnerabilities.json"] = as_answer(kev_catalogue(KEV_ITEMS) | {"count": 1480})


def _wrong_product(apis: RecordedApis) -> None:
    apis.routes["/api/v1/products/tomcat"] = as_answer(NGINX)


def _wrong_cve(apis: RecordedApis) -> None:
    apis.routes["/rest/json/cves/2.0?cveId=CVE-2025-24813"] = as_answer(NVD["CVE-2020-1938"])


def _missing_product(apis: RecordedApis) -> None:
    del apis.routes["/api/v1/products/nginx"]


def _redirect(apis: RecordedApis) -> None:
    apis.routes["/api/v1/products/nginx"] = Answer(b"", status=302, headers={"Location": "https://example.org/"})


def _bad_release_name(apis: RecordedApis) -> None:
    bad = copy.deepcopy(NGINX)
    bad["result"]["releases"][0]["name"] = "1.29\x1b[2J"
    apis.routes["/api/v1/products/nginx"] = as_answer(bad)


def _control_characters_in_latest(apis: RecordedApis) -> None:
    bad = copy.deepcopy(NGINX)
    bad["result"]["releases"][1]["latest"]["name"] = "1.28.1\u202e"
    apis.routes["/api/v1/products/nginx"] = as_answer(bad)


BAD_ANSWERS: dict[str, tuple[Callable[[RecordedApis], None], str]] = {
    "truncated": (_truncated, "endoflife.date tomcat: reading"),
    "truncated JSON": (_truncated_json, "CISA KEV: the answer from"),
    "malformed": (_malformed, "is not valid JSON"),
    "wrong shape": (_wrong_shape, "is not an endoflife.date API v1 product"),
    "slow": (_slow, "did not answer within 2 s"),
    "trickle": (_trickle, "did not finish its answer within 2 s"),
    "429": (_too_many_requests, "NVD CVE-2025-24813: HTTP 429"),
    "503": (_unavailable, "endoflife.date tomcat: HTTP 503"),
    "oversized (declared)": (_oversized_declared, "more than the cap"),
    "oversized (streamed)": (_oversized_streamed, "exceeds the cap"),
    "KEV with 0 entries": (_empty_kev, "lists 0 entries, fewer than the 3 expected"),
    "KEV cut short": (_kev_cut_short, "says it has 1480 entries but lists 4"),
    "wrong product": (_wrong_product, "answered for product 'nginx', not 'tomcat'"),
    "wrong CVE": (_wrong_cve, "answered with CVE-2020-1938, not CVE-2025-24813"),
    "product missing": (_missing_product, "endoflife.date nginx: HTTP 404"),
    "redirect": (_redirect, "redirects are not followed"),
    "control characters in a name": (_bad_release_name, "not a version name"),
    "control characters in a latest": (_control_characters_in_latest, "release '1.28' has a malformed 'latest'"),
}


@pytest.mark.parametrize("case", list(BAD_ANSWERS))
def test_a_bad_answer_leaves_the_data_untouched(tmp_path: Path, apis: RecordedApis, pki: LabPKI, case: str) -> None:
    spoil, message = BAD_ANSWERS[case]
    apis.serve_good_answers()
    spoil(apis)
    ws = make_workspace(tmp_path, apis, pki)
    before = ws.data.read_bytes()
    started = time.monotonic()
    result = run(ws)
    assert result.exit_code == 3, result.output + result.stderr
    assert message in result.stderr, result.stderr
    assert "the version data was not changed" in result.stderr
    assert "\x1b" not in result.stderr
    assert ws.data.read_bytes() == before and not ws.prev.exists()
    assert sorted(p.name for p in ws.data.parent.iterdir()) == ["versions.yaml"]
    assert time.monotonic() - started < (20 if case == "trickle" else 60)  # deadlines hold (generous: slow machine)


def test_nvd_throttling_is_waited_out_and_asked_again(tmp_path: Path, apis: RecordedApis, pki: LabPKI) -> None:
    apis.serve_good_answers()
    path = "/rest/json/cves/2.0?cveId=CVE-2025-24813"
    apis.first[path] = [
        Answer(b"", status=403, headers={"Retry-After": "1"}),  # how NVD throttles
        Answer(b"", status=503, headers={"Retry-After": "0"}),
    ]
    ws = make_workspace(tmp_path, apis, pki)
    apis.asked.clear()
    result = run(ws, "--dry-run")
    assert result.exit_code == 0, result.output + result.stderr
    assert [p for p, _ in apis.asked].count(path) == 3
    assert "NVD CVE-2025-24813: HTTP 403, asking again in 1 s" in result.stderr


def test_a_collapsed_kev_catalogue_is_refused(tmp_path: Path, apis: RecordedApis, pki: LabPKI) -> None:
    apis.serve_good_answers()
    ws = make_workspace(tmp_path, apis, pki)
    doc = load_version_data(ws.data).file.model_dump(mode="json", exclude_defaults=True)
    doc["kev"] += [
        {"cve": f"CVE-2019-{n:04d}", "product": "tomcat", "versions": [{"end_excluding": "9.0.1"}]} for n in range(4)
    ]
    write_yaml(ws.data, doc)
    before = ws.data.read_bytes()
    result = run(ws)
    assert result.exit_code == 3
    assert "5 of the 6 KEV entries in the data are no longer listed" in result.stderr
    assert ws.data.read_bytes() == before


@pytest.mark.parametrize(
    ("snapshot", "message"),
    [
        ({"count": 1404}, "lists 4 entries where the data's catalogue 2025.08.25 had 1404"),
        ({"date_released": "2026-12-15"}, "is the catalogue of 2026-12-01, older than the data's (2026-12-15)"),
    ],
)
def test_a_kev_catalogue_smaller_or_older_than_the_data_s_snapshot_is_refused(
    tmp_path: Path, apis: RecordedApis, pki: LabPKI, snapshot: dict[str, Any], message: str
) -> None:
    apis.serve_good_answers()
    ws = make_workspace(tmp_path, apis, pki)
    doc = load_version_data(ws.data).file.model_dump(mode="json", exclude_defaults=True)
    doc["kev_snapshot"] |= snapshot
    write_yaml(ws.data, doc)
    before = ws.data.read_bytes()
    result = run(ws)
    assert result.exit_code == 3 and message in result.stderr, result.stderr
    assert ws.data.read_bytes() == before


def test_a_server_certificate_from_another_ca_is_refused(tmp_path: Path, apis: RecordedApis, pki: LabPKI) -> None:
    apis.serve_good_answers()
    ws = make_workspace(tmp_path, apis, pki, ca_bundle=str(pki.rogue_bundle))
    before = ws.data.read_bytes()
    result = run(ws)
    assert result.exit_code == 3 and "TLS verification of" in result.stderr
    assert ws.data.read_bytes() == before


# -- a real web server: Debian's nginx serving the recorded documents, gzip on ------------------------------------

NGINX_BIN = shutil.which("nginx") or "/usr/sbin/nginx"


@contextmanager
def debian_nginx(root: Path, pki: LabPKI) -> Iterator[str]:
    """Debian's nginx on 127.0.0.1 serving the good answers as static files over TLS (gzip on); yields its base."""
    issued = pki.issue(CertSpec(), "127.0.0.1", "nginx")
    www = root / "www"
    for path, doc in {
        "api/v1/products/nginx": NGINX,
        "api/v1/products/tomcat": TOMCAT,
        "feeds/known_exploited_vulnerabilities.json": kev_catalogue(KEV_ITEMS),
        **{f"nvd/{cve}.json": doc for cve, doc in NVD.items()},
    }.items():
        (www / path).parent.mkdir(parents=True, exist_ok=True)
        (www / path).write_text(json.dumps(doc, indent=1))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = "\n".join(f"    {k}_temp_path {root}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = root / "nginx.conf"
    conf.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"""worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log;
events {{ worker_connections 64; }}
http {{
    log_format encoding '$request_uri $status $sent_http_content_encoding';
    access_log {root}/access.log encoding;
{temp}
    gzip on;
    gzip_types application/json;
    gzip_min_length 1;
    default_type application/json;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {issued.chain_pem};
        ssl_certificate_key {issued.key_pem};
        root {www};
        location = /rest/json/cves/2.0 {{ try_files /nvd/$arg_cveId.json =404; }}
    }}
}}
"""
    )
    proc = subprocess.Popen([NGINX_BIN, "-p", str(root), "-c", str(conf), "-g", "daemon off;"])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nginx did not start: {(root / 'error.log').read_text()}") from None
                time.sleep(0.05)
        yield f"https://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.skipif(shutil.which("nginx") is None and not Path(NGINX_BIN).exists(), reason="Debian nginx not installed")
def test_update_from_debian_nginx_serving_the_documents_gzipped(
    tmp_path: Path, apis: RecordedApis, pki: LabPKI
) -> None:
    with debian_nginx(tmp_path / "nginx", pki) as base:
        ws = make_workspace(
            tmp_path / "ws",
            apis,
            pki,
            endoflife_url=f"{base}/api/v1/products/",
            kev_url=f"{base}/feeds/known_exploited_vulnerabilities.json",
            nvd_url=f"{base}/rest/json/cves/2.0",
        )
        before = ws.data.read_bytes()
        result = run(ws)
        log = (tmp_path / "nginx" / "access.log").read_text()
    assert result.exit_code == 0, result.output + result.stderr
    assert ws.prev.read_bytes() == before
    data = load_version_data(ws.data)
    assert {c.cycle for c in data.products["nginx"].cycles} >= {"1.29", "1.28", "1.26"}
    assert {k.cve for k in data.file.kev} == {"CVE-2020-1938", "CVE-2025-24813"}
    assert "/feeds/known_exploited_vulnerabilities.json 200 gzip" in log, log  # the answer came compressed


# -- the agent's data-update schedule --------------------------------------------------------------------------


@pytest.mark.slow
def test_the_agent_runs_a_data_update_schedule_and_a_failed_one_leaves_the_data(
    tmp_path: Path, apis: RecordedApis, pki: LabPKI
) -> None:
    def agent_config(root: Path) -> tuple[Path, Path]:
        config = make_agent_workspace(
            root,
            [system("s1", "127.0.0.1", 9)],
            extra_config={
                "exposure": {"version_data": {"path": "data/versions.yaml", "update": update_settings(apis, pki)}},
                "agent": {"id": "agent-1", "catchup_grace_s": 2 * 86400, "lease_s": 30, "sweep_s": 1},
                "schedules": [{"id": "nightly-data", "kind": "data-update", "cron": "0 0 * * *"}],
            },
        )
        return config, write_yaml(root / "data" / "versions.yaml", base_data())

    apis.serve_good_answers()
    config, data = agent_config(tmp_path / "good")
    before = data.read_bytes()
    agent = AgentProcess(config, "--once")
    try:
        assert agent.wait(120) == 0, agent.log_path.read_text()
    finally:
        agent.stop()
    done = [e for e in agent.events() if e.get("event") == "slot.done"]
    assert len(done) == 1 and "version data" in done[0]["detail"], agent.log_path.read_text()
    assert data.with_name("versions.yaml.prev").read_bytes() == before
    assert "1.29" in {c.cycle for c in load_version_data(data).products["nginx"].cycles}

    _too_many_requests(apis)
    config, data = agent_config(tmp_path / "bad")
    before = data.read_bytes()
    agent = AgentProcess(config, "--once")
    try:
        assert agent.wait(120) == 1, agent.log_path.read_text()
    finally:
        agent.stop()
    failed = [e for e in agent.events() if e.get("event") == "slot.failed"]
    assert len(failed) == 1 and "version data not changed" in failed[0]["detail"]
    assert "HTTP 429" in failed[0]["detail"]
    assert data.read_bytes() == before and not data.with_name("versions.yaml.prev").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"scope": {"regions": ["testregion"]}}, "a data-update job has no scope"),
        ({"no_path": True}, "exposure.version_data.path is not set"),
    ],
)
def test_a_data_update_schedule_is_checked_at_start(
    tmp_path: Path, apis: RecordedApis, pki: LabPKI, extra: dict[str, Any], message: str
) -> None:
    schedule = {"id": "nightly-data", "kind": "data-update", "cron": "0 0 * * *"} | {
        k: v for k, v in extra.items() if k != "no_path"
    }
    version_data: dict[str, Any] = {"update": update_settings(apis, pki)}
    if "no_path" not in extra:
        version_data["path"] = "data/versions.yaml"
    config = make_agent_workspace(
        tmp_path,
        [system("s1", "127.0.0.1", 9)],
        extra_config={"exposure": {"version_data": version_data}, "schedules": [schedule]},
    )
    result = CliRunner().invoke(main, ["agent", "--config", str(config), "--once"], catch_exceptions=False)
    assert result.exit_code == 2 and "config.yaml:" in result.stderr and message in result.stderr, result.stderr


# -- proxies: the standard variables are honoured ---------------------------------------------------------------


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on 127.0.0.1 that only tunnels to 127.0.0.1; it records each CONNECT target."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.targets: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._tunnel, args=(conn,), daemon=True).start()

    def _tunnel(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                piece = conn.recv(1024)
                if not piece:
                    return
                head += piece
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            host, _, port = target.rpartition(":")
            if method != "CONNECT" or host != "127.0.0.1":
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")
                return
            self.targets.append(target)
            with socket.create_connection((host, int(port)), timeout=10) as upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                pair = {conn: upstream, upstream: conn}
                while True:
                    ready, _, _ = select.select(list(pair), [], [], 10)
                    if not ready:
                        return
                    for s in ready:
                        data = s.recv(65536)
                        if not data:
                            return
                        pair[s].sendall(data)

    def close(self) -> None:
        self.sock.close()


def test_the_standard_proxy_variables_are_honoured(
    tmp_path: Path, apis: RecordedApis, pki: LabPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = ConnectProxy()
    try:
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy.port}")
        apis.serve_good_answers()
        ws = make_workspace(tmp_path, apis, pki)
        result = run(ws, "--dry-run")
        assert result.exit_code == 0, result.output + result.stderr
        assert proxy.targets and set(proxy.targets) == {f"127.0.0.1:{apis.port}"}
        n = len(proxy.targets)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        assert run(ws, "--dry-run").exit_code == 0
        assert len(proxy.targets) == n  # NO_PROXY: straight to the server
    finally:
        proxy.close()


# -- config and rate limit ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"kev_url": "http://127.0.0.1:1/kev.json"}, "must start with https://"),
        ({"nvd_url": "https://user:pw@127.0.0.1/nvd"}, "no credentials in the URL"),
        ({"endoflife_url": "https://127.0.0.1/api?x=1"}, "no query or fragment"),
        ({"timeout_s": 0}, "greater than 0"),
        ({"nvd_requests_per_30s": 500}, "less than or equal to 50"),
        ({"nvd_api_key_env": "NVD KEY"}, "should match pattern"),
        ({"retries": 3}, "retries"),
    ],
)
def test_bad_update_settings_are_refused_with_file_and_line(
    tmp_path: Path, apis: RecordedApis, pki: LabPKI, setting: dict[str, Any], message: str
) -> None:
    ws = make_workspace(tmp_path, apis, pki, **setting)
    before = ws.data.read_bytes()
    apis.asked.clear()
    result = run(ws)
    assert result.exit_code == 2
    assert "config.yaml:" in result.stderr and message in result.stderr, result.stderr
    assert ws.data.read_bytes() == before and not apis.asked


def test_an_unwritable_target_is_refused_before_anything_is_read(
    tmp_path: Path, apis: RecordedApis, pki: LabPKI
) -> None:
    apis.serve_good_answers()
    ws = make_workspace(tmp_path, apis, pki)
    (tmp_path / "not-a-folder").write_text("x")
    apis.asked.clear()
    result = run(ws, "--out", str(tmp_path / "not-a-folder" / "versions.yaml"))
    assert result.exit_code == 2 and "cannot write the version data into" in result.stderr, result.stderr
    assert not apis.asked


def test_a_missing_ca_bundle_is_an_input_error(tmp_path: Path, apis: RecordedApis, pki: LabPKI) -> None:
    ws = make_workspace(tmp_path, apis, pki, ca_bundle="no-such-ca.pem")
    result = run(ws)
    assert result.exit_code == 2 and "ca_bundle: file not found" in result.stderr


def test_nvd_rate_limit_waits_for_the_sliding_window() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(5, 30.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        assert limiter.wait() == 0.0
        now[0] += 1.0
    assert limiter.wait() == pytest.approx(25.0)  # the first call left the window at t=30
    assert now[0] == pytest.approx(30.0)
    assert limiter.wait() == pytest.approx(1.0)
    assert waits == [pytest.approx(25.0), pytest.approx(1.0)]

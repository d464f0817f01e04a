"""A hidden version read the safe way the product shows it: one GET of its documented version endpoint (issue 14.4).

A Mirth-Connect-like HTTPS server on loopback answers GET /api/server/version with its version only when the
request carries X-Requested-With: OpenAPI (as Mirth's REST API does) and shows nothing useful on /: nmap -sV cannot
name it, so the system declares `software: [{product: mirth-connect}]` without a version. The service probe runs
the real nmap, then reads the endpoint; the shipped PAT controls judge the facts. The server counts the requests it
gets, so "a fragile system gets no GET" and "exactly one GET" are measured, not assumed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from scanner.catalog import load_catalog
from scanner.checks.verdict import judge
from scanner.errors import InputError
from scanner.inventory import DeclaredSoftware
from scanner.models import Status
from scanner.probes.base import Politeness, ProbeContext, ProbeFacts, Target
from scanner.probes.nmap import NmapRun
from scanner.probes.registry import fact_names
from scanner.probes.service import ServiceInfo, ServiceProbe, ServiceSettings, endpoint_facts, identify_endpoint
from scanner.probes.versionread import MAX_VERSION_BODY, PendingRead, read_hidden_versions
from scanner.resources import builtin_controls_dir
from scanner.versiondata import load_version_data, packaged_data_path
from scanner.versiondata.identify import assess_declared, version_read_products
from tests.helpers import make_workspace, self_signed_server_context

DATA = load_version_data()
CATALOG = load_catalog([builtin_controls_dir() / "patching.yaml"], probe_facts=fact_names())
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
PATH = "/api/server/version"
DECLARED_MIRTH: list[dict[str, Any]] = [{"product": "mirth-connect", "version": None}]  # as the engine dumps it
RUN = NmapRun(xml="<nmaprun/>", xml_sha256="0" * 64, command=["nmap"], elapsed_s=0.1)
nmap_missing = pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed (apt-get install nmap)")


# -- a Mirth-like HTTPS server ---------------------------------------------------------------------


@dataclass
class MirthLike:
    """What the server answers on the version path (`mode`), and every request it got: (path, X-Requested-With)."""

    version: str = "4.4.0"
    mode: str = "mirth"  # mirth | garbage | huge | slow | redirect
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    port: int = 0

    def version_gets(self) -> int:
        return sum(1 for path, _ in self.requests if path == PATH)


class _Handler(BaseHTTPRequestHandler):
    server: _TLSServer

    def version_string(self) -> str:
        return "lab-appliance"  # names no product nmap or hcscan knows

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        state = self.server.state
        state.requests.append((self.path, self.headers.get("X-Requested-With")))
        if self.path != PATH:
            self._send(200, b"<html><body>Welcome</body></html>")
        elif state.mode == "garbage":
            self._send(200, b"\x00\x1b[2J<<<not a version>>>\xff")
        elif state.mode == "huge":
            self._send(200, (state.version + " ").encode() * 50_000)
        elif state.mode == "redirect":
            self._send(302, b"", {"Location": "https://192.0.2.1/api/server/version"})
        elif state.mode == "slow":
            self.send_response(200)
            self.send_header("Content-Length", "64")
            self.end_headers()
            for _ in range(60):  # one byte a second: far beyond any read timeout
                self.wfile.write(b"4")
                self.wfile.flush()
                time.sleep(1)
        elif self.headers.get("X-Requested-With") != "OpenAPI":
            self._send(400, b"All requests must have 'X-Requested-With' header")  # as Mirth's REST API refuses
        else:
            self._send(200, state.version.encode())


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: MirthLike, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state, self.context = state, context

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens in the request's own thread: a probe that never finishes one stalls nothing.
        request.settimeout(10)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        with contextlib.suppress(OSError):
            super().finish_request(tls, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # nmap's probes that are not HTTP end in errors; they are not the test's business


@contextlib.contextmanager
def mirth_like(tmp: Path, **kw: Any) -> Iterator[MirthLike]:
    context = self_signed_server_context(tmp, "mirth.lab.invalid")
    state = MirthLike(**kw)
    server = _TLSServer(state, context)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _target(system: str, port: int, *, fragile: bool = False, timeout_s: float = 5.0) -> Target:
    endpoint = {"id": "api", "host": "127.0.0.1", "port": port, "protocol": "https"}
    declared = {"system": {"id": system, "software": DECLARED_MIRTH}, "endpoint": endpoint, "endpoints": [endpoint]}
    politeness = Politeness(timing=4, timeout_s=timeout_s, fragile=fragile)
    return Target(f"{system}/api", system, "127.0.0.1", port, "https", politeness=politeness, declared=declared)


def _verdicts(facts: dict[str, Any], max_age_days: int | None = None) -> dict[str, tuple[Status, str]]:
    out: dict[str, tuple[Status, str]] = {}
    for control_id in ("PAT-01", "PAT-02", "PAT-05"):
        control = CATALOG.controls[control_id]
        params = {**control.params, **({"max_age_days": max_age_days} if max_age_days is not None else {})}
        verdict = judge(control.rule, facts, params, NOW)
        out[control_id] = (verdict.status, verdict.message)
    return out


# -- live: nmap, then the version endpoint ---------------------------------------------------------


@pytest.fixture(scope="module")
def lab_scan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, Any], dict[str, MirthLike]]]:
    """One service-probe run over three systems: Mirth 4.4.0, Mirth 4.5.0 and a fragile Mirth 4.4.0."""
    tmp = tmp_path_factory.mktemp("mirth")
    with (
        mirth_like(tmp, version="4.4.0") as old,
        mirth_like(tmp, version="4.5.0") as new,
        mirth_like(tmp, version="4.4.0") as fragile,
    ):
        targets = [_target("mirth-old", old.port), _target("mirth-new", new.port)]
        targets.append(_target("mirth-fragile", fragile.port, fragile=True))
        # A wide max_age_days keeps these verdicts about reading the version; freshness is judged below.
        settings = ServiceSettings(DATA, (), version_intensity=2, max_data_age_days=3650)
        started = time.monotonic()
        results = ServiceProbe(settings).gather(targets, ProbeContext())
        elapsed = time.monotonic() - started
        servers = {"mirth-old": old, "mirth-new": new, "mirth-fragile": fragile}
        print(f"service probe with version reads over 3 systems: {elapsed:.1f} s")
        facts: dict[str, Any] = {}
        for t in targets:
            outcome = results[t.key]
            assert isinstance(outcome, ProbeFacts), f"{t.key}: {outcome}"
            facts[t.system_id] = dict(outcome.facts)
        yield facts, servers


@pytest.mark.slow
@pytest.mark.needs_nmap
@nmap_missing
def test_mirth_440_behind_a_hidden_version_fails_pat05_on_its_kev(lab_scan: Any) -> None:
    facts, servers = lab_scan
    old = facts["mirth-old"]
    assert old["service.product"] is None  # nmap -sV could not name it
    assert old["patch.version"] == "4.4.0"
    assert old["patch.version_source"] == f"version-endpoint GET {PATH}"
    assert old["patch.matched_by"] == "version_endpoint"
    assert servers["mirth-old"].version_gets() == 1  # exactly one GET of the version endpoint
    assert ("/api/server/version", "OpenAPI") in servers["mirth-old"].requests
    status, message = _verdicts(old)["PAT-05"]
    assert status is Status.FAIL, message
    assert "CVE-2023-43208" in message and f"GET {PATH}: 4.4.0" in message


@pytest.mark.slow
@pytest.mark.needs_nmap
@nmap_missing
def test_mirth_450_is_not_affected_and_pat02_says_how_old_the_knowledge_is(lab_scan: Any) -> None:
    facts, servers = lab_scan
    new = facts["mirth-new"]
    assert new["patch.version"] == "4.5.0" and new["patch.kev"] == []
    assert servers["mirth-new"].version_gets() == 1
    verdicts = _verdicts(new)
    assert verdicts["PAT-05"][0] is Status.PASS, verdicts["PAT-05"]
    assert f"GET {PATH}: 4.5.0" in verdicts["PAT-05"][1]
    # What the data says: 4.5.0 is the newest 4.x release it knows, but it knows Mirth only up to 2024-03-20 —
    # with the default 120 days that is "could not assess", never a pass.
    assert DATA.products["mirth-connect"].as_of == dt.date(2024, 3, 20)
    assert verdicts["PAT-02"][0] is Status.PASS, verdicts["PAT-02"]
    status, message = _verdicts(new, max_age_days=120)["PAT-02"]
    assert status is Status.ERROR and "unknown since 2024-03-20" in message, message


@pytest.mark.slow
@pytest.mark.needs_nmap
@nmap_missing
def test_a_fragile_system_gets_no_get_and_stays_could_not_assess(lab_scan: Any) -> None:
    facts, servers = lab_scan
    assert servers["mirth-fragile"].requests == []  # not one HTTP request: nmap only connected
    fragile = facts["mirth-fragile"]
    assert fragile["service.version_probed"] is False and fragile["patch.version"] is None
    for control_id, (status, message) in _verdicts(fragile).items():
        assert status is Status.ERROR, (control_id, message)
        assert "fragile system: no version probes are sent" in message


# -- bad answers: could not assess, bounded (the real server, no nmap) ---------------------------------------


def _read(target: Target) -> tuple[dict[str, Any], float]:
    """What the probe does after nmap for an endpoint nmap could not name, on a system declaring Mirth."""
    info = ServiceInfo("127.0.0.1", target.port, "open", "syn-ack", name="https", method="probed", tunnel="ssl")
    prior = identify_endpoint(info, DATA)
    products = version_read_products(DATA, prior, DECLARED_MIRTH)
    assert [p.id for p in products] == ["mirth-connect"]
    started = time.monotonic()
    read = read_hidden_versions(DATA, [PendingRead(target, prior, tuple(products), "https")])
    elapsed = time.monotonic() - started
    ident = read[target.key]
    return dict(endpoint_facts(info, DATA, RUN, True, target.declared, 3650, ident)), elapsed


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("garbage", "the answer holds no version"),
        ("huge", f"larger than {MAX_VERSION_BODY} bytes"),
        ("slow", "no complete answer within 4 s"),
        ("redirect", "HTTP 302 (a redirect, not followed)"),
    ],
)
def test_a_bad_answer_is_could_not_assess_and_bounded(tmp_path: Path, mode: str, why: str) -> None:
    with mirth_like(tmp_path, mode=mode) as server:
        facts, elapsed = _read(_target("mirth", server.port, timeout_s=2.0))
        assert server.version_gets() == 1  # one GET, no retry, the redirect not followed
        assert [p for p, _ in server.requests] == [PATH]
    assert elapsed < 15, f"{mode}: {elapsed:.1f} s"  # 2 s timeouts, 4 s overall; generous for a slow machine
    assert facts["patch.version"] is None and facts["patch.product_id"] == "mirth-connect"
    reason = facts["patch.unidentified_reason"]
    assert f"its version endpoint (GET {PATH}) gave none" in reason and why in reason, reason
    for control_id, (status, message) in _verdicts(facts).items():
        assert status is Status.ERROR, (control_id, message)
        assert why in message
        assert "declare it under `software:`" in message


def test_without_the_header_mirth_refuses_and_that_is_no_version(tmp_path: Path) -> None:
    """The data's header is what makes Mirth answer: the lab server refuses a request without it (HTTP 400)."""
    data = load_version_data(text=packaged_data_path().read_text().replace("headers: {X-Requested-With: OpenAPI}", ""))
    with mirth_like(tmp_path) as server:
        info = ServiceInfo("127.0.0.1", server.port, "open", "syn-ack", name="https", method="probed", tunnel="ssl")
        target = _target("mirth", server.port)
        prior = identify_endpoint(info, data)
        read = read_hidden_versions(data, [PendingRead(target, prior, (data.products["mirth-connect"],), "https")])
    assert server.requests == [(PATH, None)]
    assert read[target.key].version is None and "HTTP 400" in str(read[target.key].reason)


def test_a_visible_version_or_an_undeclared_unknown_product_is_not_read() -> None:
    shown = identify_endpoint(
        ServiceInfo("127.0.0.1", 443, "open", "syn-ack", name="http", product="nginx", version="1.28.2",
                    method="probed"), DATA)  # fmt: skip
    assert version_read_products(DATA, shown, DECLARED_MIRTH) == []  # the version is visible: no GET
    unknown = identify_endpoint(ServiceInfo("127.0.0.1", 443, "open", "syn-ack", name="http", method="probed"), DATA)
    assert version_read_products(DATA, unknown, []) == []  # nothing declared: hcscan does not guess
    assert version_read_products(DATA, unknown, [{"product": "mirth-connect", "version": "4.4.0"}]) == []


# -- the declaration and the data ------------------------------------------------------------------------


def test_pat03_hands_a_versionless_declaration_to_the_endpoints_or_cannot_assess_it() -> None:
    pat03 = CATALOG.controls["PAT-03"]

    def judged(item: dict[str, Any], http: bool) -> tuple[Status, str]:
        facts = {"software.declared": [assess_declared(DATA, item, http)], "versiondata.data_version": "x"}
        verdict = judge(pat03.rule, facts, pat03.params, NOW)
        return verdict.status, verdict.message

    status, message = judged(DECLARED_MIRTH[0], True)
    assert status is Status.NOT_APPLICABLE and f"GET {PATH}" in message and "PAT-01/02/05" in message, message
    status, message = judged(DECLARED_MIRTH[0], False)  # no HTTP(S) endpoint to read it on
    assert status is Status.ERROR and "declare its version" in message, message
    status, message = judged({"product": "openssh", "version": None}, True)  # no version endpoint in the data
    assert status is Status.ERROR and "shows none hcscan can read" in message, message


def test_a_versionless_declaration_takes_no_version_dependent_fields() -> None:
    assert DeclaredSoftware.model_validate({"product": "mirth-connect"}).version is None
    with pytest.raises(ValidationError, match="package_version needs a version"):
        DeclaredSoftware.model_validate({"product": "mirth-connect", "package_version": "4.4.0-1"})


@pytest.mark.parametrize(
    ("replacement", "refusal"),
    [
        ("path: api/server/version", "must start with '/'"),
        ("path: /api/../server/version", "must not climb"),
        ("path: /api/server/version?api_key=x", "looks like a credential"),
        ("path: /api/server/version\n        headers: {Authorization: Basic YWRtaW46YWRtaW4=}", "is not allowed"),
        ('path: /api/server/version\n        headers: {Accept: "x\\r\\nEvil: 1"}', "is not a plain token"),
        ("path: /api/server/version\n        pattern: '(?P<v>[0-9.]+)'", "needs a (?P<version>...) group"),
        ("path: /api/server/version\n        pattern: '(a+)+\\1'", "invalid version endpoint pattern"),
    ],
)
def test_a_version_endpoint_is_validated_when_the_data_is_loaded(replacement: str, refusal: str) -> None:
    text = packaged_data_path().read_text()
    if "pattern:" in replacement:  # replace the entry's pattern instead of adding a second one
        start = text.index("      - path: /api/server/version")
        end = text.index("\n        note:", start)
        text = text[:start] + "      - " + replacement + text[end:]
    elif "headers:" in replacement:
        text = text.replace("path: /api/server/version\n        headers: {X-Requested-With: OpenAPI}", replacement)
    else:
        text = text.replace("path: /api/server/version", replacement)
    with pytest.raises(InputError) as caught:
        load_version_data(text=text)
    assert refusal in str(caught.value), str(caught.value)
    assert "versions.yaml:" in str(caught.value)  # file:line of the bad entry


def test_the_shipped_mirth_entry_reads_plain_text_versions_only() -> None:
    endpoint = DATA.products["mirth-connect"].version_endpoints[0]
    assert endpoint.path == PATH and endpoint.headers == {"X-Requested-With": "OpenAPI"}
    from scanner.saferegex import compile_safe

    pattern = compile_safe(endpoint.pattern)
    for body, version in [("4.4.0", "4.4.0"), ("4.5.2\n", "4.5.2"), ('"3.12.0"', "3.12.0")]:
        found = pattern.search(body)
        assert found is not None and found.groups["version"] == version
    for body in ("<html>4.4.0</html>", "version 4.4.0 and more", ""):
        assert pattern.search(body) is None


@pytest.mark.slow
@pytest.mark.needs_nmap
@nmap_missing
def test_hcscan_scan_reads_a_versionless_mirth_declaration_end_to_end(tmp_path: Path) -> None:
    """The inventory declares Mirth without a version; `hcscan scan` stores PAT-05 failing on what the endpoint said."""
    with mirth_like(tmp_path, version="4.4.0") as server:
        system = {
            "id": "integration-engine",
            "name": "Integration engine",
            "owner": "Integration team",
            "criticality": "high",
            "endpoints": [{"id": "api", "host": "127.0.0.1", "port": server.port, "protocol": "https"}],
            "software": [{"product": "mirth-connect"}],
        }
        make_workspace(tmp_path, [system], extra_config={"exposure": {"sweep_ports": [], "version_intensity": 2}})
        result = subprocess.run(
            [sys.executable, "-m", "scanner", "scan", "--config", "config.yaml", "--format", "json",
             "--control", "PAT-03", "--control", "PAT-05"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr  # a failing finding
    findings = {f["control"]: f for f in json.loads(result.stdout)}
    pat05 = findings["PAT-05"]
    assert pat05["status"] == "fail" and "CVE-2023-43208" in pat05["message"], pat05
    assert f"GET {PATH}: 4.4.0" in pat05["message"]
    assert pat05["evidence"]["patch.version_source"] == f"version-endpoint GET {PATH}"
    assert findings["PAT-03"]["status"] == "not_applicable", findings["PAT-03"]
    assert f"mirth-connect (GET {PATH})" in findings["PAT-03"]["message"]
    assert server.version_gets() == 1


def test_data_info_names_the_products_whose_version_is_read_from_an_endpoint() -> None:
    from click.testing import CliRunner

    from scanner.cli import main

    info = json.loads(CliRunner().invoke(main, ["data", "info", "--json"], catch_exceptions=False).output)
    endpoints = {p["id"]: p["version_endpoints"] for p in info["product_list"]}
    assert endpoints["mirth-connect"] == [f"GET {PATH}"] and endpoints["openssh"] == []
    text = " ".join(CliRunner().invoke(main, ["data", "info"], catch_exceptions=False).output.split())
    assert f"mirth-connect (GET {PATH})" in text

"""LOG-01..05 against live local backends: Debian's rsyslog (TCP + TLS inputs, per-host files), a FHIR
AuditEvent server and an Elasticsearch-style JSON API from the lab. Verdicts come from the real engine.
"""

from __future__ import annotations

import datetime as dt
import gzip
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scanner.app import load_workspace, plan_scan, probe_context
from scanner.engine import Selection, gather_facts, judge_all
from scanner.errors import InputError
from scanner.lab.certs import LabPKI
from scanner.lab.logging import AccessEvent, FhirAuditServer, JsonLogServer, LokiLogServer, RsyslogCollector
from scanner.probes.auditlog import AuditLogProbe
from scanner.probes.base import SYSTEM_LEVEL, ProbeContext, ProbeError, ProbeFacts, Target, TrustSettings
from scanner.probes.registry import fact_names, make_probes, probe_protocols
from tests.helpers import make_workspace, system

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
TOKEN = "lab-token-9f8e7d"  # a lab secret, handed over through the environment like a real one
HOST = socket.gethostname()
LOG_CONTROLS = ("LOG-01", "LOG-02", "LOG-03", "LOG-04", "LOG-05")

_reason = RsyslogCollector.missing_reason()
if _reason is not None:
    print(f"skipping live audit-log tests: {_reason}")
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"{_reason} (make test installs it)")


def recent(n: int, **kw: Any) -> list[AccessEvent]:
    return [AccessEvent(NOW - dt.timedelta(minutes=10 * i), **kw) for i in range(n)]


@dataclass
class Backends:
    collector: RsyslogCollector
    pki: LabPKI
    fhir: FhirAuditServer
    fhir_stale: FhirAuditServer
    fhir_garbage: FhirAuditServer
    json: JsonLogServer
    json_incomplete: JsonLogServer
    loki: LokiLogServer
    loki_incomplete: LokiLogServer
    files: Path


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backends]:
    root = tmp_path_factory.mktemp("auditlog")
    pki = LabPKI(root / "api-pki")
    old = [AccessEvent(NOW - dt.timedelta(days=400))]
    with (
        RsyslogCollector(root / "rsyslog") as collector,
        FhirAuditServer([*recent(30), *old], TOKEN, pki) as fhir,
        FhirAuditServer(
            [AccessEvent(NOW - dt.timedelta(days=3), patient=None)], TOKEN, pki, clock_offset_s=-600
        ) as stale,
        FhirAuditServer(recent(3), TOKEN, pki, garbage=True) as garbage,
        JsonLogServer([*recent(25), *old], TOKEN, pki) as json_api,
        JsonLogServer([*recent(5), *recent(5, user=None)], TOKEN, pki) as json_incomplete,
        LokiLogServer([*recent(25), *old], TOKEN, pki) as loki,
        LokiLogServer([*recent(5), *recent(5, patient=None)], TOKEN, pki) as loki_incomplete,
    ):
        # Real traffic through rsyslog: complete events by logger over TCP, one host over TLS.
        for i in range(25):
            collector.send_logger(
                f"lookup n={i} user=u{i} patient=01019{i:04d} action=read",
                sd=[("user", f"u{i}"), ("patient", f"01019{i:04d}"), ("action", "read")],
            )
        collector.wait_for(collector.host_file(HOST), "n=24 ")
        collector.wait_for(collector.host_file(HOST, "bsd"), "n=24 ")
        collector.send_tls([f"<86>1 {NOW.isoformat()} epj-tls epj-audit 7 - - user=u9 patient=0202 action=update"])
        collector.wait_for(collector.host_file("epj-tls"), "action=update")
        # Retention: the fresh host's rotated archive reaches back 200 days.
        with gzip.open(collector.host_file(HOST).with_name("audit.log.1.gz"), "wt") as gz:
            gz.write(
                f"<86>1 {(NOW - dt.timedelta(days=200)).isoformat()} {HOST} epj-audit 1 - - user=u patient=p action=read\n"
            )
        # A stale host: its file was last written five days ago, and its events lack the patient.
        stale_file = collector.host_file("epj-stale")
        stale_file.parent.mkdir(parents=True, exist_ok=True)
        stale_file.write_text(
            "".join(
                f"<86>1 {(NOW - dt.timedelta(days=5, minutes=i)).isoformat()} epj-stale epj-audit 1 - - user=u action=read\n"
                for i in range(30, 0, -1)
            )
        )
        files = root / "files"
        files.mkdir()
        (files / "empty.log").write_bytes(b"")
        (files / "garbage.log").write_bytes(b"\x00\xffnot a syslog line at all\n" * 500)
        yield Backends(collector, pki, fhir, stale, garbage, json_api, json_incomplete, loki, loki_incomplete, files)


def _syslog(path: Path, shipping: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"backend": "syslog-files", "path": str(path), **extra}
    if shipping is not None:
        spec["shipping"] = shipping
    return spec


def _fhir(server: FhirAuditServer, **extra: Any) -> dict[str, Any]:
    return {
        "backend": "fhir-auditevent",
        "base_url": f"{server.base}/fhir",
        "token_env": "HCSCAN_TEST_LOG_TOKEN",
        **extra,
    }


def _loki(server: LokiLogServer) -> dict[str, Any]:
    """Loki's query_range: events spread over streams, each a [ns time, JSON line] pair."""
    query = '{app="epj"}'
    return {
        "backend": "http-json",
        "url": f"{server.base}/loki/api/v1/query_range",
        "token_env": "HCSCAN_TEST_LOG_TOKEN",
        "latest_query": {"query": query, "limit": 20, "direction": "backward"},
        "oldest_query": {"query": query, "limit": 1, "direction": "forward", "start": "0"},
        "events_path": "data.result.*.values",
        "fields": {"time": "0", "user": "1.user", "subject": "1.patient", "action": "1.action"},
    }


def _json(server: JsonLogServer, **extra: Any) -> dict[str, Any]:
    return {
        "backend": "http-json",
        "url": f"{server.base}/audit/_search",
        "method": "POST",
        "token_env": "HCSCAN_TEST_LOG_TOKEN",
        "auth_scheme": "ApiKey",
        "latest_query": {"size": 20, "sort": [{"@timestamp": "desc"}]},
        "oldest_query": {"size": 1, "sort": [{"@timestamp": "asc"}]},
        "events_path": "hits.hits",
        "fields": {
            "time": "_source.@timestamp",
            "user": "_source.user.name",
            "subject": "_source.patient.id",
            "action": "_source.event.action",
        },
        **extra,
    }


def _port(server: FhirAuditServer | JsonLogServer) -> int:
    return int(server.server_address[1])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# system id → (audit_log spec, expected verdicts); "-" means the control is not asserted for that system
def _cases(b: Backends) -> dict[str, tuple[dict[str, Any] | None, dict[str, str], int | None]]:
    c = b.collector
    tls = {"transport": "syslog-tls", "host": "127.0.0.1", "port": c.tls_port}
    return {
        "fresh-5424": (
            _syslog(c.host_file(HOST), tls, archives=str(c.host_file(HOST).with_name("audit.log.*"))),
            {"LOG-01": "pass", "LOG-02": "pass", "LOG-03": "pass", "LOG-04": "pass"},
            None,
        ),
        "fresh-bsd": (
            _syslog(c.host_file(HOST, "bsd"), {"transport": "syslog-tcp", "host": "127.0.0.1", "port": c.tcp_port}),
            {"LOG-01": "pass", "LOG-02": "fail", "LOG-03": "pass", "LOG-04": "fail"},
            None,
        ),
        "via-tls": (
            _syslog(c.host_file("epj-tls"), {"transport": "syslog-tls", "host": "127.0.0.1", "port": c.tcp_port}),
            {"LOG-01": "pass", "LOG-04": "fail"},  # declared TLS, but that port speaks plain TCP
            None,
        ),
        "stale": (
            _syslog(c.host_file("epj-stale"), {"transport": "syslog-udp", "host": "127.0.0.1", "port": 514}),
            {"LOG-01": "fail", "LOG-02": "fail", "LOG-03": "fail", "LOG-04": "fail"},
            None,
        ),
        "empty-file": (_syslog(b.files / "empty.log"), {"LOG-01": "error", "LOG-02": "error", "LOG-03": "error"}, None),
        "garbage-file": (_syslog(b.files / "garbage.log"), {"LOG-01": "error", "LOG-03": "error"}, None),
        "missing-file": (_syslog(b.files / "gone.log"), {"LOG-01": "error"}, None),
        "collector-down": (
            _syslog(b.files / "empty.log", {"transport": "syslog-tls", "host": "127.0.0.1", "port": _closed_port()}),
            {"LOG-04": "error"},
            None,
        ),
        "no-log-declared": (None, {"LOG-01": "fail", "LOG-02": "fail", "LOG-03": "fail", "LOG-04": "fail"}, None),
        "fhir": (
            _fhir(b.fhir, shipping={"transport": "https", "host": "127.0.0.1", "port": _port(b.fhir)}),
            {"LOG-01": "pass", "LOG-02": "pass", "LOG-03": "pass", "LOG-04": "pass", "LOG-05": "pass"},
            _port(b.fhir),
        ),
        "fhir-stale": (
            _fhir(b.fhir_stale),
            {"LOG-01": "fail", "LOG-02": "fail", "LOG-03": "fail", "LOG-05": "fail"},
            _port(b.fhir_stale),
        ),
        "fhir-garbage": (_fhir(b.fhir_garbage), {"LOG-01": "error"}, None),
        "fhir-bad-token": (_fhir(b.fhir, token_env="HCSCAN_TEST_WRONG_TOKEN"), {"LOG-01": "error"}, None),
        "fhir-no-env": (_fhir(b.fhir, token_env="HCSCAN_TEST_UNSET_TOKEN"), {"LOG-02": "error"}, None),
        "json": (_json(b.json), {"LOG-01": "pass", "LOG-02": "pass", "LOG-03": "pass"}, None),
        "json-incomplete": (_json(b.json_incomplete), {"LOG-01": "pass", "LOG-03": "fail", "LOG-02": "fail"}, None),
        "loki": (_loki(b.loki), {"LOG-01": "pass", "LOG-02": "pass", "LOG-03": "pass"}, None),
        "loki-incomplete": (_loki(b.loki_incomplete), {"LOG-01": "pass", "LOG-03": "fail"}, None),
        "json-down": (
            _json(b.json, url=f"https://127.0.0.1:{_closed_port()}/audit/_search"),
            {"LOG-01": "error"},
            None,
        ),
    }


@pytest.fixture(scope="module")
def verdicts(
    backends: Backends, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[tuple[str, str], Any], dict[str, tuple[dict[str, Any] | None, dict[str, str], int | None]]]:
    cases = _cases(backends)
    systems = []
    for sid, (audit_log, _, http_port) in cases.items():
        sysdef = system(sid, "127.0.0.1", http_port or 9, "https")
        if audit_log is not None:
            sysdef["audit_log"] = audit_log
        systems.append(sysdef)
    root = tmp_path_factory.mktemp("logscan")
    config = make_workspace(root, systems, ca_bundles=[str(backends.collector.ca_bundle), str(backends.pki.ca_bundle)])
    mp = pytest.MonkeyPatch()
    mp.setenv("HCSCAN_TEST_LOG_TOKEN", TOKEN)
    mp.setenv("HCSCAN_TEST_WRONG_TOKEN", "not-the-token")
    mp.delenv("HCSCAN_TEST_UNSET_TOKEN", raising=False)
    try:
        ws = load_workspace(config, fact_names())
        plan, _ = plan_scan(ws, Selection(controls=frozenset(LOG_CONTROLS)), probe_protocols())
        facts = gather_facts(plan, make_probes(), probe_context(ws.config))
    finally:
        mp.undo()
    records = judge_all(plan, facts, ws.waivers, dt.datetime.now(dt.UTC))
    return {(r.system_id, r.control_id): r for r in records}, cases


def test_every_log_control_verdict_matches_its_backend_case(
    verdicts: tuple[dict[tuple[str, str], Any], dict[str, tuple[dict[str, Any] | None, dict[str, str], int | None]]],
) -> None:
    got, cases = verdicts
    mismatches = []
    for sid, (_, expected, _) in cases.items():
        for control, status in expected.items():
            record = got[(sid, control)]
            if record.status.value != status:
                mismatches.append(f"{sid} {control}: expected {status}, got {record.status.value}: {record.message}")
    assert not mismatches, "\n".join(mismatches)
    covered = {(c, s) for _, exp, _ in cases.values() for c, s in exp.items()}
    for control in LOG_CONTROLS:  # every control has a pass and a fail case against a live backend
        assert (control, "pass") in covered and (control, "fail") in covered, control


def test_error_messages_say_what_went_wrong_and_keep_the_token_out(
    verdicts: tuple[dict[tuple[str, str], Any], dict[str, Any]],
) -> None:
    got, _ = verdicts
    expect = {
        "empty-file": "log file is empty",
        "garbage-file": "no readable syslog line",
        "missing-file": "log file not found",
        "collector-down": "connection refused",
        "fhir-garbage": "not JSON",
        "fhir-bad-token": "rejected the token (HTTP 401)",
        "fhir-no-env": "HCSCAN_TEST_UNSET_TOKEN (token_env) is not set",
        "json-down": "connection refused",
    }
    for sid, words in expect.items():
        control = "LOG-04" if sid == "collector-down" else "LOG-01"
        assert words in got[(sid, control)].message, got[(sid, control)].message
    for record in got.values():
        assert TOKEN not in record.message and TOKEN not in repr(record.evidence)
    assert "lacks subject" in got[("stale", "LOG-03")].message
    assert "syslog-udp" in got[("stale", "LOG-04")].message


def test_rsyslog_wrote_real_5424_and_bsd_lines(backends: Backends) -> None:
    c = backends.collector
    line = c.host_file(HOST).read_text().splitlines()[-1]
    assert line.startswith("<13>1 ") and '[audit@32473 user="u24"' in line
    assert c.host_file(HOST, "bsd").read_text().splitlines()[-1].split()[3] == HOST


def test_untrusted_backend_certificate_is_an_error(backends: Backends, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HCSCAN_TEST_LOG_TOKEN", TOKEN)
    target = Target(
        "fhir/*", "fhir", "127.0.0.1", 0, SYSTEM_LEVEL, declared={"system": {"audit_log": _fhir(backends.fhir)}}
    )
    no_trust = ProbeContext(trust=TrustSettings(use_system_store=False))
    outcome = AuditLogProbe().gather([target], no_trust)[target.key]
    assert isinstance(outcome, ProbeError) and "not trusted" in outcome.detail
    trusted = ProbeContext(trust=TrustSettings(use_system_store=False, ca_bundles=(backends.pki.ca_bundle,)))
    assert isinstance(AuditLogProbe().gather([target], trusted)[target.key], ProbeFacts)


def test_backend_outside_allowed_networks_is_refused_at_validation(tmp_path: Path) -> None:
    far = system("far", "127.0.0.1", 9)
    far["audit_log"] = {"backend": "fhir-auditevent", "base_url": "https://192.0.2.10/fhir"}
    near = system("near", "127.0.0.1", 9)
    near["audit_log"] = {
        "backend": "syslog-files",
        "path": "/var/log/x.log",
        "shipping": {"transport": "syslog-tls", "host": "198.51.100.7", "port": 6514},
    }
    config = make_workspace(tmp_path, [far, near])
    ws = load_workspace(config, fact_names())
    with pytest.raises(InputError) as info:
        plan_scan(ws, Selection(), probe_protocols())
    text = str(info.value)
    assert "far: audit_log.base_url 192.0.2.10" in text and "near: audit_log.shipping.host 198.51.100.7" in text


def test_credentials_in_urls_and_relative_paths_are_refused(tmp_path: Path) -> None:
    bad = system("bad", "127.0.0.1", 9)
    bad["audit_log"] = {"backend": "http-json", "url": "https://user:pw@127.0.0.1/x", "fields": {"time": "t"}}
    rel = system("rel", "127.0.0.1", 9)
    rel["audit_log"] = {"backend": "syslog-files", "path": "logs/x.log"}
    config = make_workspace(tmp_path, [bad, rel])
    with pytest.raises(InputError) as info:
        load_workspace(config, fact_names())
    text = str(info.value)
    assert "no credentials in URLs" in text and "absolute path" in text


def test_a_token_is_never_sent_in_the_clear_or_to_an_unverified_server(tmp_path: Path) -> None:
    plain = system("plain", "127.0.0.1", 9)
    plain["audit_log"] = {
        "backend": "http-json",
        "url": "http://127.0.0.1:9200/x",
        "token_env": "T",
        "fields": {"time": "t"},
    }
    unverified = system("unverified", "127.0.0.1", 9)
    unverified["audit_log"] = {
        "backend": "fhir-auditevent", "base_url": "https://127.0.0.1:8443/fhir", "token_env": "T", "verify_tls": False
    }  # fmt: skip
    tokenless = system("tokenless", "127.0.0.1", 9)  # no token, nothing to give away: allowed
    tokenless["audit_log"] = {"backend": "http-json", "url": "http://127.0.0.1:9200/x", "fields": {"time": "t"}}
    config = make_workspace(tmp_path, [plain, unverified, tokenless])
    with pytest.raises(InputError) as info:
        load_workspace(config, fact_names())
    problems = info.value.problems
    assert len(problems) == 2, problems
    text = str(info.value)
    assert "send the token in the clear: use https://" in text
    assert "hand the token to any server that answers" in text
    assert not (tmp_path / "hcscan.db").exists()

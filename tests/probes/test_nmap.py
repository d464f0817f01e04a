"""scanner.probes.nmap: validated argument building, the script allowlist, error mapping, XML parsing."""

from __future__ import annotations

import re
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from scanner.probes.base import Politeness, ProbeErrorReason
from scanner.probes.nmap import (
    ALLOWED_SCRIPTS,
    FORCEABLE_SCRIPTS,
    REFUSED_CATEGORIES,
    REVIEWED_EXCEPTIONS,
    NmapArgumentError,
    NmapError,
    ScriptRefused,
    build_arguments,
    nse_tree,
    parse_nmap_xml,
    run_nmap,
    validate_extra,
    validate_host,
    validate_script,
    validate_script_args,
)
from tests.helpers import self_signed_server_context

DATA = Path(__file__).parent / "data"
# Recorded with nmap 7.93 (run_nmap, ssl-enum-ciphers + ssl-cert) against four local servers:
PLAINTEXT_PORT, DH1024_PORT, MODERN_PORT, TLS10_PORT = 35577, 36007, 37503, 38413
SCRIPT_DB = Path("/usr/share/nmap/scripts/script.db")
needs_nmap_binary = pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")


def _sample() -> str:
    return (DATA / "nmap_tls_sample.xml").read_text()


# --- script allowlist ------------------------------------------------------------------------


def test_allowlisted_scripts_are_accepted() -> None:
    assert validate_script("ssl-enum-ciphers") == "ssl-enum-ciphers"
    assert validate_script("ssl-cert") == "ssl-cert"
    assert validate_script("dicom-ping") == "dicom-ping"


@pytest.mark.parametrize(
    "name",
    [
        "dicom-brute",  # brute
        "http-slowloris",  # dos
        "smb-vuln-ms17-010",  # vuln/exploit, not allowlisted
        "../../evil",  # path traversal
        "/tmp/evil.nse",
        "ssl-cert,http-slowloris",  # smuggling a list
        "dicom-store",  # writes to an archive
        "default",  # a category, not a script
        "",
    ],
)
def test_other_scripts_are_refused(name: str) -> None:
    with pytest.raises(ScriptRefused):
        validate_script(name)


def test_script_refused_is_a_value_error() -> None:
    assert issubclass(ScriptRefused, ValueError)


def test_dicom_ping_may_be_forced_past_its_portrule() -> None:
    assert validate_script("+dicom-ping") == "+dicom-ping"
    args = build_arguments(
        [4243], scripts=["+dicom-ping"], script_args={}, politeness=Politeness(), extra=(), timeout_s=10
    )
    assert args[args.index("--script") + 1] == "+dicom-ping"


@pytest.mark.parametrize(
    "name",
    [
        "+ssl-enum-ciphers",  # intrusive (a reviewed exception for running, never for forcing)
        "+ssl-dh-params",  # vuln
        "+ssl-cert",  # safe, but not reviewed for forcing
        "+dicom-brute",  # brute, not allowlisted
        "+dicom-store",  # writes to an archive
        "++dicom-ping",
        "+",
        "+ dicom-ping",
        "+dicom-ping,http-slowloris",
        "dicom-ping+",
    ],
)
def test_forcing_is_refused_for_everything_else(name: str) -> None:
    with pytest.raises(ScriptRefused):
        validate_script(name)


def test_every_forceable_script_is_allowlisted_safe_and_in_no_refused_category() -> None:
    for name in FORCEABLE_SCRIPTS:
        categories = ALLOWED_SCRIPTS[name]
        assert "safe" in categories and not categories & (REFUSED_CATEGORIES | {"vuln"}), name
        assert name not in REVIEWED_EXCEPTIONS, name


def test_no_allowlisted_script_is_in_a_refused_category_unless_reviewed() -> None:
    for name, categories in ALLOWED_SCRIPTS.items():
        assert not (categories & REFUSED_CATEGORIES) or name in REVIEWED_EXCEPTIONS, name


@pytest.mark.skipif(not SCRIPT_DB.exists(), reason="nmap's script.db is not installed")
def test_recorded_categories_match_the_installed_script_db() -> None:
    db = SCRIPT_DB.read_text()
    for name, categories in ALLOWED_SCRIPTS.items():
        match = re.search(r'filename = "' + re.escape(name) + r'\.nse", categories = \{ (.*?) \}', db)
        assert match, f"{name} not in script.db"
        installed = frozenset(re.findall(r'"([a-z]+)"', match.group(1)))
        assert installed == categories, name


# --- hosts, ports, flags ---------------------------------------------------------------------


@pytest.mark.parametrize("host", ["example.com", "127.0.0.0/8", "127.0.0.1-5", "127.0.0.1 -oN /tmp/x", "-iL", ""])
def test_non_ip_hosts_are_refused(host: str) -> None:
    with pytest.raises(NmapArgumentError):
        validate_host(host)


def test_run_nmap_refuses_a_name_before_running_anything() -> None:
    with pytest.raises(NmapArgumentError):
        run_nmap(["localhost"], [443], politeness=Politeness(), timeout_s=5)


def test_run_nmap_refuses_a_bad_script_before_running_anything() -> None:
    with pytest.raises(ScriptRefused):
        run_nmap(["127.0.0.1"], [443], scripts=["http-slowloris"], politeness=Politeness(), timeout_s=5)


@pytest.mark.parametrize("port", [0, 65536, -1, True])
def test_bad_ports_are_refused(port: int) -> None:
    with pytest.raises(NmapArgumentError):
        build_arguments([port], scripts=(), script_args={}, politeness=Politeness(), extra=(), timeout_s=10)


@pytest.mark.parametrize(
    "extra", [["-oN", "/tmp/x"], ["--script=http-slowloris"], ["-iL", "hosts"], ["--max-retries"], ["-sU"]]
)
def test_extra_flags_outside_the_allowlist_are_refused(extra: list[str]) -> None:
    with pytest.raises(NmapArgumentError):
        validate_extra(extra)


def test_allowed_extra_flags_pass() -> None:
    assert validate_extra(["-sV", "--version-intensity", "2", "--max-retries", "1"]) == [
        "-sV",
        "--version-intensity",
        "2",
        "--max-retries",
        "1",
    ]


@pytest.mark.parametrize("args", [{"tls.servername": "a,script=evil"}, {"x y": "1"}, {"k": "v'"}, {"k": "{a}"}])
def test_script_args_with_syntax_characters_are_refused(args: dict[str, str]) -> None:
    with pytest.raises(NmapArgumentError):
        validate_script_args(args)


def test_arguments_are_always_connect_scan_no_ping_no_dns_with_politeness() -> None:
    args = build_arguments(
        [443, 8443, 443],
        scripts=["ssl-enum-ciphers", "ssl-cert"],
        script_args={"tls.servername": "pacs.region.example"},
        politeness=Politeness(timing=2, max_concurrency=2, fragile=True),
        extra=(),
        timeout_s=60,
    )
    assert args[:6] == ["-sT", "-Pn", "-n", "-T2", "-p", "443,8443"]
    assert args[args.index("--host-timeout") + 1] == "60s"
    assert args[args.index("--max-parallelism") + 1] == "2"
    assert args[args.index("--script") + 1] == "ssl-enum-ciphers,ssl-cert"
    assert args[args.index("--script-timeout") + 1] == "48s"
    assert args[args.index("--script-args") + 1] == "tls.servername=pacs.region.example"


def test_every_run_is_capped_at_max_concurrency_per_system() -> None:
    """More cases (shared runs, strict systems, planning) in tests/probes/test_parallelism.py."""
    args = build_arguments([443], scripts=(), script_args={}, politeness=Politeness(), extra=(), timeout_s=10)
    assert args[args.index("--max-parallelism") + 1] == "4"


# --- errors ----------------------------------------------------------------------------------


def test_missing_binary_is_tool_missing() -> None:
    with pytest.raises(NmapError) as info:
        run_nmap(["127.0.0.1"], [443], politeness=Politeness(), timeout_s=5, nmap_path="/nonexistent/bin/nmap")
    assert info.value.reason is ProbeErrorReason.TOOL_MISSING


@contextmanager
def _silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@needs_nmap_binary
def test_process_stopped_at_its_limit_is_timeout_or_keeps_what_nmap_wrote() -> None:
    """nmap -sV waits minutes on a silent port; the process limit stops it (a real process, a real port)."""
    with _silent_port() as port:
        kw: dict[str, Any] = {"politeness": Politeness(), "extra": ["-sV"], "timeout_s": 120, "process_timeout_s": 3}
        with pytest.raises(NmapError) as info:
            run_nmap(["127.0.0.1"], [port], **kw)
        assert info.value.reason is ProbeErrorReason.TIMEOUT
        assert info.value.detail == "nmap did not finish within 3s"
        run = run_nmap(["127.0.0.1"], [port], keep_partial=True, **kw)
    assert run.cut_short == "nmap did not finish within 3s"
    assert "<nmaprun" in run.xml and "<runstats>" not in run.xml
    with pytest.raises(NmapError):  # the one-document parser refuses it; the service parser reads it host by host
        parse_nmap_xml(run.xml)


def test_nmap_failure_is_tool_failed(tmp_path: Path) -> None:
    """An nmap that answers -V but fails the scan (status 1, a message, no XML): TOOL_FAILED with its message."""
    fake = tmp_path / "nmap"
    fake.write_text(
        '#!/bin/sh\nif [ "$1" = "-V" ]; then echo "Nmap version 7.93 ( https://nmap.org )"; exit 0; fi\n'
        'echo "Failed to open device lo" >&2\nexit 1\n'
    )
    fake.chmod(0o755)
    with pytest.raises(NmapError) as info:
        run_nmap(["127.0.0.1"], [443], politeness=Politeness(), timeout_s=5, nmap_path=str(fake))
    assert info.value.reason is ProbeErrorReason.TOOL_FAILED
    assert info.value.detail == "Failed to open device lo"


# --- XML parsing -----------------------------------------------------------------------------


def test_recorded_xml_parses_into_structured_script_tables() -> None:
    scan = parse_nmap_xml(_sample())
    assert scan.finished_ok
    assert scan.hosts_up == {"127.0.0.1"}
    dh = scan.ports[("127.0.0.1", DH1024_PORT)]
    assert dh.state == "open"
    enum = dh.scripts["ssl-enum-ciphers"].data
    assert isinstance(enum, dict)
    tls12 = enum["TLSv1.2"]
    assert isinstance(tls12, dict)
    ciphers = tls12["ciphers"]
    assert isinstance(ciphers, list)
    first = ciphers[0]
    assert first == {"kex_info": "dh 1024", "name": "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "strength": "A"}
    assert tls12["compressors"] == ["NULL"]
    assert tls12["warnings"] == ["Key exchange (dh 1024) of lower strength than certificate key"]
    assert enum["least strength"] == "A"
    assert "TLSv1.2:" in dh.scripts["ssl-enum-ciphers"].output  # the flat text is kept too


def test_ssl_cert_table_keeps_nested_structure() -> None:
    cert = parse_nmap_xml(_sample()).ports[("127.0.0.1", MODERN_PORT)].scripts["ssl-cert"].data
    assert isinstance(cert, dict)
    assert cert["subject"] == {"commonName": "test.local"}
    pubkey = cert["pubkey"]
    assert isinstance(pubkey, dict)
    assert pubkey["bits"] == "2048"
    assert isinstance(cert["extensions"], list)
    assert str(cert["pem"]).startswith("-----BEGIN CERTIFICATE-----")


def test_protocols_per_port_in_recording() -> None:
    ports = parse_nmap_xml(_sample()).ports
    tls10 = ports[("127.0.0.1", TLS10_PORT)].scripts["ssl-enum-ciphers"].data
    modern = ports[("127.0.0.1", MODERN_PORT)].scripts["ssl-enum-ciphers"].data
    assert isinstance(tls10, dict) and isinstance(modern, dict)
    assert [k for k in tls10 if k.startswith("TLS")] == ["TLSv1.0"]
    assert [k for k in modern if k.startswith("TLS")] == ["TLSv1.2", "TLSv1.3"]
    assert ports[("127.0.0.1", PLAINTEXT_PORT)].scripts == {}  # no TLS found: the scripts did not run


def test_nse_tree_mixed_and_empty_tables() -> None:
    import defusedxml.ElementTree as SafeET

    node = SafeET.fromstring('<script id="x"><elem key="a">1</elem><elem>2</elem><table key="t"/></script>')
    assert nse_tree(node) == {"a": "1", "t": {}, "_items": ["2"]}


def test_entity_expansion_is_refused() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE nmaprun [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><nmaprun>&b;</nmaprun>'
    )
    with pytest.raises(NmapError) as info:
        parse_nmap_xml(bomb)
    assert info.value.reason is ProbeErrorReason.TOOL_FAILED


def test_truncated_xml_is_tool_failed() -> None:
    xml = _sample()
    with pytest.raises(NmapError):
        parse_nmap_xml(xml[: len(xml) // 2])


def test_xml_without_runstats_is_not_finished() -> None:
    scan = parse_nmap_xml(
        '<nmaprun><host><status state="up"/><address addr="127.0.0.1" addrtype="ipv4"/></host></nmaprun>'
    )
    assert not scan.finished_ok


# --- live --------------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[int]:
    """A one-cert TLS 1.2/1.3 server on an ephemeral loopback port."""
    ctx = self_signed_server_context(tmp_path, "nmap-test.local")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            try:
                conn.settimeout(2)
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except OSError:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(2)
    sock.close()


@pytest.mark.needs_nmap
@needs_nmap_binary
def test_live_scan_detects_tls_on_an_ephemeral_port(tls_server: int) -> None:
    result = run_nmap(
        ["127.0.0.1"],
        [tls_server],
        scripts=["ssl-enum-ciphers", "ssl-cert"],
        politeness=Politeness(timing=4),
        timeout_s=60,
    )
    assert result.command[1:4] == ["-oX", "-", "127.0.0.1"]
    assert {"-sT", "-Pn", "-n", "-T4"} <= set(result.command)
    assert len(result.xml_sha256) == 64
    port = parse_nmap_xml(result.xml).ports[("127.0.0.1", tls_server)]
    assert port.state == "open"
    enum = port.scripts["ssl-enum-ciphers"].data  # shortport.ssl found TLS although the port is not 443
    assert isinstance(enum, dict)
    assert "TLSv1.2" in enum and "TLSv1.3" in enum

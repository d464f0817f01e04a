"""Target text is hostile: one boundary (scanner/textsafe.py) cleans it before the store, exports, reports or the
terminal meet it. Live servers on loopback send NUL, lone surrogates, ESC/OSC sequences, rich markup and bidi
overrides; everything downstream must neither crash nor let them out raw (issue 16: a NUL lost a PostgreSQL run,
a lone surrogate stopped every report, markup in a header broke the scan table before notices were sent)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine, text

from scanner.cli import main
from scanner.textsafe import MAX_TEXT_CHARS, clean_text, clean_value, is_clean
from tests.helpers import make_workspace, self_signed_server_context, system
from tests.postgres import PostgresCluster, postgres_skip_reason

HOST = "127.0.0.77"
NASTY = "\x00\x1b[2J\x1b]0;pwned\x07\x1b]8;;http://x\x1b\\[link=http://x]ALL CONTROLS PASS[/link][/]\ud83d\u202e\x9b"

# Text a target may send: every Unicode code point (lone surrogates included) with the dangerous ones made likely.
hostile_text = st.lists(
    st.one_of(
        st.sampled_from(
            [
                "\x00",
                "\x1b",
                "\x1b[31m",
                "\x07",
                "\r",
                "\n",
                "[",
                "[/]",
                "[bold]",
                "\ud83d",
                "\udfff",
                "\u202e",
                "\u2066",
                "\x85",
                "\x9b",
                "<script>",
                "&amp;",
                "'",
                '"',
                "{",
                "}",
            ]
        ),
        st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=8),
    ),
    min_size=1,
    max_size=12,
).map("".join)


# -- the cleaner itself ---------------------------------------------------------------------------------------


@given(hostile_text)
def test_cleaned_text_is_safe_encodable_and_stable(raw: str) -> None:
    cleaned = clean_text(raw)
    assert is_clean(cleaned)
    cleaned.encode("utf-8")  # a lone surrogate would raise here
    assert clean_text(cleaned) == cleaned
    assert not any(ch in cleaned for ch in "\x00\x1b\r\x07\x9b\u202e")


def test_dangerous_characters_stay_visible_as_tokens() -> None:
    assert clean_text("a\x00b\x1b[2Jc\u202ed\ud83de") == "a\\x00b\\x1b[2Jc<U+202E>d\ufffde"
    assert clean_text("tab\tand\nnewline") == "tab\tand\nnewline"  # meaningful in banners; every output handles them
    long = clean_text("x" * (MAX_TEXT_CHARS + 10))
    assert long.startswith("x" * MAX_TEXT_CHARS) and long.endswith("[10 more characters cut]")


def test_clean_value_cleans_keys_and_nested_values_and_bounds_depth() -> None:
    deep: Any = "bottom"
    for _ in range(100):
        deep = [deep]
    cleaned = clean_value({"k\x00": ["v\x1b", {"\u202e": 1, "n": None, "b": True}], "deep": deep})
    assert cleaned["k\\x00"] == ["v\\x1b", {"<U+202E>": 1, "n": None, "b": True}]
    assert "nesting too deep" in json.dumps(cleaned["deep"])


# -- a hostile FHIR server, live ------------------------------------------------------------------------------


class HostileFhir:
    """A FHIR server over TLS on loopback whose CapabilityStatement carries whatever text the test sets."""

    def __init__(self, directory: Path) -> None:
        self.payload = [NASTY]
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.endswith("/metadata"):
                    p = owner.payload
                    doc = {
                        "resourceType": "CapabilityStatement",
                        "fhirVersion": p[0],
                        "rest": [
                            {
                                "security": {
                                    "service": [{"coding": [{"code": "SMART-on-FHIR"}]}] + [{"text": t} for t in p]
                                },
                                "resource": [{"type": t} for t in p] + [{"type": "Patient"}],
                            }
                        ],
                    }
                    body = json.dumps(doc).encode()  # ASCII: a lone surrogate travels as its \\ud83d escape
                    self.send_response(200)
                else:
                    body, _ = b'{"resourceType":"OperationOutcome"}', self.send_response(401)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.socket = self_signed_server_context(directory, "fhir.hostile.test").wrap_socket(
            self.server.socket, server_side=True
        )
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def fhir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileFhir]:
    server = HostileFhir(tmp_path_factory.mktemp("fhir"))
    yield server
    server.close()


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _scan_everything(root: Path, store_url: str) -> dict[str, str]:
    """scan (table and JSON), every export and the HTML report, in-process through the CLI as a user runs them."""
    runner = CliRunner()
    config = str(root / "config.yaml")
    outputs: dict[str, str] = {}
    for fmt in ("table", "json", "csv"):
        result = runner.invoke(
            main, ["scan", "--config", config, "--control", "EXP-04", "--format", fmt], env={"COLUMNS": "2000"}
        )
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert result.exit_code in (0, 1), result.output  # findings, not a crash
        outputs[f"scan-{fmt}"] = result.output
    for fmt in ("json", "csv", "sarif", "junit"):
        out = root / f"export.{fmt}"
        result = runner.invoke(main, ["export", "--config", config, "--format", fmt, "--out", str(out)])
        assert result.exit_code == 0, result.output
        outputs[f"export-{fmt}"] = out.read_text(encoding="utf-8")  # strict: a lone surrogate cannot be there
    result = runner.invoke(main, ["report", "--config", config, "--out", str(root / "reports")])
    assert result.exit_code == 0, result.output
    for page in sorted((root / "reports").glob("*.html")):
        outputs[page.name] = page.read_text(encoding="utf-8")
    assert "index.html" in outputs and "region-testregion.html" in outputs
    assert not list((root / "reports").glob("*.tmp")) and not list((root / "reports").glob(".*.tmp"))
    engine = create_engine(store_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT message, evidence FROM finding")).all()
    finally:
        engine.dispose()
    assert rows, "the scan stored no finding"
    stored = [r[0] for r in rows] + [
        s for r in rows for s in _strings(r[1] if isinstance(r[1], dict) else json.loads(r[1]))
    ]
    outputs["store"] = "\n".join(stored)
    return outputs


def _assert_nothing_raw(outputs: dict[str, str]) -> None:
    for name, body in outputs.items():
        body = body.replace("\r\n", "\n")  # CSV's own line ends
        assert is_clean(body), f"{name} holds raw control, escape, surrogate or bidi characters"
        assert "\x1b" not in body and "\x00" not in body, name


def _workspace(root: Path, fhir: HostileFhir, store_url: str) -> None:
    portal = system("portal", HOST, fhir.port, "fhir")
    portal["endpoints"][0]["path"] = "/fhir"
    make_workspace(root, [portal], extra_config={"store_url": store_url})


def test_fixed_hostile_capability_statement_reaches_nothing_raw(fhir: HostileFhir, tmp_path: Path) -> None:
    fhir.payload = [NASTY]
    _workspace(tmp_path, fhir, f"sqlite:///{tmp_path / 'h.db'}")
    outputs = _scan_everything(tmp_path, f"sqlite:///{tmp_path / 'h.db'}")
    _assert_nothing_raw(outputs)
    # Not dropped silently: the evidence shows what the target sent, as visible tokens.
    assert "\\x1b[2J" in outputs["store"] and "<U+202E>" in outputs["store"] and "\ufffd" in outputs["store"]
    # rich did not read the target's markup: the brackets are printed as text, no link was made.
    assert "[link=http://x]ALL CONTROLS PASS[/link]" in outputs["scan-table"]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.lists(hostile_text, min_size=1, max_size=3))
def test_property_any_target_text_sqlite(
    fhir: HostileFhir, tmp_path_factory: pytest.TempPathFactory, payload: list[str]
) -> None:
    root = tmp_path_factory.mktemp("prop")
    fhir.payload = payload
    _workspace(root, fhir, f"sqlite:///{root / 'h.db'}")
    _assert_nothing_raw(_scan_everything(root, f"sqlite:///{root / 'h.db'}"))


@pytest.mark.needs_postgres
@pytest.mark.skipif(postgres_skip_reason() is not None, reason=str(postgres_skip_reason()))
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.lists(hostile_text, min_size=1, max_size=3))
def test_property_any_target_text_postgres(
    fhir: HostileFhir, postgres_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory, payload: list[str]
) -> None:
    root = tmp_path_factory.mktemp("prop-pg")
    url = postgres_cluster.new_database()
    fhir.payload = [*payload, "\x00"]  # PostgreSQL text refuses NUL: a raw one would lose the run
    _workspace(root, fhir, url)
    _assert_nothing_raw(_scan_everything(root, url))


# -- hostile HTTP answers: a NUL in a status line, markup and escapes in headers -------------------------------


class RawHttp:
    """Answers every connection on loopback with the same raw bytes (a status line and headers chosen by the test)."""

    def __init__(self, answer: bytes) -> None:
        self.sock = socket.create_server((HOST, 0))
        self.port = int(self.sock.getsockname()[1])
        self.answer = answer
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(65536)
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def test_nul_in_a_log_backends_status_line_does_not_lose_the_postgres_run(
    tmp_path: Path, postgres_cluster: PostgresCluster
) -> None:
    """Issue 16 #1: an error *message* with a NUL made psycopg refuse the run; every other system's findings were lost."""
    if (why := postgres_skip_reason()) is not None:
        pytest.skip(why)
    server = RawHttp(b"HTTP/1.1 500 Internal\x00Error\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    try:
        logged = system("epj", HOST, server.port, "http")
        logged["audit_log"] = {"backend": "http-json", "url": f"http://{HOST}:{server.port}/x", "fields": {"time": "t"}}
        url = postgres_cluster.new_database()
        make_workspace(tmp_path, [logged], extra_config={"store_url": url})
        result = CliRunner().invoke(main, ["scan", "--config", str(tmp_path / "config.yaml"), "--family", "logging"])
        assert result.exit_code in (0, 1), result.output
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                status = conn.execute(text("SELECT status FROM scan_run")).scalar_one()
                messages = [m for (m,) in conn.execute(text("SELECT message FROM finding"))]
        finally:
            engine.dispose()
        assert status == "complete"
        assert any("Internal\\x00Error" in m for m in messages), messages
    finally:
        server.close()


def test_markup_and_escapes_in_headers_print_as_text(tmp_path: Path) -> None:
    """Issue 16 #5: `Location: http://x/[/evil]` raised MarkupError after the run was stored, before notices."""
    answer = (
        b"HTTP/1.1 301 Moved\r\nLocation: http://x/[/evil]\x1b]0;title\x07\x1b[2J[link=http://e]x[/link]\r\n"
        b"Server: Apache \xe2\x80\xae\x1b[32mALL CONTROLS PASS\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    server = RawHttp(answer)
    try:
        make_workspace(tmp_path, [system("epj", HOST, server.port, "http")])
        config = str(tmp_path / "config.yaml")
        result = CliRunner().invoke(main, ["scan", "--config", config, "--control", "TLS-07"], env={"COLUMNS": "2000"})
        assert result.exit_code == 1, result.output  # a fail finding, printed: no MarkupError after the store
        assert "\x1b" not in result.output and "\x07" not in result.output and "\u202e" not in result.output
        assert "Location http://x/[/evil]\\x1b]0;title\\x07\\x1b[2J[link=http://e]x[/link]" in result.output
    finally:
        server.close()


def test_a_store_written_before_the_boundary_still_reports(fhir: HostileFhir, tmp_path: Path) -> None:
    """Issue 16 #2: a lone surrogate already in a store's evidence (JSON \\ud83d) stopped every report and export."""
    fhir.payload = ["plain"]
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _workspace(tmp_path, fhir, url)
    assert CliRunner().invoke(
        main, ["scan", "--config", str(tmp_path / "config.yaml"), "--control", "EXP-04"]
    ).exit_code in (0, 1)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            old = '{"fhir.fhir_version": "\\ud83d\\u001b[2J\\u202e", "x\\u0000": "\\udfff"}'
            conn.execute(text("UPDATE finding SET evidence = :e, message = :m"), {"e": old, "m": "old \x1b[31m\u202e"})
    finally:
        engine.dispose()
    outputs = _scan_everything(tmp_path, url)  # scans again (unchanged verdict: the old row stays current) and reports
    del outputs["store"]  # the old rows themselves are what they are; everything read from them must be clean
    _assert_nothing_raw(outputs)
    assert "old \\x1b[31m<U+202E>" in outputs["export-csv"]  # shown, as visible tokens


def test_scan_csv_defuses_formulas_like_the_export(capsys: pytest.CaptureFixture[str]) -> None:
    """A message that starts with target text (=, +, -, @) must not run as a formula in the operator's spreadsheet."""
    from scanner.cli import _print_records
    from scanner.models import Status
    from scanner.results import FindingRecord

    record = FindingRecord(
        "TLS-04", "tls", "high", "r", "s", "s/ep", "high", Status.FAIL, '=HYPERLINK("http://x","ok")', {}
    )
    _print_records([record], "csv")
    out = capsys.readouterr().out
    assert "'=HYPERLINK" in out and ",=HYPERLINK" not in out and '"=HYPERLINK' not in out

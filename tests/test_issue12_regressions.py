"""Issue 12, items 2, 5 (LOG-05), 6 and 7 as a user meets them: `hcscan scan`, `export` and `report` on one small
workspace, through the CLI only, so the test runs unchanged on the main of 2026-12-02 morning (8848154), where each
assertion below fails for the reason the issue gives, and on today's main, where it passes.

Real things on loopback only: an HTTP server that sends neither a `Date` nor a `Server` header (as Orthanc's REST
port does) on 127.0.0.1, and a per-host syslog file just rotated the way logrotate leaves it with `delaycompress`
(an empty current file, `.1` holding the last minutes, an older `.2.gz`).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scanner.cli import main
from scanner.lab.procs import stop_process
from tests.helpers import make_workspace, system

CONTROLS = ("LOG-01", "LOG-02", "LOG-05")


class _NoDateNoServer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response_only(200)  # no Server and no Date header
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_HEAD = do_GET

    def log_message(self, *args: Any) -> None:
        pass


class _Plain(_NoDateNoServer):
    def do_GET(self) -> None:
        self.send_response(200)  # with Server and Date: LOG-05 passes on the first run
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_HEAD = do_GET


@pytest.fixture(scope="module")
def web() -> Iterator[tuple[int, int]]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), handler) for handler in (_NoDateNoServer, _Plain)]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield int(servers[0].server_address[1]), int(servers[1].server_address[1])
    for server in servers:
        server.shutdown()
        server.server_close()


def _line(when: dt.datetime) -> str:
    return f"<86>1 {when.isoformat()} epj01 epj-audit 42 - - user=u1 patient=0101 action=read\n"


@pytest.fixture(scope="module")
def workspace(web: tuple[int, int], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("issue12")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    logs = root / "remote" / "epj"
    logs.mkdir(parents=True)
    (logs / "audit.log").write_bytes(b"")  # logrotate just moved the day's events to audit.log.1
    (logs / "audit.log.1").write_text("".join(_line(now - dt.timedelta(minutes=m)) for m in (9, 7, 5)))
    with gzip.open(logs / "audit.log.2.gz", "wt") as gz:
        gz.write(_line(now - dt.timedelta(days=200)))
    epj = system("epj", "127.0.0.1", web[0], "http")
    epj["endpoints"].append({"id": "web", "host": "127.0.0.1", "port": web[1], "protocol": "http"})
    epj["audit_log"] = {"backend": "syslog-files", "path": str(logs / "audit.log")}
    make_workspace(root, [epj])
    return root


def _run(workspace: Path, *args: str) -> str:
    result = CliRunner().invoke(main, [*args, "--config", str(workspace / "config.yaml")], env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 1), result.output
    return result.output


@pytest.fixture(scope="module")
def first_run(workspace: Path) -> dict[str, dict[str, Any]]:
    """The first run of this workspace: findings by control (LOG-05 by endpoint) from `hcscan export`."""
    only = [a for c in CONTROLS for a in ("--control", c)]
    _run(workspace, "scan", *only)
    out = workspace / "first.json"
    _run(workspace, "export", "--format", "json", "--out", str(out))
    data = json.loads(out.read_text(encoding="utf-8"))
    rows = data["findings"] if isinstance(data, dict) else data
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        control, endpoint = str(row.get("control_id") or row.get("control")), str(row.get("endpoint"))
        found[f"{control} {endpoint}" if control == "LOG-05" else control] = dict(row)
    return found


def test_a_just_rotated_log_is_judged_from_its_rotated_files(first_run: dict[str, dict[str, Any]]) -> None:
    """Item 2: an empty current file and a rotated `.1` with an event minutes old was 'could not assess'."""
    assert first_run["LOG-01"]["status"] == "pass", first_run["LOG-01"]
    assert first_run["LOG-02"]["status"] == "pass", first_run["LOG-02"]  # 200 days kept, in .2.gz
    assert "audit.log.1" in first_run["LOG-01"]["message"]


def test_no_date_header_is_could_not_assess_in_a_sentence(first_run: dict[str, dict[str, Any]]) -> None:
    """Item 5: LOG-05 without a Date header was `fail` with 'cannot be compared: skew unknown s'."""
    log05 = first_run["LOG-05 epj/ep"]
    assert log05["status"] == "error", log05
    assert "Date header" in log05["message"] and "unknown s" not in log05["message"], log05


def test_a_first_sighting_is_new_whatever_its_status(first_run: dict[str, dict[str, Any]]) -> None:
    """Item 6: first-run passes were exported as `change: unchanged` (and the run said '… unchanged')."""
    assert first_run["LOG-05 epj/web"]["status"] == "pass", first_run["LOG-05 epj/web"]
    assert {k: f["change"] for k, f in first_run.items()} == dict.fromkeys(first_run, "new")
    assert len(first_run) == 4


def test_the_report_header_counts_declared_endpoints_only(
    workspace: Path, first_run: dict[str, dict[str, Any]]
) -> None:
    """Item 7: system-level findings (LOG-01/02 on `epj/*`) were counted as endpoints in the region header."""
    assert "epj/*" in {f.get("endpoint") for f in first_run.values()}
    assert "2 endpoint(s)" in _run(workspace, "validate")
    _run(workspace, "report", "--out", str(workspace / "reports"))
    page = (workspace / "reports" / "region-testregion.html").read_text(encoding="utf-8")
    header = re.search(r'data-testid="n-systems">(\d+)</span> \w+, (\d+) endpoints', page)
    assert header is not None and header.groups() == ("1", "2"), header


# -- item 4: a hidden version and a missing Server header are one evidence gap ---------------------------------------

ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
_no_item4 = (
    "nmap is not installed"
    if shutil.which("nmap") is None
    else "Debian package orthanc is not installed"
    if ORTHANC is None
    else None
)
if _no_item4 is not None:
    print(f"skipping the hidden-version scan of issue 12.4: {_no_item4}")


class _ApacheProd(BaseHTTPRequestHandler):
    """Answers as Apache with `ServerTokens Prod` does: `Server: Apache`, no version."""

    def version_string(self) -> str:
        return "Apache"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def orthanc_rest(tmp_path: Path) -> Iterator[int]:
    """Debian's Orthanc with only its REST port (it sends no Server header), a login required, on loopback."""
    assert ORTHANC is not None
    port = _free_port()
    (tmp_path / "db").mkdir()
    config = {
        "Name": "issue12-rest",
        "StorageDirectory": str(tmp_path / "db"),
        "IndexDirectory": str(tmp_path / "db"),
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {"admin": "issue12-not-used"},
        "DicomServerEnabled": False,
    }
    (tmp_path / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
    log = (tmp_path / "orthanc.log").open("wb")
    proc = subprocess.Popen([ORTHANC, str(tmp_path / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"Orthanc did not listen: {(tmp_path / 'orthanc.log').read_text(errors='replace')}")
                time.sleep(0.2)
        yield port
    finally:
        stop_process(proc)
        log.close()


@pytest.mark.slow
@pytest.mark.needs_nmap
@pytest.mark.skipif(_no_item4 is not None, reason=f"{_no_item4} (make test installs it)")
def test_server_apache_without_version_and_no_server_header_read_the_same(orthanc_rest: int, tmp_path: Path) -> None:
    """Item 4: `Server: Apache` was 'could not assess' (counted), Orthanc's REST port 'not applicable' (not counted)."""
    apache = ThreadingHTTPServer(("127.0.0.1", 0), _ApacheProd)
    apache.daemon_threads = True
    threading.Thread(target=apache.serve_forever, args=(0.05,), daemon=True).start()
    try:
        make_workspace(
            tmp_path,
            [
                system("intranet", "127.0.0.1", int(apache.server_address[1]), "http"),
                system("pacs-rest", "127.0.0.1", orthanc_rest, "http"),
            ],
            extra_config={"politeness": {"timeout_s": 20}},
        )
        only = [a for c in ("PAT-01", "PAT-02", "PAT-05") for a in ("--control", c)]
        result = CliRunner().invoke(
            main, ["scan", "--config", str(tmp_path / "config.yaml"), "--format", "json", *only]
        )
    finally:
        apache.shutdown()
        apache.server_close()
    assert result.exit_code in (0, 1), result.output
    findings, _ = json.JSONDecoder().raw_decode(result.stdout)  # a notice line may follow on stderr
    verdicts = {(f["control"], f["system"]): (f["status"], f["message"]) for f in findings}
    assert len(verdicts) == 6, verdicts
    # counted as not passed for both (the old main left the Orthanc port out of the score as not_applicable)
    assert {key: status for key, (status, _) in verdicts.items()} == dict.fromkeys(verdicts, "error"), verdicts
    for key, (_, message) in verdicts.items():  # one rule, stated, with the hint to declare the software
        # nmap's -sV now and then soft-matches Orthanc's REST port as another product ('Nagios NSCA' under load):
        # then the product nmap named is not in the data, which is stated as such, with the same hint.
        unseen = "not visible" in message or "is not in hcscan's version data" in message
        assert unseen and "software:" in message, (key, message)

"""The availability sampler against real DICOM SCPs nobody here wrote (issue 12.3: a strict PACS was "down").

Debian's Orthanc and dcmtk, started by the test with configs it writes (storage in a temp dir; the sampler talks to
127.0.0.1 only; only A-ASSOCIATE, C-ECHO and A-RELEASE are ever sent to them):
- Orthanc that checks AE titles (DicomCheckCalledAet, DicomAlwaysAllowEcho/Store/Find/... false, one entry in
  DicomModalities): the exact setup of the issue — "Calling AE title not recognised" → up with the rejection; the
  declared calling AE title → accepted and echoed → up. Orthanc refusing only the C-ECHO (DicomAlwaysAllowEcho false,
  stores still allowed) aborts the association it accepted → up, with that recorded.
- `dcmqrscp` that knows one peer (VIEWER01 from 127.0.0.1) under the AE title PACS01: an unknown calling AE
  title is rejected (A-ASSOCIATE-RJ) → the sample is up and keeps the rejection; the declared calling AE title is
  accepted and echoed → up; nothing listening → down.
- `storescp +tls` with a test-made certificate: the same rules over TLS (accepted → up; `--refuse` → rejected →
  up with the rejection; stopped → down).
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scanner.availability import EndpointCheck
from scanner.lab.procs import stop_process
from scanner.probes.availability import AvailabilitySampler, Sample, SamplerSettings
from scanner.probes.base import Politeness, Target
from tests.helpers import make_workspace, self_signed_server_context, system

DCMQRSCP, STORESCP = shutil.which("dcmqrscp"), shutil.which("storescp")
ORTHANC = shutil.which("Orthanc") or ("/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else None)
_reason = None if DCMQRSCP and STORESCP else "Debian package dcmtk is not installed"
_no_orthanc = None if ORTHANC else "Debian package orthanc is not installed"
for _why in (_reason, _no_orthanc):
    if _why is not None:
        print(f"skipping real PACS tests: {_why}")
pytestmark = pytest.mark.slow
live = pytest.mark.skipif(_reason is not None, reason=f"{_reason} (make test installs it)")
live_orthanc = pytest.mark.skipif(_no_orthanc is not None, reason=f"{_no_orthanc} (make test installs it)")

# dcmtk's servers listen on every address; the sampler only ever talks to 127.0.0.1.
HOST = "127.0.0.1"
PACS_AET, KNOWN_AET = "PACS01", "VIEWER01"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"DICOM server exited with {proc.returncode}: {log.read_text(errors='replace')[-2000:]}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"DICOM server did not listen on {port}: {log.read_text(errors='replace')[-2000:]}")


class _Server:
    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.port, self.log = port, log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT)
        _wait_listening(port, self.proc, log)

    def stop(self) -> None:
        stop_process(self.proc)
        self._out.close()


@pytest.fixture
def strict_pacs(tmp_path: Path) -> Iterator[_Server]:
    """dcmqrscp that knows only VIEWER01 (from 127.0.0.1) as a peer of PACS01."""
    port = _free_port()
    (tmp_path / "db").mkdir()
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 4\n"
        f"HostTable BEGIN\nviewer = ({KNOWN_AET}, {HOST}, 11113)\nknown = viewer\nHostTable END\n"
        "VendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\n{PACS_AET} {tmp_path / 'db'} R (10, 10mb) known\nAETable END\n",
        encoding="utf-8",
    )
    assert DCMQRSCP is not None
    server = _Server(
        [DCMQRSCP, "-c", str(config), "--disable-host-lookup", "-ll", "info", str(port)], port, tmp_path / "qr.log"
    )
    try:
        yield server
    finally:
        server.stop()


def _orthanc(tmp_path: Path, *, strict: bool) -> _Server:
    """Orthanc with DICOM only (no HTTP server), knowing one modality: VIEWER01 at 127.0.0.1."""
    port = _free_port()
    storage = tmp_path / "orthanc-db"
    storage.mkdir()
    config: dict[str, Any] = {
        "Name": "hcscan-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "Plugins": [],
        "HttpServerEnabled": False,
        "RemoteAccessAllowed": False,
        "DicomServerEnabled": True,
        "DicomAet": PACS_AET,
        "DicomPort": port,
        "DicomCheckCalledAet": True,
        "DicomAlwaysAllowEcho": False,
        "DicomModalities": {"viewer": [KNOWN_AET, HOST, 11113]},
    }
    if strict:  # nothing for unknown callers: Orthanc then rejects their association itself
        for kind in ("Store", "Find", "FindWorklist", "Get", "Move"):
            config[f"DicomAlwaysAllow{kind}"] = False
    path = tmp_path / "orthanc.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    assert ORTHANC is not None
    return _Server([ORTHANC, str(path)], port, tmp_path / "orthanc.log")


def _tls_storescp(tmp_path: Path, *extra: str) -> _Server:
    self_signed_server_context(tmp_path, "pacs-tls")  # writes pacs-tls.key.pem / pacs-tls.crt.pem
    port = _free_port()
    out = tmp_path / "received"
    out.mkdir(exist_ok=True)
    assert STORESCP is not None
    argv = [STORESCP, "+tls", str(tmp_path / "pacs-tls.key.pem"), str(tmp_path / "pacs-tls.crt.pem"), "-ic",
            "-aet", PACS_AET, "-od", str(out), "-ll", "info", *extra, str(port)]  # fmt: skip
    return _Server(argv, port, tmp_path / "storescp.log")


def _sample(port: int, protocol: str, check: dict[str, Any] | None = None) -> Sample:
    declared: dict[str, Any] = {"endpoint": {"id": "pacs"}}
    if check is not None:
        declared["system"] = {"availability": {"checks": {"pacs": check}}}
    target = Target("pacs/pacs", "pacs", HOST, port, protocol, politeness=Politeness(timeout_s=5), declared=declared)
    sampler = AvailabilitySampler(SamplerSettings(timeout_s=5.0, retry_delay_s=0.2))
    return sampler.sample([target])[target.key]


@live
def test_strict_pacs_rejecting_an_unknown_calling_ae_title_is_up_with_the_rejection(strict_pacs: _Server) -> None:
    s = _sample(strict_pacs.port, "dicom", {"ae_title": PACS_AET})
    assert (s.method, s.up, s.reason) == ("dicom", True, None), s
    assert s.detail is not None and s.detail.startswith("association rejected: "), s
    assert "Rejected Permanent" in s.detail and f"calling HCSCAN to called {PACS_AET}" in s.detail
    assert s.attempts == 1 and s.latency_ms is not None
    # dcmqrscp logged the association it refused: the sample really reached the DICOM application
    assert "Refusing Association" in strict_pacs.log.read_text(errors="replace")


@live
def test_strict_pacs_accepts_the_declared_calling_ae_title_and_echoes(strict_pacs: _Server) -> None:
    s = _sample(strict_pacs.port, "dicom", {"ae_title": PACS_AET, "calling_ae_title": KNOWN_AET})
    assert (s.up, s.reason, s.detail) == (True, None, None), s
    log = strict_pacs.log.read_text(errors="replace")
    assert f"{KNOWN_AET} -> {PACS_AET}" in log and "Received Echo SCP RQ" in log


@live_orthanc
def test_orthanc_checking_ae_titles_rejects_an_unknown_caller_and_is_up(tmp_path: Path) -> None:
    server = _orthanc(tmp_path, strict=True)
    try:
        unknown = _sample(server.port, "dicom", {"ae_title": PACS_AET})
        known = _sample(server.port, "dicom", {"ae_title": PACS_AET, "calling_ae_title": KNOWN_AET})
    finally:
        server.stop()
    assert (unknown.up, unknown.reason, unknown.attempts) == (True, None, 1), unknown
    assert unknown.detail is not None and "Calling AE title not recognised" in unknown.detail, unknown
    assert (known.up, known.reason, known.detail) == (True, None, None), known
    assert "Rejected association for remote AET HCSCAN" in server.log.read_text(errors="replace")


@live_orthanc
def test_orthanc_refusing_only_the_echo_of_an_unknown_caller_is_up(tmp_path: Path) -> None:
    server = _orthanc(tmp_path, strict=False)
    try:
        s = _sample(server.port, "dicom", {"ae_title": PACS_AET})
    finally:
        server.stop()
    assert (s.up, s.reason, s.attempts) == (True, None, 1), s
    assert s.detail is not None and "C-ECHO refused" in s.detail, s
    assert 'Rejected Echo request from remote DICOM modality with AET "HCSCAN"' in server.log.read_text(
        errors="replace"
    )


@live
def test_nothing_listening_is_down() -> None:
    s = _sample(_free_port(), "dicom", {"ae_title": PACS_AET})
    assert (s.up, s.reason, s.attempts) == (False, "refused", 2), s


@live
def test_dicom_over_tls_is_an_association_too(tmp_path: Path) -> None:
    server = _tls_storescp(tmp_path)
    try:
        s = _sample(server.port, "dicom-tls", {"ae_title": PACS_AET})
    finally:
        server.stop()
    assert (s.method, s.up, s.reason, s.detail) == ("dicom", True, None, None), s
    log = server.log.read_text(errors="replace")
    assert "Association Acknowledged" in log and "Received Echo Request" in log
    down = _sample(server.port, "dicom-tls", {"ae_title": PACS_AET})
    assert (down.up, down.reason) == (False, "refused"), down


@live
def test_dicom_over_tls_rejecting_is_up_with_the_rejection(tmp_path: Path) -> None:
    server = _tls_storescp(tmp_path, "--refuse")
    try:
        s = _sample(server.port, "dicom-tls", {"ae_title": PACS_AET})
    finally:
        server.stop()
    assert (s.method, s.up, s.reason) == ("dicom", True, None), s
    assert s.detail is not None and s.detail.startswith("association rejected: "), s
    assert "Refusing Association" in server.log.read_text(errors="replace")


@live
def test_tls_port_that_is_not_dicom_is_down(tmp_path: Path) -> None:
    """A TLS server that answers an A-ASSOCIATE-RQ with something that is not DICOM: connected, no DICOM answer →
    down (not up)."""
    ctx = self_signed_server_context(tmp_path, "not-dicom")
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.settimeout(2)
                    tls.recv(4096)  # read the A-ASSOCIATE-RQ, answer with something that is not DICOM, close
                    tls.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        s = _sample(port, "dicom-tls", {"ae_title": PACS_AET})
    finally:
        stop.set()
        thread.join(5)
        listener.close()
    assert (s.up, s.reason) == (False, "dicom"), s


@pytest.mark.parametrize("calling", ["VIEWER 01", "VIEWER01 ", "VIEW\\ER", "A" * 17, ""])
def test_a_calling_ae_title_hcscan_cannot_send_is_refused_with_its_line(tmp_path: Path, calling: str) -> None:
    """Validated once, when the inventory loads (the same rule as ae_title): file:line, exit 2, store untouched."""
    checks = {"ep": {"ae_title": PACS_AET, "calling_ae_title": calling}}
    make_workspace(tmp_path, [system("sys-a", HOST, 2762, "dicom-tls", availability={"checks": checks})])
    inventory = tmp_path / "inventory" / "testregion.yaml"
    line = next(i for i, text in enumerate(inventory.read_text(encoding="utf-8").splitlines(), 1) if "calling" in text)
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "validate", "--config", "config.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"testregion.yaml:{line}:" in result.stderr and "calling_ae_title" in result.stderr, result.stderr
    assert not (tmp_path / "hcscan.db").exists()


def test_a_declared_calling_ae_title_loads() -> None:
    assert EndpointCheck.model_validate({"calling_ae_title": KNOWN_AET}).calling_ae_title == KNOWN_AET


def test_a_silent_dicom_port_is_down_by_timeout_and_never_stalls_the_round() -> None:
    """Accepts TCP, never answers the A-ASSOCIATE-RQ: down ('timeout'), and the sample ends within its budget."""
    listener = socket.create_server((HOST, 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    declared = {"endpoint": {"id": "pacs"}}
    target = Target("pacs/pacs", "pacs", HOST, port, "dicom", politeness=Politeness(timeout_s=1), declared=declared)
    started = time.monotonic()
    try:
        s = AvailabilitySampler(SamplerSettings(timeout_s=1.0, retry_delay_s=0.2)).sample([target])[target.key]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
    elapsed = time.monotonic() - started
    assert (s.up, s.reason, s.attempts) == (False, "timeout", 2), s
    assert elapsed < 30, elapsed  # two attempts of at most four 1 s steps each, plus slack: never an open-ended wait

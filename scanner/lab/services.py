"""Lab servers for the patching and exposure controls: banner servers that present old and current
SSH/HTTP products (nmap fingerprints them), DICOM echo services (pynetdicom; plaintext on a standard and a
non-standard port, over TLS accepting any AE title or checking called/calling AE titles, and a TLS front whose
DICOM node is down), an HL7 MLLP listener and FHIR-like HTTPS servers with good and bad CapabilityStatements at
the root and under a base path (/fhir).

Each case binds its own loopback address 127.0.20.N (ephemeral ports), so a port sweep of one case's host
sees only that case. Servers run as threads of the calling process::

    with ServiceLab(tmp_path) as lab:
        lab.cases["ssh_debian9"].port
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from scanner.lab.certs import CertSpec, LabPKI

Kind = Literal["ssh", "http", "mllp", "fhir", "dicom", "dicom-tls", "telnet"]
SERVICE_LAB_NET = "127.0.20"
# Fixed ports per kind in the demo layout (each case has its own address, so they never collide).
DEMO_PORTS: Mapping[str, int] = {
    "ssh": 2222,
    "http": 8080,
    "mllp": 2575,
    "fhir": 8443,
    "dicom": 11112,
    "dicom-tls": 2762,
    "telnet": 2323,
}
# DICOM listens on the standard ports in both layouts (nmap's dicom-ping runs there by itself; every case has its own
# address, so they are free). A case with dicom_standard_port=False listens elsewhere: this port in the demo layout.
DICOM_NONSTANDARD_DEMO_PORT = 11113
CONNECTION_TIMEOUT_S = 3.0  # short: nmap probes that send no request terminator must not wait long

_P, _F, _E, _N = "pass", "fail", "error", "not_applicable"


@dataclass(frozen=True)
class ServiceCase:
    """One lab system: its main service, optional undeclared extras, and the verdicts hcscan should give."""

    name: str
    kind: Kind
    banner: str = ""  # SSH identification string or HTTP Server header
    expect: Mapping[str, str] = field(default_factory=dict)
    extra_telnet: bool = False  # also listen on an undeclared port with a telnet-like banner
    fhir: str = ""  # "good" or "bad" CapabilityStatement
    fhir_base: str = ""  # serve FHIR under this base path (e.g. "/fhir"); the inventory declares it as `path:`
    dicom_any_aet: bool = True  # False: only associations addressed to the node's AE title (LABPACS)
    dicom_calling_aets: tuple[str, ...] = ()  # only these calling AE titles are accepted (empty: any)
    dicom_declared_aet: str = ""  # the node's AE title as the inventory declares it (availability.checks.*.ae_title)
    dicom_standard_port: bool = True  # False: a port outside dicom-ping's portrule (nmap must force the script)
    dicom_down: bool = False  # a TLS front whose DICOM node is down: handshake, then the request is never answered
    software: tuple[Mapping[str, str], ...] = ()  # inventory `software:` for the case's system
    description: str = ""


SERVICE_CASES: tuple[ServiceCase, ...] = (
    ServiceCase(
        "ssh_debian9",
        "ssh",
        "SSH-2.0-OpenSSH_7.4p1 Debian-10+deb9u7",
        {"PAT-01": _F, "PAT-02": _E, "PAT-05": _P, "EXP-01": _P},
        description="OpenSSH of Debian 9 (end of life): a distribution banner",
    ),
    ServiceCase(
        "ssh_ubuntu",
        "ssh",
        "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6",
        {"PAT-01": _P, "PAT-02": _E, "EXP-01": _F},
        extra_telnet=True,
        description="OpenSSH of Ubuntu 22.04, and an undeclared telnet-like port",
    ),
    ServiceCase(
        "ssh_ubuntu_declared",
        "ssh",
        "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6",
        {"PAT-01": _P, "PAT-02": _P, "PAT-03": _P},
        software=(
            {"product": "openssh", "version": "8.9p1", "package_version": "1:8.9p1-3ubuntu0.6", "updated": "today"},
            {"product": "ubuntu", "version": "22.04.5"},
        ),
        description="as ssh_ubuntu, with the package version (updated today) and the Ubuntu release declared",
    ),
    ServiceCase(
        "ssh_bare_old",
        "ssh",
        "SSH-2.0-OpenSSH_7.4",
        {"PAT-01": _F, "PAT-02": _F},
        description="bare upstream OpenSSH 7.4: line 7 ended when 8.0 came out (2019), behind 7.9 since 2018",
    ),
    ServiceCase(
        "nginx_eol",
        "http",
        "nginx/1.18.0",
        {"PAT-01": _F, "PAT-02": _P, "PAT-03": _F},
        software=({"product": "windows server", "version": "2012 R2"},),
        description="nginx 1.18 (cycle ended 2021); declares Windows Server 2012 R2 (ended 2023)",
    ),
    ServiceCase(
        "nginx_current",
        "http",
        "nginx/1.30.4",
        {"PAT-01": _P, "PAT-02": _P, "PAT-03": _E},
        software=({"product": "Acme PACS", "version": "7.1"},),
        description="current nginx; declares a product hcscan has no data for (PAT-03 error)",
    ),
    ServiceCase(
        "apache_bare_old",
        "http",
        "Apache/2.4.49 (Unix)",
        {"PAT-01": _P, "PAT-02": _F},
        description="bare Apache 2.4.49, behind 2.4.62",
    ),
    ServiceCase(
        "unknown_product",
        "http",
        "AcmeMedical-Gateway/3.1",
        {"PAT-01": _E, "PAT-02": _E},
        description="a product that is not in the version data: could not assess, declare it under software:",
    ),
    ServiceCase("mllp_plain", "mllp", expect={"EXP-03": _F}, description="plaintext HL7 v2 MLLP listener (ACK AA)"),
    ServiceCase(
        "fhir_good",
        "fhir",
        fhir="good",
        expect={"EXP-04": _P, "LOG-06": _P},
        description="SMART-on-FHIR security, AuditEvent supported, unauthenticated search refused (401)",
    ),
    ServiceCase(
        "fhir_bad",
        "fhir",
        fhir="bad",
        expect={"EXP-04": _F, "LOG-06": _F},
        description="no security service, no AuditEvent, unauthenticated search answers 200",
    ),
    ServiceCase(
        "dicom_open",
        "dicom",
        expect={"EXP-02": _F},
        dicom_any_aet=True,
        description="plaintext DICOM C-ECHO SCP accepting any AE title",
    ),
    ServiceCase(
        "dicom_tls",
        "dicom-tls",
        expect={"EXP-02": _E},
        dicom_any_aet=False,
        description="DICOM over TLS checking only the called AE title, which the inventory does not declare: ANY-SCP "
        "is rejected as the called AE title, which says nothing of calling AE titles (error: declare it)",
    ),
    ServiceCase(
        "dicom_nonstd",
        "dicom",
        expect={"EXP-02": _F},
        dicom_standard_port=False,
        description="plaintext DICOM on a non-standard port (nmap forces +dicom-ping), accepting any AE title",
    ),
    ServiceCase(
        "dicom_tls_open",
        "dicom-tls",
        expect={"EXP-02": _F},
        description="DICOM over TLS accepting any calling and called AE title",
    ),
    ServiceCase(
        "dicom_tls_strict",
        "dicom-tls",
        expect={"EXP-02": _P},
        dicom_any_aet=False,
        dicom_calling_aets=("MODALITY1", "WORKSTATION1"),
        dicom_declared_aet="LABPACS",
        description="DICOM over TLS accepting only known calling AE titles, addressed to its own (declared) AE title",
    ),
    ServiceCase(
        "dicom_tls_called_only",
        "dicom-tls",
        expect={"EXP-02": _F},
        dicom_any_aet=False,
        dicom_declared_aet="LABPACS",
        description="DICOM over TLS checking only the called AE title: any calling AE title that knows it gets in",
    ),
    ServiceCase(
        "dicom_tls_down",
        "dicom-tls",
        expect={"EXP-02": _E},
        dicom_down=True,
        description="a TLS front whose DICOM node is down: the association request is never answered",
    ),
    ServiceCase(
        "fhir_good_base",
        "fhir",
        fhir="good",
        fhir_base="/fhir",
        expect={"EXP-04": _P, "LOG-06": _P},
        description="as fhir_good, under the FHIR base /fhir (declared as the endpoint's path)",
    ),
    ServiceCase(
        "fhir_bad_base",
        "fhir",
        fhir="bad",
        fhir_base="/fhir",
        expect={"EXP-04": _F, "LOG-06": _F},
        description="as fhir_bad, under the FHIR base /fhir (declared as the endpoint's path)",
    ),
)
SERVICE_CASES_BY_NAME: Mapping[str, ServiceCase] = {c.name: c for c in SERVICE_CASES}


@dataclass(frozen=True)
class ServiceEndpoint:
    case: ServiceCase
    address: str
    port: int
    protocol: str  # inventory protocol: ssh, http, mllp, fhir, dicom, dicom-tls
    extra_ports: tuple[int, ...] = ()
    server_name: str | None = None


_CAPABILITY_GOOD: dict[str, Any] = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "kind": "instance",
    "fhirVersion": "4.0.1",
    "format": ["json"],
    "rest": [
        {
            "mode": "server",
            "security": {
                "service": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                "code": "SMART-on-FHIR",
                            }
                        ]
                    }
                ]
            },
            "resource": [{"type": "Patient"}, {"type": "Observation"}, {"type": "AuditEvent"}],
        }
    ],
}
_CAPABILITY_BAD: dict[str, Any] = {
    "resourceType": "CapabilityStatement",
    "status": "active",
    "kind": "instance",
    "fhirVersion": "4.0.1",
    "format": ["json"],
    "rest": [{"mode": "server", "resource": [{"type": "Patient"}, {"type": "Observation"}]}],
}


def _http_response(status: str, body: bytes, content_type: str, server: str = "nginx/1.28.2") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nServer: {server}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _read_head(conn: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


def _serve_ssh(conn: socket.socket, case: ServiceCase) -> None:
    conn.sendall(case.banner.encode("ascii") + b"\r\n")
    with contextlib.suppress(OSError):
        conn.recv(4096)  # the client's identification; then hang up like a server that disliked it


def _serve_http(conn: socket.socket, case: ServiceCase) -> None:
    head = _read_head(conn)
    if not head:
        return
    body = b"<html><body>hcscan lab</body></html>\n"
    conn.sendall(_http_response("200 OK", body, "text/html", server=case.banner))


def _serve_telnet(conn: socket.socket) -> None:
    # IAC DO ECHO, then a login prompt: enough for nmap to call it telnet.
    conn.sendall(b"\xff\xfd\x01\xff\xfd\x1f\xff\xfb\x01\xff\xfb\x03\r\nlab login: ")
    with contextlib.suppress(OSError):
        conn.recv(4096)


def _serve_silence(conn: socket.socket) -> None:
    """Read the request, answer nothing: the connection ends by the lab's timeout or when the client gives up."""
    with contextlib.suppress(OSError):
        while conn.recv(4096):
            pass


def _serve_mllp(conn: socket.socket) -> None:
    buf = b""
    while b"\x1c" not in buf and len(buf) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            return
        buf += chunk
    if not buf.startswith(b"\x0b"):
        return  # not MLLP (e.g. a TLS ClientHello): hang up, as an MLLP engine would
    ack = "MSH|^~\\&|LAB|LAB|HCSCAN|HCSCAN|20260101000000||ACK|LAB1|P|2.5\rMSA|AA|HCSCAN-PROBE"
    conn.sendall(b"\x0b" + ack.encode("ascii") + b"\x1c\r")


def _serve_fhir(conn: socket.socket, case: ServiceCase) -> None:
    head = _read_head(conn)
    if not head:
        return
    line = head.split(b"\r\n", 1)[0].decode("latin-1", errors="replace")
    parts = line.split(" ")
    path = parts[1] if len(parts) > 1 else "/"
    good = case.fhir == "good"
    fhir_json = "application/fhir+json"
    if case.fhir_base:
        if not path.startswith(case.fhir_base + "/"):  # outside the FHIR base: the web server's own 404
            conn.sendall(_http_response("404 Not Found", b"<html>404 Not Found</html>", "text/html"))
            return
        path = path[len(case.fhir_base) :]
    if path.startswith("/metadata"):
        doc = _CAPABILITY_GOOD if good else _CAPABILITY_BAD
        conn.sendall(_http_response("200 OK", json.dumps(doc).encode(), fhir_json))
    elif path.startswith("/.well-known/smart-configuration"):
        if good:
            smart = {
                "authorization_endpoint": "https://auth.lab.test/authorize",
                "token_endpoint": "https://auth.lab.test/token",
            }
            conn.sendall(_http_response("200 OK", json.dumps(smart).encode(), "application/json"))
        else:
            conn.sendall(_http_response("404 Not Found", b"{}", "application/json"))
    elif good:
        outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]}
        conn.sendall(_http_response("401 Unauthorized", json.dumps(outcome).encode(), fhir_json))
    else:
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": 42}
        conn.sendall(_http_response("200 OK", json.dumps(bundle).encode(), fhir_json))


def demo_port(case: ServiceCase) -> int:
    """The case's fixed port in the demo layout (the demo inventory declares it at 127.0.20.<position + 1>)."""
    if case.kind in ("dicom", "dicom-tls") and not case.dicom_standard_port:
        return DICOM_NONSTANDARD_DEMO_PORT
    return DEMO_PORTS[case.kind]


class _DeferredHandshakeContext(ssl.SSLContext):
    """pynetdicom wraps each accepted socket in its accept loop: with the TLS handshake done there, one client that
    connects and stays silent (nmap -sV's NULL probe) would stall every other client. Wrapped with this context, the
    handshake happens on the association's first read, in its own thread (OpenSSL completes it implicitly)."""

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        kwargs["do_handshake_on_connect"] = False
        return super().wrap_socket(sock, *args, **kwargs)


class ServiceLab:
    """Start every service case on its own 127.0.20.N address; stop them on exit."""

    def __init__(
        self,
        workdir: Path,
        cases: tuple[ServiceCase, ...] = SERVICE_CASES,
        layout: Literal["ephemeral", "demo"] = "ephemeral",
    ) -> None:
        self.workdir = Path(workdir)
        self.layout = layout
        self.case_list = cases
        self.cases: dict[str, ServiceEndpoint] = {}
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._dicom_servers: list[Any] = []
        # Case name → what its DICOM server saw: "established:<calling AE>", "c_echo:…", "released:…", "aborted:…"
        self.dicom_events: dict[str, list[str]] = {}
        self.pki: LabPKI | None = None

    def __enter__(self) -> ServiceLab:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> ServiceLab:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = LabPKI(self.workdir / "pki")
        try:
            for i, case in enumerate(self.case_list):
                address = f"{SERVICE_LAB_NET}.{i + 1}"
                self.cases[case.name] = self._start_case(case, address)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._stop.set()
        for server in self._dicom_servers:
            with contextlib.suppress(Exception):
                server.shutdown()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=2)

    @property
    def ca_bundle(self) -> Path:
        assert self.pki is not None
        return self.pki.ca_bundle

    def _tls_context(self, name: str, deferred: bool = False) -> ssl.SSLContext:
        assert self.pki is not None
        server_name = f"{name.replace('_', '-')}.lab.hcscan.test"
        issued = self.pki.issue(CertSpec(), server_name, name)
        ctx = (
            _DeferredHandshakeContext(ssl.PROTOCOL_TLS_SERVER) if deferred else ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        )
        ctx.load_cert_chain(str(issued.chain_pem), str(issued.key_pem))
        return ctx

    def _start_case(self, case: ServiceCase, address: str) -> ServiceEndpoint:
        server_name = f"{case.name.replace('_', '-')}.lab.hcscan.test"
        extras: list[int] = []
        if case.kind in ("dicom", "dicom-tls"):
            port = self._start_dicom(case, address)
        elif case.kind == "fhir":
            ctx = self._tls_context(case.name)
            port = self._listen(address, lambda c: _serve_fhir(c, case), ctx, self._port("fhir"))
        elif case.kind == "ssh":
            port = self._listen(address, lambda c: _serve_ssh(c, case), port=self._port("ssh"))
        elif case.kind == "http":
            port = self._listen(address, lambda c: _serve_http(c, case), port=self._port("http"))
        elif case.kind == "mllp":
            port = self._listen(address, _serve_mllp, port=self._port("mllp"))
        else:
            port = self._listen(address, _serve_telnet, port=self._port("telnet"))
        if case.extra_telnet:
            extras.append(self._listen(address, _serve_telnet, port=self._port("telnet")))
        return ServiceEndpoint(case, address, port, case.kind, tuple(extras), server_name)

    def _port(self, kind: str) -> int:
        """0 (the OS chooses) in the ephemeral layout; the kind's fixed port in the demo layout."""
        return DEMO_PORTS[kind] if self.layout == "demo" else 0

    def _listen(
        self,
        address: str,
        handler: Callable[[socket.socket], None],
        ctx: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
        sock.settimeout(0.25)
        self._sockets.append(sock)

        def serve(conn: socket.socket) -> None:
            with contextlib.suppress(Exception), conn:
                conn.settimeout(CONNECTION_TIMEOUT_S)
                if ctx is not None:
                    with ctx.wrap_socket(conn, server_side=True) as tls:
                        handler(tls)
                else:
                    handler(conn)

        def accept_loop() -> None:
            while not self._stop.is_set():
                try:
                    conn, _ = sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                conn.setblocking(True)
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

        thread = threading.Thread(target=accept_loop, daemon=True, name=f"svc-lab-{address}")
        thread.start()
        self._threads.append(thread)
        return int(sock.getsockname()[1])

    def _start_dicom(self, case: ServiceCase, address: str) -> int:
        from pynetdicom import AE, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        # nmap runs dicom-ping by itself only on the DICOM ports (104, 2345, 2761, 2762, 4242, 11112); every case
        # has its own address, so the standard unprivileged ports are free to use. A non-standard case gets an
        # ephemeral port (the demo: 11113), where hcscan must force the script with "+dicom-ping".
        port = demo_port(case) if self.layout == "demo" or case.dicom_standard_port else 0
        ctx = self._tls_context(case.name, deferred=True) if case.kind == "dicom-tls" else None
        if case.dicom_down:
            assert ctx is not None
            return self._listen(address, _serve_silence, ctx, port)
        ae = AE(ae_title="LABPACS")
        ae.add_supported_context(Verification)
        ae.require_called_aet = not case.dicom_any_aet  # True: only associations addressed to LABPACS
        ae.require_calling_aet = list(case.dicom_calling_aets)
        events = self.dicom_events.setdefault(case.name, [])

        def record(event: Any) -> None:  # e.g. "released:HCSCAN-UNKNOWN", for tests of what a probe sent
            events.append(f"{event.event.name.removeprefix('EVT_').lower()}:{event.assoc.requestor.ae_title}")

        def echo(event: Any) -> int:
            record(event)
            return 0x0000

        watched = (evt.EVT_ESTABLISHED, evt.EVT_REJECTED, evt.EVT_RELEASED, evt.EVT_ABORTED)
        server = ae.start_server(
            (address, port),
            block=False,
            ssl_context=ctx,
            evt_handlers=[(evt.EVT_C_ECHO, echo), *((e, record) for e in watched)],
        )
        assert server is not None  # block=False: the server runs in its own thread
        self._dicom_servers.append(server)
        return int(server.server_address[1])

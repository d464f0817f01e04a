"""The lab's servers: one listening socket per case, a thread per connection.

Runs inside the lab's child process (see `scanner.lab.Lab`), or in the foreground via
``python -m scanner.lab serve``. A bad handshake, a reset or a silent client only ends that
connection's thread; nothing here may take the whole lab down.
"""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from pathlib import Path
from typing import Literal

from scanner.lab.cases import (
    CASES,
    Case,
    LabEndpoint,
    demo_address,
    demo_replica_address,
)
from scanner.lab.certs import LabPKI

Layout = Literal["ephemeral", "demo"]

CONNECTION_TIMEOUT_S = 15.0  # a client that stalls mid-handshake or mid-request is dropped after this
TARPIT_HOLD_S = 600.0  # how long the tarpit keeps a silent connection open
MAX_REQUEST_HEAD = 64 * 1024
ACCEPT_POLL_S = 0.25
_REQUEST_LINE_START = re.compile(rb"^[A-Z]{1,20}( |$)")


@dataclass(frozen=True)
class _Binding:
    case: Case
    endpoint_name: str
    address: str
    port: int


def _make_tls_context(case: Case, pki: LabPKI, label: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion[case.min_version]
    ctx.maximum_version = ssl.TLSVersion[case.max_version]
    # The cipher string carries @SECLEVEL, which must be lowered before a weak key/cert is loaded.
    ctx.set_ciphers(case.ciphers)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    if case.dh_bits is not None:
        ctx.load_dh_params(str(pki.dh_params(case.dh_bits)))
    issued = pki.issue(case.cert, case.server_name, label)
    ctx.load_cert_chain(str(issued.chain_pem), str(issued.key_pem))
    return ctx


def _read_request_head(conn: socket.socket, *, reject_non_http: bool) -> bytes | None:
    """Read up to the end of the request head. None: the peer is not speaking HTTP (or went away)."""
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) < MAX_REQUEST_HEAD:
        chunk = conn.recv(4096)
        if not chunk:
            return buf if buf else None
        buf += chunk
        if reject_non_http and not _REQUEST_LINE_START.match(buf[:21]):
            return None
    return buf


def _response(case: Case, head: bytes | None) -> bytes:
    if head is None:
        status, headers, body = 400, [], b"bad request\n"
    else:
        status = case.status
        headers = list(case.headers)
        if case.location:
            headers.append(("Location", case.location))
        body = f"hcscan lab: {case.name}\n".encode()
    lines = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        f"Date: {formatdate(usegmt=True)}",
        f"Server: {case.server}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers),
    ]
    is_head = head is not None and head.startswith(b"HEAD ")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if is_head else body)


def _serve_http(conn: socket.socket, case: Case, *, reject_non_http: bool) -> None:
    head = _read_request_head(conn, reject_non_http=reject_non_http)
    if head is None and not reject_non_http:
        return  # TLS client closed without a request (a handshake-only scanner): nothing to answer
    conn.sendall(_response(case, head))


def _handle_tls(conn: socket.socket, case: Case, ctx: ssl.SSLContext) -> None:
    with conn:
        conn.settimeout(CONNECTION_TIMEOUT_S)
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
        except (OSError, ValueError):
            return  # failed handshake: normal when scanners probe unsupported versions and suites
        with tls:
            _serve_http(tls, case, reject_non_http=False)


def _handle_plain(conn: socket.socket, case: Case) -> None:
    with conn:
        conn.settimeout(CONNECTION_TIMEOUT_S)
        _serve_http(conn, case, reject_non_http=True)


def _handle_tarpit(conn: socket.socket) -> None:
    with conn:
        conn.settimeout(TARPIT_HOLD_S)
        while conn.recv(4096):
            pass


Handler = Callable[[socket.socket], None]


class _Acceptor:
    """One thread accepting on every listening socket (a selector), a new thread per connection."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop = stop
        self.selector = selectors.DefaultSelector()
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._loop, daemon=True, name="lab-acceptor")

    def add(self, sock: socket.socket, handler: Handler) -> None:
        sock.setblocking(False)
        self.selector.register(sock, selectors.EVENT_READ, handler)
        self.sockets.append(sock)

    def _loop(self) -> None:
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=ACCEPT_POLL_S):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    conn, _addr = sock.accept()
                except OSError:
                    continue  # BlockingIOError (another wake-up took it), EMFILE under a flood: keep serving
                conn.setblocking(True)
                try:
                    threading.Thread(target=_run_handler, args=(key.data, conn), daemon=True).start()
                except RuntimeError:  # cannot start a thread (resource limit): drop this one connection
                    conn.close()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2)
        self.selector.close()
        for sock in self.sockets:
            sock.close()


def _run_handler(handler: Handler, conn: socket.socket) -> None:
    with contextlib.suppress(Exception):  # one bad connection never takes the lab down
        handler(conn)


class LabServers:
    """All of the lab's servers in this process. `start` binds everything and returns the endpoints."""

    def __init__(self, workdir: Path, layout: Layout = "ephemeral", replicas: int = 0) -> None:
        self.workdir = workdir
        self.layout = layout
        self.replicas = replicas
        self.stop_event = threading.Event()
        self._acceptor = _Acceptor(self.stop_event)
        self._held: list[socket.socket] = []  # bound, never listening: the "refused" port
        self.pki: LabPKI | None = None
        self.endpoints: list[LabEndpoint] = []

    def _bindings(self) -> list[_Binding]:
        out: list[_Binding] = []
        for i, case in enumerate(CASES):
            if self.layout == "demo":
                port = 8443 if case.protocol == "https" else 8080
                out.append(_Binding(case, case.name, demo_address(i), port))
            else:
                out.append(_Binding(case, case.name, "127.0.0.1", 0))
        good = next(c for c in CASES if c.name == "good")
        for r in range(self.replicas):
            addr, port = demo_replica_address(r) if self.layout == "demo" else ("127.0.0.1", 0)
            out.append(_Binding(good, f"good-{r}", addr, port))
        return out

    def start(self) -> list[LabEndpoint]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = LabPKI(self.workdir / "pki")
        contexts: dict[str, ssl.SSLContext] = {}
        try:
            for b in self._bindings():
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                if b.case.kind == "refused":
                    sock.bind((b.address, b.port))
                    self._held.append(sock)
                else:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((b.address, b.port))
                    sock.listen(1024)
                    self._acceptor.add(sock, self._handler_for(b.case, contexts))
                port = sock.getsockname()[1]
                self.endpoints.append(
                    LabEndpoint(
                        name=b.endpoint_name,
                        address=b.address,
                        port=port,
                        protocol=b.case.protocol,
                        server_name=b.case.server_name,
                        expect=b.case.expect,
                        description=b.case.description,
                    )
                )
        except BaseException:
            self.close()
            raise
        self._acceptor.thread.start()
        return self.endpoints

    def _handler_for(self, case: Case, contexts: dict[str, ssl.SSLContext]) -> Handler:
        if case.kind == "tls":
            assert self.pki is not None
            if case.name not in contexts:
                contexts[case.name] = _make_tls_context(case, self.pki, case.name)
            ctx = contexts[case.name]
            return lambda conn: _handle_tls(conn, case, ctx)
        if case.kind == "plain":
            return lambda conn: _handle_plain(conn, case)
        return _handle_tarpit

    def close(self) -> None:
        self.stop_event.set()
        self._acceptor.close()
        for sock in self._held:
            sock.close()

    def manifest(self) -> dict[str, object]:
        assert self.pki is not None
        return {
            "ca_bundle": str(self.pki.ca_bundle),
            "rogue_bundle": str(self.pki.rogue_bundle),
            "endpoints": [
                {
                    "name": e.name,
                    "address": e.address,
                    "port": e.port,
                    "protocol": e.protocol,
                    "server_name": e.server_name,
                    "expect": dict(e.expect),
                    "description": e.description,
                }
                for e in self.endpoints
            ],
        }

    def write_manifest(self, path: Path) -> None:
        """Write atomically: the parent polls for this file to appear."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.manifest(), indent=2))
        tmp.replace(path)

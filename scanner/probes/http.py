"""The HTTP probe: one GET / per endpoint, facts about status, redirect, HSTS, Server and Date.

Certificate trust is the TLS probe's job, so this probe does not verify certificates and talks to
legacy servers (TLS 1.0, weak keys, small DH) with a lowered security level: the headers of a
badly configured server must still be judged. Redirects are never followed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import http.client
import re
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from scanner.probes.base import (
    FactSpec,
    JSONValue,
    ProbeContext,
    ProbeError,
    ProbeErrorReason,
    ProbeFacts,
    ProbeOutcome,
    Target,
)

MAX_BODY_BYTES = 64 * 1024
MAX_HEADER_CHARS = 200
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "hcscan/0.1 (compliance scanner; +declared-inventory-only)"
_DIGITS = re.compile(r"[0-9]+")
_MAX_INT64 = 2**63 - 1


# -- HSTS ---------------------------------------------------------------------------------------


def parse_hsts(value: str) -> tuple[int | None, bool]:
    """Parse a Strict-Transport-Security value (RFC 6797 §6.1) into (max_age, include_subdomains).

    Directive names are case-insensitive and values may be quoted. A header that is not valid
    (no max-age, a non-numeric max-age, a repeated directive, a broken quote) gives max_age None:
    a browser would ignore it entirely.
    """
    seen: set[str] = set()
    max_age: int | None = None
    include_subdomains = False
    valid = True
    for raw in value.split(";"):
        part = raw.strip()
        if not part:
            continue
        name, has_value, val = part.partition("=")
        name = name.strip().lower()
        val = val.strip()
        if not name or name in seen:
            valid = False
            continue
        seen.add(name)
        if val.startswith('"'):
            if len(val) < 2 or not val.endswith('"'):
                valid = False
                continue
            val = val[1:-1]
        if name == "max-age":
            if has_value and _DIGITS.fullmatch(val):
                max_age = min(int(val), _MAX_INT64)
            else:
                valid = False
        elif name == "includesubdomains":
            include_subdomains = True
    if not valid or max_age is None:
        return None, False
    return max_age, include_subdomains


# -- a hard overall deadline per request ---------------------------------------------------------


class _Deadline:
    """Shuts the request's sockets down when the overall budget is spent (a byte-at-a-time server
    would otherwise keep a per-read timeout from ever firing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.fired = False

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.fired:
                shutdown_socket(sock)

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            for sock in self._socks:
                shutdown_socket(sock)


def shutdown_socket(sock: socket.socket) -> None:
    """Shut a connection down for reading and writing, which ends a read blocked on it; never raises.

    On a TLS socket this shuts down the TCP socket underneath (SSLSocket.shutdown would tear the TLS object from
    under its reader). A closed or detached socket has fileno -1: this never touches a descriptor that has since been
    reused. Wrapping a socket in TLS detaches the plain one: shut down the wrapped socket, not the one it came from."""
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


_current = threading.local()  # the _Deadline of the request running on this thread


def _register_socket(sock: socket.socket) -> None:
    deadline: _Deadline | None = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.register(sock)


class _TrackedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _register_socket(sock)
        return sock


class _TrackedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _register_socket(sock)  # until TLS wraps it: wrapping detaches this socket ...
        return sock

    def connect(self) -> None:
        super().connect()
        if isinstance(self.sock, socket.socket):
            _register_socket(self.sock)  # ... so the TLS socket the response is read from is registered too


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackedHTTPSConnection

    def _validate_conn(self, conn: Any) -> None:
        # Connect early like urllib3 does, without its InsecureRequestWarning: not verifying here
        # is deliberate (the TLS probe judges certificates).
        if conn.is_closed:
            conn.connect()


_LENIENT_CIPHERS = ("ALL:COMPLEMENTOFDEFAULT:@SECLEVEL=0", "ALL:@SECLEVEL=0")  # the first this OpenSSL takes


def lenient_tls_context() -> ssl.SSLContext:
    """A client context that completes a handshake with almost any server: every TLS version OpenSSL still has,
    every cipher (also those outside DEFAULT), security level 0, legacy renegotiation, no verification.

    The one context of every probe that only needs the server to talk (HTTP, FHIR, DICOM, MLLP, the availability
    sampler): certificate trust and protocol quality are the TLS family's job, not theirs."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    for ciphers in _LENIENT_CIPHERS:
        try:
            ctx.set_ciphers(ciphers)
            break
        except ssl.SSLError:  # an OpenSSL that knows no such cipher string: try the next, else keep its defaults
            continue
    ctx.options |= getattr(ssl, "OP_LEGACY_SERVER_CONNECT", 0)
    return ctx


@functools.cache
def _shared_lenient_context() -> ssl.SSLContext:
    """One lenient context for every HTTP probe connection of the process (an SSLContext may be shared across
    threads once configured; _ProbeAdapter always sends with verify=False, so urllib3 only re-sets verify_mode and
    check_hostname to the values they already have)."""
    return lenient_tls_context()


class _ProbeAdapter(HTTPAdapter):
    """Sends SNI = the declared server name while connecting to the declared address."""

    def __init__(self, server_name: str | None) -> None:
        self._server_name = server_name
        super().__init__(max_retries=0, pool_connections=1, pool_maxsize=1)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs["ssl_context"] = _shared_lenient_context()
        if self._server_name:
            pool_kwargs["server_hostname"] = self._server_name
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        # The context is shared and never verifies (certificate trust is the TLS probe's job): a caller's
        # verify=True would have urllib3 switch it to CERT_REQUIRED for every connection of the process.
        kwargs["verify"] = False
        return super().send(request, *args, **kwargs)


@contextlib.contextmanager
def bounded_session(server_name: str | None, overall_s: float) -> Iterator[tuple[requests.Session, _Deadline]]:
    """A session (lenient TLS, SNI = server_name, no proxy) whose sockets are shut down once `overall_s` is
    spent: per-read timeouts never fire on a server that drips one byte a second. For other probes."""
    deadline = _Deadline()
    timer = threading.Timer(overall_s, deadline.fire)
    timer.daemon = True
    session = requests.Session()
    session.trust_env = False
    session.mount("https://", _ProbeAdapter(server_name))
    session.mount("http://", _ProbeAdapter(server_name))
    _current.deadline = deadline
    timer.start()
    try:
        yield session, deadline
    finally:
        timer.cancel()
        _current.deadline = None
        session.close()


def read_capped(response: requests.Response, limit: int) -> bytes:
    """At most `limit` bytes of a streamed response body (an endless body is cut, not buffered)."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = response.raw.read(min(16384, limit - size), decode_content=True)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def declared_base_path(target: Target) -> str:
    """The API base path the inventory declares for the endpoint (`path:`): '' for '/' or none.

    The loader's `check_base_path` has already dropped any trailing '/' (and refused anything that is not a plain
    base path), so the declared value is used as it is."""
    endpoint = target.declared.get("endpoint")
    path = endpoint.get("path") if isinstance(endpoint, dict) else None
    return path if isinstance(path, str) and path != "/" else ""


# -- one request ----------------------------------------------------------------------------------


def _url(target: Target, scheme: str) -> str:
    host = f"[{target.address}]" if ":" in target.address else target.address
    return f"{scheme}://{host}:{target.port}/"


def _host_header(target: Target, scheme: str) -> str:
    host = target.server_name or (f"[{target.address}]" if ":" in target.address else target.address)
    default_port = 443 if scheme == "https" else 80
    return host if target.port == default_port else f"{host}:{target.port}"


def _trim(value: str | None, limit: int = MAX_HEADER_CHARS) -> str | None:
    return None if value is None else value[:limit]


def _clock_skew(date_header: str | None, received_at: float) -> float | None:
    if not date_header:
        return None
    try:
        server_time = parsedate_to_datetime(date_header)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if server_time.tzinfo is None:
        server_time = server_time.replace(tzinfo=dt.UTC)
    return round(server_time.timestamp() - received_at, 3)


def facts_from_response(scheme: str, status: int, headers: Any, received_at: float) -> dict[str, JSONValue]:
    """Facts from a status and a urllib3 header dict (`getlist` keeps repeated headers apart)."""

    def first(name: str) -> str | None:
        values: list[str] = headers.getlist(name)
        return values[0] if values else None

    location = first("Location")
    redirects_to_https = (
        status in REDIRECT_STATUSES and location is not None and urlsplit(location.strip()).scheme.lower() == "https"
    )
    hsts = first("Strict-Transport-Security")
    max_age, include_subdomains = parse_hsts(hsts) if hsts is not None else (None, False)
    date = first("Date")
    return {
        "http.scheme": scheme,
        "http.status": status,
        "http.location": _trim(location, 2048),
        "http.redirects_to_https": redirects_to_https,
        "http.hsts.present": hsts is not None,
        "http.hsts.max_age": max_age,
        "http.hsts.include_subdomains": include_subdomains,
        "http.server": _trim(first("Server")),
        "http.date": _trim(date),
        "http.clock_skew_seconds": _clock_skew(date, received_at),
    }


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything it wraps (requests/urllib3 nest the real cause deeply)."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        cur = todo.pop()
        if id(cur) in seen or len(seen) > 50:
            continue
        seen.add(id(cur))
        yield cur
        nested = [cur.__cause__, cur.__context__, getattr(cur, "reason", None), *cur.args]
        todo.extend(e for e in nested if isinstance(e, BaseException))


_UNREACHABLE_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN})


def classify_error(exc: BaseException, timeout_s: float) -> ProbeError:
    """Map a requests/urllib3/ssl/socket exception to a typed probe error."""
    causes = list(_causes(exc))
    text = f"{type(exc).__name__}: {exc}"[:500]
    if any(isinstance(c, ConnectionRefusedError) for c in causes):
        return ProbeError(ProbeErrorReason.REFUSED, "connection refused")
    if any(isinstance(c, OSError) and c.errno in _UNREACHABLE_ERRNOS for c in causes):
        return ProbeError(ProbeErrorReason.UNREACHABLE, text)
    if isinstance(exc, requests.Timeout) or any(isinstance(c, TimeoutError | socket.timeout) for c in causes):
        return ProbeError(ProbeErrorReason.TIMEOUT, f"no answer within {timeout_s:g}s ({text})")
    if isinstance(exc, requests.exceptions.InvalidURL | requests.exceptions.MissingSchema):
        return ProbeError(ProbeErrorReason.INTERNAL, text)
    protocol_types = (ssl.SSLError, http.client.HTTPException, ConnectionResetError, BrokenPipeError)
    if isinstance(exc, requests.exceptions.SSLError | requests.exceptions.ChunkedEncodingError) or any(
        isinstance(c, protocol_types) for c in causes
    ):
        return ProbeError(ProbeErrorReason.PROTOCOL, text)
    if isinstance(exc, requests.ConnectionError):
        # the target accepted and then hung up or spoke something that is not HTTP
        return ProbeError(ProbeErrorReason.PROTOCOL, text)
    return ProbeError(ProbeErrorReason.INTERNAL, text)


def _overall_timeout(timeout_s: float) -> ProbeError:
    return ProbeError(ProbeErrorReason.TIMEOUT, f"no complete response within {2 * timeout_s:g}s (overall limit)")


def fetch(target: Target) -> ProbeOutcome:
    """GET / on one target. Never raises."""
    scheme = "http" if target.protocol == "http" else "https"
    timeout_s = target.politeness.timeout_s
    deadline = _Deadline()
    timer = threading.Timer(2 * timeout_s, deadline.fire)
    timer.daemon = True
    _current.deadline = deadline
    session = requests.Session()
    session.trust_env = False  # never a proxy from the environment: traffic goes to the declared address only
    session.mount("https://", _ProbeAdapter(target.server_name))
    session.mount("http://", _ProbeAdapter(target.server_name))
    timer.start()
    try:
        try:
            response = session.get(
                _url(target, scheme),
                headers={
                    "Host": _host_header(target, scheme),
                    "User-Agent": USER_AGENT,
                    "Accept": "*/*",
                    "Accept-Encoding": "identity",
                    "Connection": "close",
                },
                allow_redirects=False,
                verify=False,  # certificate trust is judged by the TLS probe, not here
                timeout=(timeout_s, timeout_s),
                stream=True,
            )
            received_at = time.time()
            with response:
                facts = facts_from_response(scheme, response.status_code, response.raw.headers, received_at)
                read = 0
                while read < MAX_BODY_BYTES:
                    chunk = response.raw.read(min(16384, MAX_BODY_BYTES - read), decode_content=False)
                    if not chunk:
                        break
                    read += len(chunk)
            if deadline.fired:  # the sockets were shut down under us: what we got is truncated
                return _overall_timeout(timeout_s)
            return ProbeFacts(facts)
        except Exception as exc:
            if deadline.fired:
                return _overall_timeout(timeout_s)
            return classify_error(exc, timeout_s)
    finally:
        timer.cancel()
        _current.deadline = None
        session.close()


# -- the probe ------------------------------------------------------------------------------------


class HttpProbe:
    """GET / on https, http and fhir endpoints; facts about redirects and security headers."""

    kind: ClassVar[str] = "http"
    protocols: ClassVar[frozenset[str]] = frozenset({"https", "http", "fhir"})
    facts: ClassVar[Sequence[FactSpec]] = (
        FactSpec("http.scheme", "str", "URL scheme used: 'https' for https and fhir endpoints, 'http' for http."),
        FactSpec("http.status", "int", "HTTP status code of GET / (redirects are not followed)."),
        FactSpec("http.location", "str", "The Location header, raw (first 2048 characters).", nullable=True),
        FactSpec(
            "http.redirects_to_https",
            "bool",
            "Status is 301/302/303/307/308 and the Location header is an absolute https:// URL.",
        ),
        FactSpec("http.hsts.present", "bool", "A Strict-Transport-Security header was sent."),
        FactSpec(
            "http.hsts.max_age",
            "int",
            "max-age of the first Strict-Transport-Security header in seconds; null when absent or "
            "when the header is invalid (browsers ignore an invalid header).",
            nullable=True,
        ),
        FactSpec(
            "http.hsts.include_subdomains", "bool", "The (valid) HSTS header has the includeSubDomains directive."
        ),
        FactSpec("http.server", "str", "The Server header, truncated to 200 characters.", nullable=True),
        FactSpec(
            "http.date", "str", "The raw Date header (truncated to 200 characters).", nullable=True, volatile=True
        ),
        FactSpec(
            "http.clock_skew_seconds",
            "float",
            "Server Date minus local time when the response arrived (positive: server clock ahead); "
            "null when Date is missing or unparsable. Date has one-second resolution.",
            nullable=True,
            volatile=True,
        ),
    )

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        """Fetch GET / for every target, concurrently within ctx.max_workers and each system's
        politeness (max_concurrency connections; fragile systems one at a time). Never raises."""
        results: dict[str, ProbeOutcome] = {}
        if not targets:
            return results
        lanes = _lanes(targets)
        try:
            with ThreadPoolExecutor(
                max_workers=max(1, min(ctx.max_workers, len(lanes))), thread_name_prefix="hcscan-http"
            ) as pool:
                futures = [(lane, pool.submit(_run_lane, lane)) for lane in lanes]
                for lane, future in futures:
                    try:
                        results.update(future.result())
                    except Exception as exc:  # a bug in _run_lane; keep the other lanes' results
                        for t in lane.targets:
                            results.setdefault(t.key, ProbeError(ProbeErrorReason.INTERNAL, repr(exc)))
        except Exception as exc:
            for t in targets:
                results.setdefault(t.key, ProbeError(ProbeErrorReason.INTERNAL, repr(exc)))
        for t in targets:
            results.setdefault(t.key, ProbeError(ProbeErrorReason.INTERNAL, "no outcome produced"))
        return results


class _Lane:
    """A worker slot of one system: lanes of a system share its queue of targets."""

    def __init__(self, queue: deque[Target], targets: list[Target]) -> None:
        self.queue = queue
        self.targets = targets


def _lanes(targets: Sequence[Target]) -> list[_Lane]:
    """Per system, min(max_concurrency, #targets) lanes (1 if fragile), interleaved across systems
    so that every system starts early."""
    by_system: dict[str, list[Target]] = {}
    for t in targets:
        by_system.setdefault(t.system_id, []).append(t)
    per_system: list[list[_Lane]] = []
    for system_targets in by_system.values():
        fragile = any(t.politeness.fragile for t in system_targets)
        limit = 1 if fragile else max(1, min(t.politeness.max_concurrency for t in system_targets))
        queue: deque[Target] = deque(system_targets)
        per_system.append([_Lane(queue, system_targets) for _ in range(min(limit, len(system_targets)))])
    out: list[_Lane] = []
    for i in range(max(len(lanes) for lanes in per_system)):
        out.extend(lanes[i] for lanes in per_system if i < len(lanes))
    return out


def _run_lane(lane: _Lane) -> dict[str, ProbeOutcome]:
    results: dict[str, ProbeOutcome] = {}
    while True:
        try:
            target = lane.queue.popleft()
        except IndexError:
            return results
        try:
            results[target.key] = fetch(target)
        except Exception as exc:  # fetch never raises; belt and braces
            results[target.key] = ProbeError(ProbeErrorReason.INTERNAL, f"{type(exc).__name__}: {exc}")

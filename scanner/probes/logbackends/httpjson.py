"""One bounded JSON request to a log backend over HTTP(S), shared by the FHIR and HTTP-JSON backends.

`http.client` directly (not requests): no proxy from the environment, no redirects, and certificate
verification exactly against the configured trust (system store and/or the region's CA bundles).
The token is sent in one header and appears nowhere else: not in errors, not in facts.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from scanner.probes.base import OutOfScope, ProbeContext, ProbeErrorReason, resolve_in_scope
from scanner.probes.logbackends.base import LogBackendError
from scanner.redact import mask_url

MAX_BODY_BYTES = 8 * 1024 * 1024
USER_AGENT = "hcscan/0.1 (compliance scanner; audit-log check)"


def public_url(url: str) -> str:
    """The URL as evidence: scheme, host, port and path only (no query, no credentials)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def token_from_env(name: str | None) -> str | None:
    """The secret named by the inventory; a named but unset variable is an error, never an anonymous try."""
    if name is None:
        return None
    value = os.environ.get(name)
    if not value:
        raise LogBackendError(
            ProbeErrorReason.PROTOCOL, f"environment variable {name} (token_env) is not set: cannot authenticate"
        )
    return value


def tls_context(ctx: ProbeContext, verify: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if ctx.trust.use_system_store:
        context.load_default_certs()
    for bundle in ctx.trust.ca_bundles:
        try:
            context.load_verify_locations(cafile=str(bundle))
        except (OSError, ssl.SSLError) as exc:
            raise LogBackendError(ProbeErrorReason.INTERNAL, f"cannot read CA bundle {bundle}: {exc}") from None
    return context


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a fixed address; `host` stays the declared name (Host header)."""

    def __init__(self, address: str, host: str, port: int | None, *, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """Connects to a fixed address; `host` stays the declared name (SNI, certificate check, Host header)."""

    def __init__(self, address: str, host: str, port: int | None, *, timeout: float, context: ssl.SSLContext) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def request_json(
    url: str,
    *,
    ctx: ProbeContext,
    timeout_s: float,
    method: str = "GET",
    params: Mapping[str, Any] | None = None,
    body: Any = None,
    token: str | None = None,
    auth_scheme: str = "Bearer",
    accept: str = "application/json",
    verify: bool = True,
) -> Any:
    """Send one request and return the parsed JSON answer; every failure is a LogBackendError."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    query = parts.query
    if params:
        extra = urlencode({k: v if isinstance(v, str) else json.dumps(v) for k, v in params.items()})
        query = f"{query}&{extra}" if query else extra
    target = (parts.path or "/") + (f"?{query}" if query else "")
    shown = mask_url(url)  # error texts: scheme://host:port only (a path or query may hold a secret)
    headers = {"Accept": accept, "User-Agent": USER_AGENT, "Connection": "close"}
    payload: bytes | None = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"{auth_scheme} {token}"
    deadline = time.monotonic() + 2 * timeout_s
    try:
        # Resolved once here and pinned: the connection goes to an address checked against the allowed
        # networks, while the name is still used for SNI, certificate matching and the Host header.
        address = resolve_in_scope(host, ctx)
    except OutOfScope as exc:
        raise LogBackendError(ProbeErrorReason.UNREACHABLE, f"{shown}: {exc}") from None
    except (OSError, UnicodeError) as exc:
        raise LogBackendError(ProbeErrorReason.UNREACHABLE, f"{shown}: {host} does not resolve ({exc})") from None
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = _PinnedHTTPSConnection(address, host, parts.port, timeout=timeout_s, context=tls_context(ctx, verify))
    else:
        conn = _PinnedHTTPConnection(address, host, parts.port, timeout=timeout_s)
    try:
        conn.request(method, target, body=payload, headers=headers)
        response = conn.getresponse()
        raw = bytearray()
        while len(raw) <= MAX_BODY_BYTES:
            if time.monotonic() > deadline:
                raise LogBackendError(
                    ProbeErrorReason.TIMEOUT, f"{shown}: no complete answer within {2 * timeout_s:g}s"
                )
            chunk = response.read1(65536)
            if not chunk:
                break
            raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise LogBackendError(ProbeErrorReason.PROTOCOL, f"{shown}: answer larger than {MAX_BODY_BYTES} bytes")
    except LogBackendError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise LogBackendError(
            ProbeErrorReason.PROTOCOL, f"{shown}: the backend's certificate is not trusted ({exc.verify_message})"
        ) from None
    except ConnectionRefusedError:
        raise LogBackendError(ProbeErrorReason.REFUSED, f"{shown}: connection refused") from None
    except TimeoutError:
        raise LogBackendError(ProbeErrorReason.TIMEOUT, f"{shown}: no answer within {timeout_s:g}s") from None
    except (ssl.SSLError, http.client.HTTPException, ConnectionResetError, BrokenPipeError) as exc:
        raise LogBackendError(ProbeErrorReason.PROTOCOL, f"{shown}: {type(exc).__name__}: {exc}"[:400]) from None
    except OSError as exc:
        raise LogBackendError(ProbeErrorReason.UNREACHABLE, f"{shown}: {type(exc).__name__}: {exc}"[:400]) from None
    finally:
        conn.close()
    status = response.status
    if status in (401, 403):
        what = "rejected the token" if token is not None else "requires credentials (no token_env declared)"
        raise LogBackendError(ProbeErrorReason.PROTOCOL, f"{shown}: the backend {what} (HTTP {status})")
    if not 200 <= status < 300:
        raise LogBackendError(ProbeErrorReason.PROTOCOL, f"{shown}: HTTP {status} {response.reason}"[:300])
    try:
        return json.loads(bytes(raw))
    except RecursionError:
        raise LogBackendError(ProbeErrorReason.PROTOCOL, f"{shown}: the answer is JSON nested too deeply") from None
    except ValueError as exc:
        raise LogBackendError(ProbeErrorReason.PROTOCOL, f"{shown}: the answer is not JSON ({exc})"[:300]) from None

"""Read a hidden version the way the product itself shows it: one GET of its documented version endpoint.

When nmap -sV and the banner do not show a version (a product recognised without one, or nothing recognised on
a system that declares the product under `software:` without a version), the service probe asks here for the
product's `version_endpoints` from the version data (Mirth Connect: GET /api/server/version with
X-Requested-With: OpenAPI). One request per endpoint and product, sent only to the declared address and port:
never to a fragile system, no redirect followed, no proxy, no credentials, a short timeout (at most
`READ_TIMEOUT_S`, less when the system's politeness says so) with an overall deadline, and at most
`MAX_VERSION_BODY` bytes read. A system's reads run one after the other; systems are read side by side.
What the answer means is `scanner.versiondata.identify.identify_from_read`'s job.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from scanner.probes.base import Target
from scanner.versiondata.identify import Identification, VersionRead, identify_from_read
from scanner.versiondata.model import Product, VersionData, VersionEndpoint

MAX_VERSION_BODY = 4096  # bytes: a version answer is a few bytes; anything larger is not one
READ_TIMEOUT_S = 5.0  # connect and each read; the whole request gets twice this
MAX_READ_WORKERS = 8
log = logging.getLogger("hcscan.probes.versionread")
_HTTPS_PROTOCOLS = frozenset({"https", "fhir"})


def read_scheme(protocol: str, service_name: str | None, tunnel: str | None) -> str | None:
    """http or https for an endpoint that speaks HTTP (declared so, or so found by nmap); None for any other."""
    if protocol == "http":
        return "http"
    if protocol in _HTTPS_PROTOCOLS:
        return "https"
    if service_name and service_name.startswith("http"):  # http, https, http-proxy, http-alt ...
        return "https" if tunnel == "ssl" or service_name == "https" else "http"
    return None


def _host(target: Target) -> str:
    return f"[{target.address}]" if ":" in target.address else target.address


def read_version_endpoint(target: Target, endpoint: VersionEndpoint, scheme: str) -> VersionRead:
    """One GET of `endpoint` on the target's declared address and port. Never raises."""
    # requests is imported only when a read is made: a scan that needs none does not pay for it.
    from scanner.probes.http import USER_AGENT, bounded_session, classify_error, read_capped

    timeout_s = min(READ_TIMEOUT_S, target.politeness.timeout_s)
    name = target.server_name or _host(target)
    default = 443 if scheme == "https" else 80
    headers = {
        "Host": name if target.port == default else f"{name}:{target.port}",
        "User-Agent": USER_AGENT,
        "Accept": "*/*",
        "Accept-Encoding": "identity",
        "Connection": "close",
        **endpoint.headers,
    }
    url = f"{scheme}://{_host(target)}:{target.port}{endpoint.path}"
    with bounded_session(target.server_name, 2 * timeout_s) as (session, deadline):
        try:
            response = session.get(
                url, headers=headers, allow_redirects=False, timeout=(timeout_s, timeout_s), stream=True
            )
            with response:
                status = response.status_code
                body = read_capped(response, MAX_VERSION_BODY + 1) if status == 200 else b""
        except Exception as exc:
            if deadline.fired:
                return VersionRead(endpoint, None, f"no complete answer within {2 * timeout_s:g} s")
            return VersionRead(endpoint, None, classify_error(exc, timeout_s).message())
        if deadline.fired:
            return VersionRead(endpoint, None, f"no complete answer within {2 * timeout_s:g} s")
    if status != 200:
        moved = " (a redirect, not followed)" if 300 <= status < 400 else ""
        return VersionRead(endpoint, None, f"HTTP {status}{moved}")
    if len(body) > MAX_VERSION_BODY:
        return VersionRead(endpoint, None, f"the answer is larger than {MAX_VERSION_BODY} bytes: not a version")
    return VersionRead(endpoint, body.decode("utf-8", errors="replace"))


@dataclass(frozen=True)
class PendingRead:
    """An endpoint whose version nmap could not see, the products to read it for, and how to speak to it."""

    target: Target
    prior: Identification
    products: tuple[Product, ...]
    scheme: str


Reader = Callable[[Target, VersionEndpoint, str], VersionRead]


def _read_one(data: VersionData, pending: PendingRead, reader: Reader) -> Identification:
    """Try each product's endpoints in order; the first version read wins, else the last failure is kept."""
    result = pending.prior
    for product in pending.products:
        for endpoint in product.version_endpoints:
            result = identify_from_read(data, product, reader(pending.target, endpoint, pending.scheme), pending.prior)
            if result.version is not None:
                return result
    return result


def read_hidden_versions(
    data: VersionData,
    pending: Sequence[PendingRead],
    max_workers: int = MAX_READ_WORKERS,
    reader: Reader = read_version_endpoint,
) -> dict[str, Identification]:
    """Endpoint key → identification after reading, for every pending read; one system's reads in sequence."""
    by_system: dict[str, list[PendingRead]] = defaultdict(list)
    for p in pending:
        if not p.target.politeness.fragile:  # fragile systems get no request beyond nmap's connect scan
            by_system[p.target.system_id].append(p)
    if not by_system:
        return {}

    def system_reads(items: list[PendingRead]) -> Mapping[str, Identification]:
        return {p.target.key: _read_one(data, p, reader) for p in items}

    out: dict[str, Identification] = {}
    workers = max(1, min(max_workers, MAX_READ_WORKERS, len(by_system)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hcscan-versionread") as pool:
        for done in pool.map(system_reads, by_system.values()):
            out.update(done)
    found = sum(1 for i in out.values() if i.version is not None)
    log.info("version endpoints: %d read, %d versions found", len(out), found)
    return out

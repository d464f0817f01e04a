"""The service probe: nmap service/version detection on declared endpoints plus a port sweep of each
declared host, turned into facts for the patching (PAT) and exposure (EXP-01) controls.

The sweep covers the configured TCP ports and, as root only (nmap -sU), the UDP ports of `UDP_PAYLOADS` (NTP 123,
SNMP 161, syslog 514), each with one reviewed datagram; without root the UDP facts are withheld (EXP-01 `error`).
Every port in the facts is written with its transport: "22/tcp", "161/udp".

Non-fragile systems are grouped by timing and port set and scanned with ``-sT -sV`` in chunks of whole systems
(at most `CHUNK_MAX_HOSTS` hosts and `CHUNK_HOST_PORTS` host × port pairs a chunk), several chunks at once within
nmap.py's machine-wide process cap; each chunk's `--max-parallelism` is the sum of its systems' caps. nmap scans a
chunk `SERVICE_HOSTGROUP` hosts at a time and writes each group when it is done, so the chunk's time limit follows
its number of groups, and a chunk stopped at its limit keeps every host nmap had finished: only the others are
"could not assess" (timeout). Each fragile system gets its own run over its declared ports only, at its own
(gentle) timing, one connection at a time and without version probes. The XML is parsed here, streaming, and
kept (with its SHA-256) as evidence. Recognising a product and its release cycle uses the version data
(`scanner.versiondata`); judging it is the checks' job.
"""

from __future__ import annotations

import io
import logging
import time
import traceback
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import defusedxml.ElementTree as SafeET

from scanner.probes.base import (
    SYSTEM_LEVEL,
    FactSpec,
    JSONValue,
    Politeness,
    ProbeContext,
    ProbeError,
    ProbeErrorReason,
    ProbeFacts,
    ProbeOutcome,
    Target,
    declared_ports,
    is_ip,
    system_hosts,
)
from scanner.probes.nmap import (
    NMAP_MAX_PROCESSES,
    UDP_PAYLOADS,
    NmapArgumentError,
    NmapError,
    NmapRun,
    run_nmap,
    run_time_limit,
    udp_scan_possible,
)
from scanner.probes.versionread import PendingRead, read_hidden_versions, read_scheme
from scanner.versiondata.identify import (
    Identification,
    assess_declared,
    identification_facts,
    identify_service,
    version_read_products,
)
from scanner.versiondata.model import VersionData

CHUNK_MAX_HOSTS = 64  # hosts of one nmap run (whole systems: a system larger than this is a chunk of its own)
CHUNK_HOST_PORTS = 64 * 25  # host × port pairs of one nmap run: fewer hosts a chunk when many ports are swept
# Hosts nmap scans side by side within a chunk. nmap -sV examines about 20 services at once (timing 3) whatever
# the group's size, so a larger group only makes every host of it wait longer against its --host-timeout.
SERVICE_HOSTGROUP = 16
log = logging.getLogger("hcscan.probes.service")
MAX_BANNER_CHARS = 300
MAX_EVIDENCE_XML = 200_000  # characters of raw XML kept per run in the evidence store (hash covers all of it)
_ENDPOINT_PROTOCOLS = frozenset(
    {"https", "http", "tls", "fhir", "ssh", "dicom", "dicom-tls", "mllp", "mllp-tls", "syslog", "syslog-tls",
     "ldap", "ldaps", "other"}
)  # fmt: skip
UDP_SWEEP_PORTS: tuple[int, ...] = tuple(sorted(UDP_PAYLOADS))  # swept on non-fragile systems' hosts, as root
# Declared endpoints whose port is a UDP one: NTP is UDP only; plain syslog is received on UDP and on TCP.
_UDP_ONLY, _UDP_AND_TCP = frozenset({"ntp"}), frozenset({"syslog"})
UDP_NEEDS_ROOT = "UDP ports were not swept: nmap's UDP scan (-sU) needs root; run the scan as root to look for them"


def port_label(port: int, protocol: str) -> str:
    """How every port list in the facts and messages names a port: '22/tcp', '161/udp'."""
    return f"{port}/{protocol}"


def declared_port_labels(target: Target) -> set[str]:
    """The system's declared endpoints' ports with their transport (ntp: udp; syslog: tcp and udp; others: tcp)."""
    out: set[str] = set()
    for e in target.declared.get("endpoints") or []:
        if not isinstance(e, dict) or not isinstance(e.get("port"), int):
            continue
        protocol = str(e.get("protocol", ""))
        if protocol not in _UDP_ONLY:
            out.add(port_label(e["port"], "tcp"))
        if protocol in _UDP_ONLY | _UDP_AND_TCP:
            out.add(port_label(e["port"], "udp"))
    return out


@dataclass(frozen=True)
class ServiceSettings:
    """What the service probe needs from config.yaml (`exposure:`), already loaded."""

    version_data: VersionData
    sweep_ports: tuple[int, ...]
    version_intensity: int = 7
    max_data_age_days: int = 120
    chunk_hosts: int = CHUNK_MAX_HOSTS
    hostgroup: int = SERVICE_HOSTGROUP
    chunk_time_limit_s: float | None = None  # None: run_time_limit() of the chunk's size (tests set a short one)


@dataclass(frozen=True)
class ServiceInfo:
    """One <port> of nmap's XML, with its <service> element."""

    address: str
    port: int
    state: str
    reason: str
    protocol: str = "tcp"
    name: str | None = None
    product: str | None = None
    version: str | None = None
    extrainfo: str | None = None
    ostype: str | None = None
    method: str | None = None  # "probed" (answered a probe) or "table" (guessed from the port number)
    conf: int | None = None
    tunnel: str | None = None
    cpes: tuple[str, ...] = ()
    banner: str | None = None


@dataclass(frozen=True)
class ServiceScan:
    ports: Mapping[tuple[str, int], ServiceInfo]
    hosts_timed_out: frozenset[str]
    finished_ok: bool
    error_message: str | None
    hosts_done: frozenset[str] = frozenset()  # hosts whose <host> element nmap wrote in full


@dataclass(frozen=True)
class UdpSweep:
    """The UDP part of a job's sweep: what nmap -sU saw per (address, port); or why it was not (or not fully) run."""

    ports: Mapping[tuple[str, int], ServiceInfo] = field(default_factory=dict)
    swept: tuple[int, ...] = ()
    not_swept: str | None = None  # why no UDP port was swept although the system is swept (not root)
    error: ProbeError | None = None  # a UDP run failed or gave up on a host: the system's sweep is incomplete


def parse_service_xml(xml: str, protocol: str = "tcp") -> ServiceScan:
    """Parse nmap's XML streaming (hardened parser: no entities, no external references); `protocol`'s ports."""
    ports: dict[tuple[str, int], ServiceInfo] = {}
    timed_out: set[str] = set()
    done: set[str] = set()
    finished_ok = False
    error_message: str | None = "nmap output cut short"
    try:
        for _event, elem in SafeET.iterparse(io.StringIO(xml), events=("end",)):
            if elem.tag == "host":
                address = next(
                    (a.get("addr", "") for a in elem.findall("address") if a.get("addrtype") in ("ipv4", "ipv6")), ""
                )
                if elem.get("timedout") == "true" and address:
                    timed_out.add(address)
                if address:
                    done.add(address)
                for port in elem.iter("port"):
                    info = _port_info(address, port, protocol)
                    if info is not None:
                        ports[(info.address, info.port)] = info
                for info in _extra_ports(address, elem, protocol):  # ports nmap folded into one summary line
                    ports.setdefault((info.address, info.port), info)
                elem.clear()
            elif elem.tag == "finished":
                finished_ok = elem.get("exit", "success") == "success"
                error_message = elem.get("errormsg") or None
    except Exception as exc:  # defusedxml and expat raise several types; all mean "unusable output"
        if not ports and not done:
            raise NmapError(ProbeErrorReason.TOOL_FAILED, f"unreadable nmap XML: {exc}") from exc
        finished_ok, error_message = False, f"nmap XML cut short: {exc}"
    return ServiceScan(ports, frozenset(timed_out), finished_ok, error_message, frozenset(done))


def _port_list(text: str) -> list[int]:
    """nmap's port list ('1-3,22,25'), capped at 65,535 ports; damaged parts are skipped."""
    found: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            continue
        first, last = int(low), int(high or low)
        if 0 < first <= last <= 65535:
            found.extend(range(first, last + 1))
        if len(found) > 65535:
            break
    return found[:65535]


def _extra_ports(address: str, host: Any, protocol: str) -> list[ServiceInfo]:
    """Ports nmap reports only in `<extraports>` (many in one state: 'closed', 'filtered'), each with its state and
    reason, so a declared port that is closed reads as closed, not as missing from nmap's output."""
    if not address:
        return []
    found: list[ServiceInfo] = []
    for extra in host.iter("extraports"):
        state = extra.get("state", "unknown")
        for reasons in extra.findall("extrareasons"):
            if reasons.get("proto", "tcp") != protocol:
                continue
            reason = reasons.get("reason", "")
            found.extend(
                ServiceInfo(address, p, state, reason, protocol=protocol) for p in _port_list(reasons.get("ports", ""))
            )
    return found


def _port_info(address: str, port: Any, protocol: str = "tcp") -> ServiceInfo | None:
    if not address or port.get("protocol", "tcp") != protocol:
        return None
    state = port.find("state")
    service = port.find("service")
    banner = None
    for script in port.findall("script"):
        if script.get("id") in ("http-server-header", "banner"):
            banner = (script.get("output") or "").strip()[:MAX_BANNER_CHARS] or None
    if service is None:
        return ServiceInfo(
            address,
            int(port.get("portid", "0")),
            state.get("state", "unknown") if state is not None else "unknown",
            state.get("reason", "") if state is not None else "",
            protocol=protocol,
            banner=banner,
        )
    conf = service.get("conf")
    return ServiceInfo(
        address=address,
        port=int(port.get("portid", "0")),
        state=state.get("state", "unknown") if state is not None else "unknown",
        reason=state.get("reason", "") if state is not None else "",
        protocol=protocol,
        name=service.get("name"),
        product=service.get("product"),
        version=service.get("version"),
        extrainfo=service.get("extrainfo"),
        ostype=service.get("ostype"),
        method=service.get("method"),
        conf=int(conf) if conf and conf.isdigit() else None,
        tunnel=service.get("tunnel"),
        cpes=tuple((c.text or "").strip() for c in service.findall("cpe") if c.text),
        banner=banner,
    )


# ---------------------------------------------------------------------------------------------
# planning the nmap runs (pure)


@dataclass
class _Job:
    """One nmap run: hosts × ports, with one politeness, with or without version detection."""

    hosts: set[str]
    ports: set[int]
    politeness: Politeness
    version_probes: bool
    keys: list[str] = field(default_factory=list)  # targets whose facts come from this run
    systems: set[str] = field(default_factory=set)  # the systems the run covers (sets --max-parallelism)
    udp_hosts: set[str] = field(default_factory=set)  # hosts of swept (non-fragile) systems: UDP_SWEEP_PORTS too


def host_timeout_s(politeness: Politeness) -> float:
    """nmap's --host-timeout for a service run: six per-connection timeouts, at least 30 s."""
    return max(30.0, politeness.timeout_s * 6)


def chunk_capacity(ports: int, max_hosts: int = CHUNK_MAX_HOSTS) -> int:
    """Hosts one shared run may cover when each is scanned on `ports` ports (at least 1)."""
    return max(1, min(max_hosts, CHUNK_HOST_PORTS // max(1, ports)))


def plan_jobs(targets: Sequence[Target], sweep_ports: Iterable[int], max_hosts: int = CHUNK_MAX_HOSTS) -> list[_Job]:
    """Group targets into nmap runs. Fragile systems: own run, declared ports only, no -sV. A system with its
    own max_concurrency in the inventory: own run (its cap holds for it alone). Others share runs of whole
    systems, at most `chunk_capacity` hosts a run (a larger system is a run of its own)."""
    sweep = set(sweep_ports)
    by_system: dict[str, list[Target]] = defaultdict(list)
    for t in targets:
        by_system[t.system_id].append(t)
    grouped: dict[tuple[int, int, float, frozenset[int]], _Job] = {}
    jobs: list[_Job] = []
    for system_targets in by_system.values():
        fragile = any(t.politeness.fragile for t in system_targets)
        hosts = set().union(*(system_hosts(t) for t in system_targets))
        declared = set().union(*(declared_ports(t) for t in system_targets)) | {
            t.port for t in system_targets if t.protocol != SYSTEM_LEVEL
        }
        keys = [t.key for t in system_targets]
        politeness = system_targets[0].politeness
        system = {system_targets[0].system_id}
        if fragile:
            jobs.append(_Job(hosts, declared, politeness, version_probes=False, keys=keys, systems=system))
            continue
        has_system = any(t.protocol == SYSTEM_LEVEL for t in system_targets)
        probed = {t.port for t in system_targets if t.protocol != SYSTEM_LEVEL}
        # A declared port no service control looks at is neither probed nor swept: it cannot be "unexpected",
        # and version probes have no business with, say, a DICOM or MLLP port.
        ports = frozenset(probed | ((sweep - declared) if has_system else set()))
        udp_hosts = hosts if has_system else set()
        if politeness.strict:
            jobs.append(
                _Job(hosts, set(ports), politeness, version_probes=True, keys=keys, systems=system, udp_hosts=udp_hosts)
            )
            continue
        group = (politeness.timing, politeness.max_concurrency, politeness.timeout_s, ports)
        job = grouped.get(group)
        if job is not None and job.hosts and len(job.hosts | hosts) > chunk_capacity(len(ports), max_hosts):
            job = None  # that run is full: the group goes on in a new one
        if job is None:
            job = grouped[group] = _Job(set(), set(ports), politeness, version_probes=True)
            jobs.append(job)
        job.hosts |= hosts
        job.udp_hosts |= udp_hosts
        job.keys += keys
        job.systems |= system
    return [j for j in jobs if j.hosts and j.ports]


# ---------------------------------------------------------------------------------------------
# facts (pure)

_SERVICE_FACTS: tuple[FactSpec, ...] = (
    FactSpec("service.port_state", "str", "nmap's state of the declared port: open (others become probe errors)."),
    FactSpec("service.name", "str", "nmap's service name (ssh, http, dicom, ...).", True),
    FactSpec("service.product", "str", "Product nmap -sV recognised, e.g. 'OpenSSH'.", True),
    FactSpec("service.version", "str", "Version text nmap -sV read, e.g. '8.9p1 Ubuntu 3ubuntu0.6'.", True),
    FactSpec("service.extrainfo", "str", "nmap's extra information, e.g. 'Ubuntu Linux; protocol 2.0'.", True),
    FactSpec("service.ostype", "str", "Operating system nmap inferred from the service.", True),
    FactSpec("service.cpe", "list[str]", "CPE 2.2 URIs nmap gave for the service."),
    FactSpec("service.banner", "str", "Raw banner text (HTTP Server header), trimmed to 300 characters.", True),
    FactSpec("service.method", "str", "'probed' (the service answered a probe) or 'table' (guess by port).", True),
    FactSpec("service.confidence", "int", "nmap's confidence 0..10 in the service name.", True),
    FactSpec("service.tunnel", "str", "'ssl' when nmap found the service behind TLS.", True),
    FactSpec("service.version_probed", "bool", "Version detection ran (false on fragile systems)."),
    FactSpec("service.nmap_xml_sha256", "str", "SHA-256 of the raw nmap XML the facts come from.", volatile=True),
    FactSpec("patch.product_id", "str", "Product id in the version data, or null if not recognised.", True),
    FactSpec("patch.product_name", "str", "Product name in the version data.", True),
    FactSpec("patch.version", "str", "Upstream version read from the fingerprint, e.g. '8.9p1'.", True),
    FactSpec(
        "patch.matched_by",
        "str",
        "How the product or version was recognised: nmap_product, cpe, banner, version_endpoint or declared.",
        True,
    ),
    FactSpec(
        "patch.version_source",
        "str",
        "Where the version was read: 'nmap -sV', 'service banner', 'version-endpoint GET /api/server/version'.",
        True,
    ),
    FactSpec("patch.source_text", "str", "The text the version was read from.", True),
    FactSpec(
        "patch.evidence",
        "str",
        "bare_upstream_banner, distribution_banner (suffix such as 'Ubuntu-3ubuntu0.6': fixes may be "
        "back-ported), version_endpoint (read from the product's documented version endpoint) or none.",
    ),
    FactSpec("patch.unidentified_reason", "str", "Why product, version or cycle is unknown.", True),
    FactSpec("patch.cycle", "str", "Release cycle of the version (e.g. '1.24', '8').", True),
    FactSpec("patch.cycle_eol", "str", "End of support of the cycle: ISO date, true (ended), false/null (none).", True),
    FactSpec("patch.cycle_latest", "str", "Newest release of the cycle known to the version data.", True),
    FactSpec("patch.cycle_latest_date", "datetime", "Release date of patch.cycle_latest.", True),
    FactSpec("patch.behind_latest", "bool", "The version is older than patch.cycle_latest.", True),
    FactSpec("patch.distro", "str", "Distribution named by the banner suffix (debian, ubuntu, rhel ...).", True),
    FactSpec("patch.distro_release", "str", "Distribution release when the banner tells it (e.g. '9').", True),
    FactSpec("patch.distro_marker", "str", "The banner text that named the distribution.", True),
    FactSpec("patch.distro_eol", "str", "End of support of that distribution release (ISO date).", True),
    FactSpec("patch.kev", "list[object]", "CISA KEV entries whose NVD ranges contain the version: {cve, name}."),
    FactSpec("patch.declared_package", "object", "The system's `software:` entry for this product.", True),
    FactSpec(
        "patch.system_software",
        "list[str]",
        "Products the system declares under `software:` with a version (PAT-03 judges them).",
    ),
    FactSpec("patch.data_version", "str", "data_version of the version data used."),
    FactSpec("patch.data_as_of", "datetime", "Date the product's cycle data reflects.", True),
    FactSpec("patch.support", "str", "How the product's support ends: dated, newest-line or unknown.", True),
    FactSpec("patch.kev_fixed_by_latest", "list[str]", "KEV CVEs of patch.kev that the cycle's newest release fixes."),
    FactSpec(
        "patch.kev_unverified",
        "list[object]",
        "KEV entries of the product whose affected versions are not in the data: {cve, name, why}.",
    ),
    FactSpec("patch.kev_catalog", "str", "catalogVersion of the KEV snapshot in the version data.", True),
    FactSpec("patch.kev_as_of", "datetime", "Release date of the KEV snapshot (null: none recorded).", True),
    FactSpec("versiondata.max_age_days", "int", "Configured maximum age of the version data.", True),
)
_SYSTEM_FACTS: tuple[FactSpec, ...] = (
    FactSpec(
        "exposure.swept_ports",
        "list[str]",
        "Ports swept on the system's hosts, with transport: '22/tcp', '161/udp' (declared TCP ports only if fragile).",
    ),
    FactSpec("exposure.sweep_limited", "bool", "Fragile system: only declared ports were probed (no UDP)."),
    FactSpec(
        "exposure.declared_ports",
        "list[str]",
        "Ports of the system's declared endpoints, with transport (ntp: udp; syslog: tcp and udp; others: tcp).",
    ),
    FactSpec(
        "exposure.open", "list[object]", "Open ports found: {address, port, protocol (tcp/udp), service, product}."
    ),
    FactSpec(
        "exposure.unexpected", "list[object]", "Open ports not declared: {address, port, protocol, service, product}."
    ),
    FactSpec("exposure.unexpected_ports", "list[str]", "The ports of exposure.unexpected: '23/tcp', '161/udp'."),
    FactSpec(
        "exposure.udp_swept_ports",
        "list[str]",
        "UDP ports swept (123/udp NTP, 161/udp SNMP, 514/udp syslog; [] on fragile systems); null when they could "
        "not be swept (nmap -sU needs root): exposure.udp_not_swept says why.",
        True,
    ),
    FactSpec("exposure.udp_not_swept", "str", "Why the UDP ports were not swept (null when they were).", True),
    FactSpec(
        "exposure.udp_unanswered",
        "list[str]",
        "Swept UDP ports that neither answered nor were refused (nmap open|filtered: a silent service such as "
        "syslog, or a filter), as '<address> <port>/udp'; not counted as open.",
    ),
    FactSpec("software.declared", "list[object]", "The system's `software:` entries with their lifecycle data."),
    FactSpec("versiondata.data_version", "str", "data_version of the version data used."),
    FactSpec("versiondata.generated", "datetime", "When the version data was compiled."),
    FactSpec("versiondata.max_age_days", "int", "Configured maximum age of the version data."),
    FactSpec(
        "versiondata.products_as_of",
        "object",
        "Product id → as-of date of the knowledge each product seen on (or declared by) the system was judged on.",
    ),
    FactSpec("versiondata.kev_as_of", "datetime", "Release date of the KEV snapshot (null: none recorded).", True),
    FactSpec("versiondata.kev_catalog", "str", "catalogVersion of the KEV snapshot.", True),
    FactSpec("service.nmap_xml_sha256", "str", "SHA-256 of the raw nmap XML the facts come from.", volatile=True),
)


def endpoint_facts(
    info: ServiceInfo,
    data: VersionData,
    run: NmapRun,
    version_probed: bool,
    declared: Mapping[str, Any],
    max_data_age_days: int | None = None,
    ident: Identification | None = None,
) -> dict[str, JSONValue]:
    """The endpoint's service and patch facts; `ident`: the identification when already made (after a read)."""
    facts: dict[str, JSONValue] = {
        "service.port_state": info.state,
        "service.name": info.name,
        "service.product": info.product,
        "service.version": info.version,
        "service.extrainfo": info.extrainfo,
        "service.ostype": info.ostype,
        "service.cpe": list(info.cpes),
        "service.banner": info.banner,
        "service.method": info.method,
        "service.confidence": info.conf,
        "service.tunnel": info.tunnel,
        "service.version_probed": version_probed,
        "service.nmap_xml_sha256": run.xml_sha256,
    }
    ident = ident or identify_endpoint(info, data)
    facts.update(identification_facts(ident, data))
    facts["versiondata.max_age_days"] = max_data_age_days
    facts["patch.declared_package"] = None
    software = (declared.get("system") or {}).get("software") or []
    # A declaration without a version is read on the endpoints, not handed to PAT-03.
    facts["patch.system_software"] = [
        f"{item.get('product')} {item.get('version')}" for item in software if item.get("version")
    ]
    if ident.product is not None:
        for item in software:
            found = data.product_by_name(str(item.get("product", "")))
            if found is not None and found.id == ident.product.id:
                facts["patch.declared_package"] = dict(item)
    return facts


def identify_endpoint(info: ServiceInfo, data: VersionData) -> Identification:
    """What nmap's fingerprint of the port says (a port-number guess, "table", is not one: nothing was read)."""
    probed = info.method == "probed"
    return identify_service(
        data,
        product=info.product if probed else None,
        version=info.version if probed else None,
        extrainfo=info.extrainfo if probed else None,
        cpes=info.cpes if probed else (),
        banner=info.banner,
    )


def _open_port(info: ServiceInfo) -> dict[str, JSONValue]:
    return {
        "address": info.address,
        "port": info.port,
        "protocol": info.protocol,
        "service": info.name,
        "product": info.product,
    }


def _label_order(label: str) -> tuple[int, str]:
    port, _, protocol = label.partition("/")
    return int(port), protocol


def _products_as_of(
    target: Target, scan: ServiceScan | None, hosts: Collection[str], data: VersionData
) -> dict[str, JSONValue]:
    """Product id → as-of date of what the data knows about it, for the products on the system's open ports and in
    its `software:` declaration: the knowledge PAT-01/02/03/05 judged this system on (PAT-06 judges its age)."""
    seen: dict[str, JSONValue] = {}
    for (address, _port), info in scan.ports.items() if scan is not None else ():
        if address not in hosts or info.state != "open" or info.method != "probed":
            continue
        ident = identify_service(
            data, product=info.product, version=info.version, extrainfo=info.extrainfo, cpes=info.cpes,
            banner=info.banner,
        )  # fmt: skip
        if ident.product is not None:
            seen[ident.product.id] = ident.product.as_of.isoformat()
    for item in (target.declared.get("system") or {}).get("software") or []:
        product = data.product_by_name(str(item.get("product", "")))
        if product is not None:
            seen[product.id] = product.as_of.isoformat()
    return dict(sorted(seen.items()))


def _declares_http(target: Target) -> bool:
    """The system declares an endpoint a version endpoint can be read on (http, https, fhir)."""
    endpoints = target.declared.get("endpoints") or []
    return any(isinstance(e, dict) and read_scheme(str(e.get("protocol", "")), None, None) for e in endpoints)


def system_facts(
    target: Target,
    scan: ServiceScan | None,
    swept: Sequence[int],
    limited: bool,
    settings: ServiceSettings,
    run: NmapRun | None,
    udp: UdpSweep | None = None,
) -> dict[str, JSONValue]:
    """EXP-01's facts. `swept`: the TCP ports swept; `udp`: the UDP sweep (None: not swept, e.g. fragile)."""
    declared = declared_port_labels(target)
    declared_tcp = {p for p in declared_ports(target) if port_label(p, "tcp") in declared}
    hosts = system_hosts(target)
    open_ports: list[dict[str, JSONValue]] = []
    if scan is not None:
        for (address, port), info in sorted(scan.ports.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            if address in hosts and info.state == "open" and (port in swept or port in declared_tcp):
                open_ports.append(_open_port(info))
    udp = udp or UdpSweep()
    unanswered: list[str] = []
    for (address, port), info in sorted(udp.ports.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if address in hosts and port in udp.swept:
            if info.state == "open":
                open_ports.append(_open_port(info))
            elif info.state == "open|filtered":
                unanswered.append(f"{address} {port_label(port, 'udp')}")
    unexpected = [o for o in open_ports if port_label(int(str(o["port"])), str(o["protocol"])) not in declared]
    udp_swept = [port_label(p, "udp") for p in udp.swept]
    software = (target.declared.get("system") or {}).get("software") or []
    data = settings.version_data
    kev_as_of = data.kev_as_of()
    return {
        "exposure.swept_ports": [port_label(p, "tcp") for p in swept] + udp_swept,
        "exposure.sweep_limited": limited,
        "exposure.declared_ports": sorted(declared, key=_label_order),
        "exposure.open": open_ports,
        "exposure.unexpected": unexpected,
        "exposure.unexpected_ports": sorted(
            {port_label(int(str(o["port"])), str(o["protocol"])) for o in unexpected}, key=_label_order
        ),
        "exposure.udp_swept_ports": None if udp.not_swept else udp_swept,
        "exposure.udp_not_swept": udp.not_swept,
        "exposure.udp_unanswered": unanswered,
        "software.declared": [assess_declared(data, dict(item), _declares_http(target)) for item in software],
        "versiondata.data_version": data.file.data_version,
        "versiondata.generated": data.file.generated.isoformat(),
        "versiondata.max_age_days": settings.max_data_age_days,
        "versiondata.products_as_of": _products_as_of(target, scan, hosts, data),
        "versiondata.kev_as_of": kev_as_of.isoformat() if kev_as_of is not None else None,
        "versiondata.kev_catalog": data.file.kev_snapshot.catalog_version if data.file.kev_snapshot else None,
        "service.nmap_xml_sha256": run.xml_sha256 if run else None,
    }


# ---------------------------------------------------------------------------------------------
# the probe


class ServiceProbe:
    """nmap -sT -sV on declared endpoints and a sweep of declared hosts; PAT/EXP-01 facts."""

    kind: ClassVar[str] = "service"
    protocols: ClassVar[frozenset[str]] = _ENDPOINT_PROTOCOLS | {SYSTEM_LEVEL}
    facts: ClassVar[Sequence[FactSpec]] = _SERVICE_FACTS + tuple(
        s for s in _SYSTEM_FACTS if s.name != "service.nmap_xml_sha256"
    )

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.runs: list[NmapRun] = []  # raw XML evidence of the last gather
        self._pending: dict[str, tuple[PendingRead, ServiceInfo, NmapRun]] = {}  # hidden versions to read

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        results: dict[str, ProbeOutcome] = {}
        for t in targets:
            if t.protocol != SYSTEM_LEVEL and not is_ip(t.address):
                results[t.key] = ProbeError(ProbeErrorReason.UNREACHABLE, f"no address for {t.key}")
        todo = [t for t in targets if t.key not in results]
        by_key = {t.key: t for t in todo}
        jobs = plan_jobs(todo, self.settings.sweep_ports, self.settings.chunk_hosts)
        self.runs = []
        self._pending = {}
        with ThreadPoolExecutor(max_workers=NMAP_MAX_PROCESSES, thread_name_prefix="hcscan-service") as pool:
            futures = [
                (job, pool.submit(self._run_job, job, ctx, f"{i}/{len(jobs)}")) for i, job in enumerate(jobs, start=1)
            ]
            for job, future in futures:
                try:
                    run, scan, udp, udp_runs = future.result()
                except NmapError as exc:
                    for key in job.keys:
                        results[key] = ProbeError(exc.reason, exc.detail)
                    continue
                except NmapArgumentError as exc:
                    for key in job.keys:
                        results[key] = ProbeError(ProbeErrorReason.INTERNAL, f"nmap arguments refused: {exc}")
                    continue
                except Exception:
                    for key in job.keys:
                        results[key] = ProbeError(ProbeErrorReason.INTERNAL, traceback.format_exc(limit=3))
                    continue
                self.runs += [run, *udp_runs]
                swept = sorted(job.ports)
                for key in job.keys:
                    results[key] = self._outcome(by_key[key], job, run, scan, swept, udp)
        self._read_hidden_versions(results, ctx)
        for t in targets:
            if t.key in results:
                continue
            if t.protocol == SYSTEM_LEVEL and t.address:
                # Nothing to scan (no sweep ports beyond the declared ones): declared-software facts still hold.
                fragile = t.politeness.fragile
                results[t.key] = ProbeFacts(system_facts(t, None, [], fragile, self.settings, None))
            else:
                results[t.key] = ProbeError(ProbeErrorReason.UNREACHABLE, "no declared host address for this system")
        return results

    def _run_job(
        self, job: _Job, ctx: ProbeContext, label: str = "1/1"
    ) -> tuple[NmapRun, ServiceScan, UdpSweep, list[NmapRun]]:
        extra: list[str] = []
        if job.version_probes:
            extra = ["-sV", "--version-intensity", str(self.settings.version_intensity)]
        host_timeout = host_timeout_s(job.politeness)
        hostgroup = max(1, self.settings.hostgroup)
        started = time.monotonic()
        run = run_nmap(
            sorted(job.hosts),
            sorted(job.ports),
            politeness=job.politeness,
            extra=extra,
            timeout_s=host_timeout,
            nmap_path=ctx.nmap_path,
            systems=max(1, len(job.systems)),
            hostgroup=hostgroup,
            process_timeout_s=self.settings.chunk_time_limit_s
            or run_time_limit(host_timeout, len(job.hosts), hostgroup),
            keep_partial=True,
        )
        try:
            scan = parse_service_xml(run.xml)
        except NmapError:
            if run.cut_short is None:
                raise
            scan = ServiceScan({}, frozenset(), False, run.cut_short)  # stopped before nmap wrote any host
        udp, udp_runs = self._udp_sweep(job, ctx)
        unfinished = sorted(job.hosts - scan.hosts_done) if run.cut_short else []
        gave_up = sorted(job.hosts & scan.hosts_timed_out)
        level = logging.WARNING if unfinished or gave_up else logging.INFO
        log.log(
            level,
            "service chunk %s: %d hosts × %d ports (%d systems) in %.1f s%s%s",
            label,
            len(job.hosts),
            len(job.ports),
            len(job.systems),
            time.monotonic() - started,
            f"; {run.cut_short}, {len(unfinished)} hosts unfinished" if unfinished else "",
            f"; nmap gave up on {len(gave_up)} hosts (host timeout)" if gave_up else "",
        )
        return run, scan, udp, udp_runs

    @staticmethod
    def _udp_sweep(job: _Job, ctx: ProbeContext) -> tuple[UdpSweep, list[NmapRun]]:
        """One nmap -sU run per UDP port (each port has its own reviewed datagram) over the job's swept hosts."""
        if not job.udp_hosts:
            return UdpSweep(), []
        if not udp_scan_possible():
            return UdpSweep(not_swept=UDP_NEEDS_ROOT), []
        ports: dict[tuple[str, int], ServiceInfo] = {}
        runs: list[NmapRun] = []
        for port in UDP_SWEEP_PORTS:
            try:
                run = run_nmap(
                    sorted(job.udp_hosts),
                    [port],
                    politeness=job.politeness,
                    timeout_s=max(10.0, job.politeness.timeout_s * 2),
                    nmap_path=ctx.nmap_path,
                    systems=max(1, len(job.systems)),
                    udp=True,
                )
                scan = parse_service_xml(run.xml, "udp")
            except NmapError as exc:
                return UdpSweep(ports, error=ProbeError(exc.reason, f"UDP sweep of {port}/udp: {exc.detail}")), runs
            runs.append(run)
            if not scan.finished_ok:
                detail = f"UDP sweep of {port}/udp: {scan.error_message or 'nmap did not finish'}"
                return UdpSweep(ports, error=ProbeError(ProbeErrorReason.TOOL_FAILED, detail)), runs
            if scan.hosts_timed_out:
                gave_up = ", ".join(sorted(scan.hosts_timed_out))
                detail = f"UDP sweep of {port}/udp: nmap gave up on {gave_up} (host timeout)"
                return UdpSweep(ports, error=ProbeError(ProbeErrorReason.TIMEOUT, detail)), runs
            ports.update(scan.ports)
        return UdpSweep(ports, UDP_SWEEP_PORTS), runs

    def _outcome(
        self, target: Target, job: _Job, run: NmapRun, scan: ServiceScan, swept: list[int], udp: UdpSweep
    ) -> ProbeOutcome:
        hosts = system_hosts(target) if target.protocol == SYSTEM_LEVEL else {target.address}
        timed_out = sorted(hosts & set(scan.hosts_timed_out))
        if timed_out:
            return ProbeError(ProbeErrorReason.TIMEOUT, f"nmap gave up on {', '.join(timed_out)} (host timeout)")
        if run.cut_short is not None:
            # The run was stopped at its time limit: what nmap wrote of a finished host holds; the rest is unknown.
            unfinished = sorted(hosts - scan.hosts_done)
            if unfinished:
                return ProbeError(
                    ProbeErrorReason.TIMEOUT,
                    f"{run.cut_short} (a run of {len(job.hosts)} hosts); it had not finished {', '.join(unfinished)}",
                )
        elif target.protocol == SYSTEM_LEVEL and not scan.finished_ok:
            return ProbeError(ProbeErrorReason.TOOL_FAILED, scan.error_message or "nmap did not finish")
        if target.protocol == SYSTEM_LEVEL:
            # nmap runs with -Pn: a host that is down shows every port "filtered" and would look clean. Only a
            # host that answered on some port (open, or closed with a reset) has had its ports ruled out.
            silent = sorted(h for h in hosts if not host_answered(scan, h))
            if silent:
                return ProbeError(
                    ProbeErrorReason.UNREACHABLE,
                    f"no port of {', '.join(silent)} answered (all filtered or silent): undeclared ports cannot be "
                    "ruled out",
                )
            if udp.error is not None:  # a half-done UDP sweep cannot rule undeclared UDP services out
                return udp.error
            facts = system_facts(target, scan, swept, not job.version_probes, self.settings, run, udp)
            return ProbeFacts(facts)
        info = scan.ports.get((target.address, target.port))
        if info is None:
            detail = scan.error_message or "port missing from nmap output"
            return ProbeError(ProbeErrorReason.TOOL_FAILED, detail)
        if info.state == "closed":
            return ProbeError(ProbeErrorReason.REFUSED, f"port {target.port} is closed ({info.reason})")
        if info.state != "open":
            return ProbeError(ProbeErrorReason.TIMEOUT, f"port {target.port} is {info.state} ({info.reason})")
        data = self.settings.version_data
        ident = identify_endpoint(info, data)
        if job.version_probes and not target.politeness.fragile:
            software = (target.declared.get("system") or {}).get("software") or []
            products = version_read_products(data, ident, software)
            scheme = read_scheme(target.protocol, info.name, info.tunnel)
            if products and scheme is not None:
                self._pending[target.key] = (PendingRead(target, ident, tuple(products), scheme), info, run)
        return ProbeFacts(
            endpoint_facts(info, data, run, job.version_probes, target.declared, self.settings.max_data_age_days, ident)
        )

    def _read_hidden_versions(self, results: dict[str, ProbeOutcome], ctx: ProbeContext) -> None:
        """Endpoints whose version nmap could not see: one GET of the product's version endpoint each."""
        if not self._pending:
            return
        pending = [p for p, _info, _run in self._pending.values()]
        read = read_hidden_versions(self.settings.version_data, pending, ctx.max_workers)
        for key, ident in read.items():
            if not isinstance(results.get(key), ProbeFacts):
                continue
            p, info, run = self._pending[key]
            data, max_age = self.settings.version_data, self.settings.max_data_age_days
            results[key] = ProbeFacts(endpoint_facts(info, data, run, True, p.target.declared, max_age, ident))


def host_answered(scan: ServiceScan, address: str) -> bool:
    """Did the host answer on any port (open, or closed with a reset)? With -Pn a dead host is all 'filtered'."""
    return any(a == address and info.state in ("open", "closed") for (a, _port), info in scan.ports.items())


def default_settings() -> ServiceSettings:
    """Settings from the shipped version data and default sweep (for `make_probes()` without a config)."""
    from scanner.exposure_config import DEFAULT_SWEEP_PORTS
    from scanner.versiondata import load_version_data

    return ServiceSettings(load_version_data(), DEFAULT_SWEEP_PORTS)

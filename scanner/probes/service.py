"""The service probe: nmap service/version detection on declared endpoints plus a port sweep of each
declared host, turned into facts for the patching (PAT) and exposure (EXP-01) controls.

One nmap process covers many hosts: non-fragile systems are grouped by timing and port set and scanned
with ``-sT -sV``; each fragile system gets its own run over its declared ports only, at its own (gentle)
timing, one connection at a time and without version probes. The XML is parsed here, streaming, and
kept (with its SHA-256) as evidence. Recognising a product and its release cycle uses the version data
(`scanner.versiondata`); judging it is the checks' job.
"""

from __future__ import annotations

import io
import traceback
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
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
from scanner.probes.nmap import NmapArgumentError, NmapError, NmapRun, run_nmap
from scanner.versiondata.identify import assess_declared, identification_facts, identify_service
from scanner.versiondata.model import VersionData

NMAP_MAX_PROCESSES = 3
MAX_BANNER_CHARS = 300
MAX_EVIDENCE_XML = 200_000  # characters of raw XML kept per run in the evidence store (hash covers all of it)
_ENDPOINT_PROTOCOLS = frozenset(
    {"https", "http", "tls", "fhir", "ssh", "dicom", "dicom-tls", "mllp", "mllp-tls", "syslog", "syslog-tls",
     "ldap", "ldaps", "other"}
)  # fmt: skip


@dataclass(frozen=True)
class ServiceSettings:
    """What the service probe needs from config.yaml (`exposure:`), already loaded."""

    version_data: VersionData
    sweep_ports: tuple[int, ...]
    version_intensity: int = 7
    max_data_age_days: int = 120


@dataclass(frozen=True)
class ServiceInfo:
    """One <port> of nmap's XML, with its <service> element."""

    address: str
    port: int
    state: str
    reason: str
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


def parse_service_xml(xml: str) -> ServiceScan:
    """Parse nmap's XML streaming (hardened parser: no entities, no external references)."""
    ports: dict[tuple[str, int], ServiceInfo] = {}
    timed_out: set[str] = set()
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
                for port in elem.iter("port"):
                    info = _port_info(address, port)
                    if info is not None:
                        ports[(info.address, info.port)] = info
                elem.clear()
            elif elem.tag == "finished":
                finished_ok = elem.get("exit", "success") == "success"
                error_message = elem.get("errormsg") or None
    except Exception as exc:  # defusedxml and expat raise several types; all mean "unusable output"
        if not ports:
            raise NmapError(ProbeErrorReason.TOOL_FAILED, f"unreadable nmap XML: {exc}") from exc
        finished_ok, error_message = False, f"nmap XML cut short: {exc}"
    return ServiceScan(ports, frozenset(timed_out), finished_ok, error_message)


def _port_info(address: str, port: Any) -> ServiceInfo | None:
    if not address or port.get("protocol", "tcp") != "tcp":
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
            banner=banner,
        )
    conf = service.get("conf")
    return ServiceInfo(
        address=address,
        port=int(port.get("portid", "0")),
        state=state.get("state", "unknown") if state is not None else "unknown",
        reason=state.get("reason", "") if state is not None else "",
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


def plan_jobs(targets: Sequence[Target], sweep_ports: Iterable[int]) -> list[_Job]:
    """Group targets into nmap runs. Fragile systems: own run, declared ports only, no -sV. A system with its
    own max_concurrency in the inventory: own run (its cap holds for it alone). Others share runs."""
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
        if politeness.strict:
            jobs.append(_Job(hosts, set(ports), politeness, version_probes=True, keys=keys, systems=system))
            continue
        group = (politeness.timing, politeness.max_concurrency, politeness.timeout_s, ports)
        job = grouped.get(group)
        if job is None:
            job = grouped[group] = _Job(set(), set(ports), politeness, version_probes=True)
            jobs.append(job)
        job.hosts |= hosts
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
    FactSpec("service.nmap_xml_sha256", "str", "SHA-256 of the raw nmap XML the facts come from."),
    FactSpec("patch.product_id", "str", "Product id in the version data, or null if not recognised.", True),
    FactSpec("patch.product_name", "str", "Product name in the version data.", True),
    FactSpec("patch.version", "str", "Upstream version read from the fingerprint, e.g. '8.9p1'.", True),
    FactSpec("patch.matched_by", "str", "How the product was recognised: nmap_product, cpe or banner.", True),
    FactSpec("patch.source_text", "str", "The text the version was read from.", True),
    FactSpec(
        "patch.evidence",
        "str",
        "bare_upstream_banner, distribution_banner (suffix such as 'Ubuntu-3ubuntu0.6': fixes may be "
        "back-ported) or none.",
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
    FactSpec("patch.data_version", "str", "data_version of the version data used."),
    FactSpec("patch.data_as_of", "datetime", "Date the product's cycle data reflects.", True),
)
_SYSTEM_FACTS: tuple[FactSpec, ...] = (
    FactSpec(
        "exposure.swept_ports", "list[int]", "Ports swept on the system's hosts (declared ports only if fragile)."
    ),
    FactSpec("exposure.sweep_limited", "bool", "Fragile system: only declared ports were probed."),
    FactSpec("exposure.declared_ports", "list[int]", "Ports of the system's declared endpoints."),
    FactSpec("exposure.open", "list[object]", "Open ports found: {address, port, service, product}."),
    FactSpec("exposure.unexpected", "list[object]", "Open ports not declared: {address, port, service, product}."),
    FactSpec("exposure.unexpected_ports", "list[int]", "Port numbers of exposure.unexpected."),
    FactSpec("software.declared", "list[object]", "The system's `software:` entries with their lifecycle data."),
    FactSpec("versiondata.data_version", "str", "data_version of the version data used."),
    FactSpec("versiondata.generated", "datetime", "When the version data was compiled."),
    FactSpec("versiondata.max_age_days", "int", "Configured maximum age of the version data."),
    FactSpec("service.nmap_xml_sha256", "str", "SHA-256 of the raw nmap XML the facts come from."),
)


def endpoint_facts(
    info: ServiceInfo, data: VersionData, run: NmapRun, version_probed: bool, declared: Mapping[str, Any]
) -> dict[str, JSONValue]:
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
    # A port-number guess ("table") is not a fingerprint: nothing was read from the service.
    probed = info.method == "probed"
    ident = identify_service(
        data,
        product=info.product if probed else None,
        version=info.version if probed else None,
        extrainfo=info.extrainfo if probed else None,
        cpes=info.cpes if probed else (),
        banner=info.banner,
    )
    facts.update(identification_facts(ident, data))
    facts["patch.declared_package"] = None
    if ident.product is not None:
        for item in (declared.get("system") or {}).get("software") or []:
            found = data.product_by_name(str(item.get("product", "")))
            if found is not None and found.id == ident.product.id:
                facts["patch.declared_package"] = dict(item)
    return facts


def system_facts(
    target: Target,
    scan: ServiceScan | None,
    swept: Sequence[int],
    limited: bool,
    settings: ServiceSettings,
    run: NmapRun | None,
) -> dict[str, JSONValue]:
    declared = sorted(declared_ports(target))
    hosts = system_hosts(target)
    open_ports: list[dict[str, JSONValue]] = []
    if scan is not None:
        for (address, port), info in sorted(scan.ports.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            if address in hosts and info.state == "open" and (port in swept or port in declared):
                open_ports.append({"address": address, "port": port, "service": info.name, "product": info.product})
    unexpected = [o for o in open_ports if o["port"] not in declared]
    software = (target.declared.get("system") or {}).get("software") or []
    data = settings.version_data
    return {
        "exposure.swept_ports": list(swept),
        "exposure.sweep_limited": limited,
        "exposure.declared_ports": declared,
        "exposure.open": open_ports,
        "exposure.unexpected": unexpected,
        "exposure.unexpected_ports": sorted({int(str(o["port"])) for o in unexpected}),
        "software.declared": [assess_declared(data, dict(item)) for item in software],
        "versiondata.data_version": data.file.data_version,
        "versiondata.generated": data.file.generated.isoformat(),
        "versiondata.max_age_days": settings.max_data_age_days,
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

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        results: dict[str, ProbeOutcome] = {}
        for t in targets:
            if t.protocol != SYSTEM_LEVEL and not is_ip(t.address):
                results[t.key] = ProbeError(ProbeErrorReason.UNREACHABLE, f"no address for {t.key}")
        todo = [t for t in targets if t.key not in results]
        by_key = {t.key: t for t in todo}
        jobs = plan_jobs(todo, self.settings.sweep_ports)
        self.runs = []
        with ThreadPoolExecutor(max_workers=NMAP_MAX_PROCESSES, thread_name_prefix="hcscan-service") as pool:
            futures = [(job, pool.submit(self._run_job, job, ctx)) for job in jobs]
            for job, future in futures:
                try:
                    run, scan = future.result()
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
                self.runs.append(run)
                swept = sorted(job.ports)
                for key in job.keys:
                    results[key] = self._outcome(by_key[key], job, run, scan, swept)
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

    def _run_job(self, job: _Job, ctx: ProbeContext) -> tuple[NmapRun, ServiceScan]:
        extra: list[str] = []
        if job.version_probes:
            extra = ["-sV", "--version-intensity", str(self.settings.version_intensity)]
        run = run_nmap(
            sorted(job.hosts),
            sorted(job.ports),
            politeness=job.politeness,
            extra=extra,
            timeout_s=max(30.0, job.politeness.timeout_s * 6),
            nmap_path=ctx.nmap_path,
            systems=max(1, len(job.systems)),
        )
        return run, parse_service_xml(run.xml)

    def _outcome(self, target: Target, job: _Job, run: NmapRun, scan: ServiceScan, swept: list[int]) -> ProbeOutcome:
        hosts = system_hosts(target) if target.protocol == SYSTEM_LEVEL else {target.address}
        timed_out = sorted(hosts & set(scan.hosts_timed_out))
        if timed_out:
            return ProbeError(ProbeErrorReason.TIMEOUT, f"nmap gave up on {', '.join(timed_out)} (host timeout)")
        if target.protocol == SYSTEM_LEVEL:
            if not scan.finished_ok:
                return ProbeError(ProbeErrorReason.TOOL_FAILED, scan.error_message or "nmap did not finish")
            # nmap runs with -Pn: a host that is down shows every port "filtered" and would look clean. Only a
            # host that answered on some port (open, or closed with a reset) has had its ports ruled out.
            silent = sorted(h for h in hosts if not host_answered(scan, h))
            if silent:
                return ProbeError(
                    ProbeErrorReason.UNREACHABLE,
                    f"no port of {', '.join(silent)} answered (all filtered or silent): undeclared ports cannot be "
                    "ruled out",
                )
            facts = system_facts(target, scan, swept, not job.version_probes, self.settings, run)
            return ProbeFacts(facts)
        info = scan.ports.get((target.address, target.port))
        if info is None:
            detail = scan.error_message or "port missing from nmap output"
            return ProbeError(ProbeErrorReason.TOOL_FAILED, detail)
        if info.state == "closed":
            return ProbeError(ProbeErrorReason.REFUSED, f"port {target.port} is closed ({info.reason})")
        if info.state != "open":
            return ProbeError(ProbeErrorReason.TIMEOUT, f"port {target.port} is {info.state} ({info.reason})")
        return ProbeFacts(endpoint_facts(info, self.settings.version_data, run, job.version_probes, target.declared))


def host_answered(scan: ServiceScan, address: str) -> bool:
    """Did the host answer on any port (open, or closed with a reset)? With -Pn a dead host is all 'filtered'."""
    return any(a == address and info.state in ("open", "closed") for (a, _port), info in scan.ports.items())


def default_settings() -> ServiceSettings:
    """Settings from the shipped version data and default sweep (for `make_probes()` without a config)."""
    from scanner.exposure_config import DEFAULT_SWEEP_PORTS
    from scanner.versiondata import load_version_data

    return ServiceSettings(load_version_data(), DEFAULT_SWEEP_PORTS)

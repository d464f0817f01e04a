"""The declared inventory: regions → systems → endpoints. Only what is declared here is ever scanned."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from scanner.availability import SystemAvailability
from scanner.config import Config, IPNetwork, Strict
from scanner.errors import InputError, Problem
from scanner.models import Criticality, EndpointProtocol
from scanner.probes.logbackends.spec import AuditLogSpec, network_hosts
from scanner.yamlio import LoadedYaml, load_yaml, validate_model, yaml_files

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
Id = Annotated[str, Field(pattern=ID_PATTERN, description="lower-case letters, digits, '.', '_' and '-'")]
_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$")

TLS_PROTOCOLS = frozenset(
    {
        EndpointProtocol.HTTPS,
        EndpointProtocol.TLS,
        EndpointProtocol.FHIR,
        EndpointProtocol.DICOM_TLS,
        EndpointProtocol.MLLP_TLS,
        EndpointProtocol.SYSLOG_TLS,
        EndpointProtocol.LDAPS,
    }
)


PATH_PROTOCOLS = frozenset({EndpointProtocol.FHIR})  # endpoints whose probes ask for URLs under a base path
_PATH_CHARS = re.compile(r"^/(?:[A-Za-z0-9._~!$&'()*+,;=:@/-]|%[0-9A-Fa-f]{2})*$")  # RFC 3986 path characters
_ENCODED_SEPARATOR = re.compile(r"%(?:2f|5c)", re.IGNORECASE)  # '/' or '\' that a server may decode into a separator


def check_base_path(value: str) -> str:
    """A URL path the endpoint's API lives under: '/', '/fhir', '/baseR4' (a trailing '/' is dropped).

    No query or fragment, no '.' or '..' segments (also percent-encoded), no empty segments, no ';' (path
    parameters: Tomcat and others read '/..;/' as '/../'), no percent-encoded '/' or '\\' (%2f, %5c: some
    servers decode them into separators), no '%3b' or '%00' and no '%25' (double encoding would hide those): the
    probe appends '/metadata' and '/<Resource>?...' to it and must stay under the declared base.
    """
    if "?" in value or "#" in value:
        raise ValueError(f"'{value}' has a query or fragment: declare only the base path, e.g. /fhir")
    if not _PATH_CHARS.match(value):
        raise ValueError(f"'{value}' is not a URL path: it must start with '/' and use URL path characters only")
    if ";" in value:
        raise ValueError(
            f"'{value}' has a ';' (a path parameter: Tomcat and others read '..;' as '..'): declare only the base path"
        )
    if _ENCODED_SEPARATOR.search(value):
        raise ValueError(f"'{value}' has a percent-encoded '/' or '\\' (%2F, %5C): write the base path with plain '/'")
    if re.search(r"%(?:3b|00)", value, re.IGNORECASE):
        raise ValueError(
            f"'{value}' has a percent-encoded ';' or NUL (%3B, %00: a decoding proxy turns '..%3b' into '..;'): "
            "declare only the base path"
        )
    if "%25" in value:
        raise ValueError(
            f"'{value}' has a percent-encoded '%' (%25: double encoding, e.g. %252F that a server or proxy decodes "
            "twice): write the base path as the server's own path"
        )
    trimmed = value.rstrip("/") or "/"
    segments = trimmed.split("/")[1:]
    decoded = [s.lower().replace("%2e", ".") for s in segments]
    if trimmed != "/" and ("" in segments or any(s in (".", "..") for s in decoded)):
        raise ValueError(f"'{value}' has an empty, '.' or '..' segment: declare the base path itself, e.g. /fhir")
    return trimmed


def _check_host(value: str) -> str:
    """An IP address or an RFC 1123 hostname; nothing that could be read as an option or a range."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        pass
    else:
        raise ValueError("a network range is not a target; declare each host (hcscan never expands ranges)")
    if not _HOSTNAME.match(value):
        raise ValueError(f"'{value}' is neither an IP address nor a valid hostname")
    return value.lower().rstrip(".")


class Endpoint(Strict):
    id: Id | None = Field(None, description="Defaults to '<protocol>-<port>'.")
    host: str = Field(description="IP address or DNS name of the endpoint.")
    port: int = Field(ge=1, le=65535)
    protocol: EndpointProtocol
    server_name: str | None = Field(None, description="Hostname for SNI and certificate matching.")
    path: str | None = Field(
        None,
        max_length=200,
        description="Base path of the API, for fhir endpoints whose FHIR base is not '/' (e.g. /fhir, /baseR4): "
        "the FHIR probe asks for <path>/metadata and searches under it, the availability sample for <path>/metadata.",
    )
    tags: list[str] = Field(default_factory=list)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _check_host(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else check_base_path(value)

    @model_validator(mode="after")
    def _path_protocol(self) -> Endpoint:
        if self.path is not None and self.protocol not in PATH_PROTOCOLS:
            raise ValueError(
                f"path is the base of a FHIR API: only {sorted(p.value for p in PATH_PROTOCOLS)} endpoints take one"
            )
        return self

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, value: str | None) -> str | None:
        if value is not None and not _HOSTNAME.match(value):
            raise ValueError(f"'{value}' is not a valid hostname")
        return value.lower().rstrip(".") if value else value

    @property
    def key_id(self) -> str:
        return self.id or f"{self.protocol.value}-{self.port}"


class SystemPoliteness(Strict):
    timing: int | None = Field(None, ge=0, le=5)
    max_concurrency: int | None = Field(None, ge=1, le=64)
    timeout_s: float | None = Field(None, gt=0, le=300)


class DeclaredSoftware(Strict):
    """Software the network cannot see (clinical applications, appliances, the OS): judged by PAT-03."""

    product: str = Field(min_length=1, description="Product name or id in the version data (`hcscan data info`).")
    version: str | None = Field(
        None,
        min_length=1,
        description=(
            "Upstream version or release, e.g. '9.6p1', '2019', '12'. Leave it out only for a product whose version "
            "hcscan reads from its documented version endpoint (`hcscan data info`), e.g. Mirth Connect."
        ),
    )
    package_version: str | None = Field(None, description="Installed distribution package, e.g. '1:8.9p1-3ubuntu0.10'.")
    updated: dt.date | None = Field(None, description="When the package was last updated (YYYY-MM-DD).")
    eol: dt.date | None = Field(None, description="Vendor end of support, for products not in the version data.")
    latest: str | None = Field(None, description="Vendor's newest release of this line, for products not in the data.")
    latest_date: dt.date | None = Field(None, description="Release date of `latest`.")

    @field_validator("version", "product", mode="before")
    @classmethod
    def _text(cls, value: object) -> object:
        return str(value) if isinstance(value, int | float) else value

    @model_validator(mode="after")
    def _versionless(self) -> DeclaredSoftware:
        if self.version is None:
            given = [f for f in ("package_version", "updated", "eol", "latest", "latest_date") if getattr(self, f)]
            if given:
                raise ValueError(
                    f"software '{self.product}': {', '.join(given)} needs a version; add version: <release>"
                )
        return self


class System(Strict):
    id: Id
    name: str = Field(min_length=1)
    owner: str = Field(min_length=1, description="Who answers for the system (team or person).")
    criticality: Criticality
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    fragile: bool = Field(False, description="Medical device or other fragile target: light probes only.")
    politeness: SystemPoliteness | None = None
    availability: SystemAvailability | None = Field(
        None, description="SLA override, latency budget, maintenance windows, instances and how to sample endpoints."
    )
    endpoints: list[Endpoint] = Field(min_length=1)
    software: list[DeclaredSoftware] = Field(default_factory=list, description="Declared software (PAT-03).")
    audit_log: AuditLogSpec | None = Field(
        None, description="Where the system's access log lands (LOG-01..04): syslog-files, fhir-auditevent, http-json."
    )

    @model_validator(mode="after")
    def _unique_endpoints(self) -> System:
        seen: set[str] = set()
        for ep in self.endpoints:
            if ep.key_id in seen:
                raise ValueError(f"duplicate endpoint id '{ep.key_id}' in system '{self.id}'")
            seen.add(ep.key_id)
        return self

    @model_validator(mode="after")
    def _availability_endpoints(self) -> System:
        if self.availability is not None:
            self.availability.check_endpoints({ep.key_id for ep in self.endpoints})
        return self


class Region(Strict):
    id: Id
    name: str = Field(min_length=1)


class InventoryFile(Strict):
    """One inventory file: one region and its systems."""

    region: Region
    systems: list[System] = Field(default_factory=list)


@dataclass(frozen=True)
class EndpointRef:
    """A declared endpoint with its system and region, as the planner sees it."""

    region: Region
    system: System
    endpoint: Endpoint

    @property
    def key(self) -> str:
        return f"{self.system.id}/{self.endpoint.key_id}"


@dataclass(frozen=True)
class Inventory:
    regions: dict[str, Region]
    systems: dict[str, tuple[Region, System]]
    files: tuple[Path, ...]
    digest: str  # sha256 over the files' bytes, recorded with every run
    locations: dict[str, tuple[Path, int | None]]  # endpoint key → (file, line of its host), for messages

    def endpoints(self) -> Iterator[EndpointRef]:
        for region, system in self.systems.values():
            for ep in system.endpoints:
                yield EndpointRef(region, system, ep)


def load_inventory(paths: Iterable[Path], *, skip_names: Iterable[str] = ("waivers.yaml",)) -> Inventory:
    """Load every inventory file; collect all problems (duplicates across files too) before raising."""
    problems: list[Problem] = []
    regions: dict[str, Region] = {}
    systems: dict[str, tuple[Region, System]] = {}
    where: dict[str, tuple[LoadedYaml, tuple[str | int, ...]]] = {}
    locations: dict[str, tuple[Path, int | None]] = {}
    digest = hashlib.sha256()
    files = [f for f in yaml_files(paths, "inventory") if f.name not in set(skip_names)]
    for file in files:
        try:
            loaded = load_yaml(file)
            digest.update(file.read_bytes())
            inv = validate_model(InventoryFile, loaded)
        except InputError as exc:
            problems.extend(exc.problems)
            continue
        if inv.region.id in regions:
            problems.append(
                loaded.problem(("region", "id"), f"duplicate region id '{inv.region.id}'", "one file per region")
            )
        regions[inv.region.id] = inv.region
        for i, system in enumerate(inv.systems):
            if system.id in systems:
                first, first_path = where[system.id]
                line, _ = first.where(first_path)
                problems.append(
                    loaded.problem(
                        ("systems", i, "id"),
                        f"duplicate system id '{system.id}' (first declared in {first.file}:{line})",
                        "system ids must be unique across the whole inventory",
                    )
                )
                continue
            systems[system.id] = (inv.region, system)
            where[system.id] = (loaded, ("systems", i, "id"))
            for j, ep in enumerate(system.endpoints):
                line, _ = loaded.where(("systems", i, "endpoints", j, "host"))
                locations[f"{system.id}/{ep.key_id}"] = (file, line)
            if system.audit_log is not None:
                line, _ = loaded.where(("systems", i, "audit_log"))
                locations[f"{system.id}#audit_log"] = (file, line)
    if not files and not problems:
        problems.append(Problem(None, None, None, "the inventory is empty: no YAML files found", "check `inventory:`"))
    if problems:
        raise InputError(problems)
    return Inventory(regions, systems, tuple(files), digest.hexdigest(), locations)


@dataclass(frozen=True)
class ScopedTargets:
    """Endpoint key → address for targets in scope; names that did not resolve become `error` findings."""

    addresses: dict[str, str]
    unresolved: dict[str, str]  # endpoint key → reason


def check_scope(inventory: Inventory, allowed: list[IPNetwork]) -> ScopedTargets:
    """Resolve each endpoint host and refuse any address outside the allowed networks.

    Raises InputError (nothing is scanned, nothing stored) if any declared target is out of scope.
    A name that does not resolve is not the user's input error: it is reported as could-not-assess.
    """
    problems: list[Problem] = []
    addresses: dict[str, str] = {}
    unresolved: dict[str, str] = {}
    for ref in inventory.endpoints():
        host = ref.endpoint.host
        file, line = inventory.locations.get(ref.key, (None, None))
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            except (socket.gaierror, UnicodeError) as exc:
                unresolved[ref.key] = f"host name '{host}' does not resolve ({exc})"
                continue
            found = sorted({ipaddress.ip_address(str(info[4][0])) for info in infos}, key=str)
            outside = [a for a in found if not any(a in net for net in allowed)]
            addr = outside[0] if outside else found[0]
        if not any(addr in net for net in allowed):
            problems.append(
                Problem(
                    file,
                    line,
                    None,
                    f"{ref.key}: target {host} ({addr}) is outside the allowed networks "
                    f"({', '.join(str(n) for n in allowed) or 'none configured'})",
                    "add its network to scope.allowed_networks in config.yaml if it really is yours to scan",
                )
            )
            continue
        addresses[ref.key] = str(addr)
    problems.extend(_audit_log_scope_problems(inventory, allowed))
    if problems:
        raise InputError(problems)
    return ScopedTargets(addresses, unresolved)


def _audit_log_scope_problems(inventory: Inventory, allowed: list[IPNetwork]) -> list[Problem]:
    """Log backends and collectors are connected to as well: each must resolve inside the allowed networks.

    A name that does not resolve is left to the probe (its connection fails: `error` findings), as for endpoints.
    """
    problems: list[Problem] = []
    for _, system in inventory.systems.values():
        if system.audit_log is None:
            continue
        file, line = inventory.locations.get(f"{system.id}#audit_log", (None, None))
        for what, host in network_hosts(system.audit_log):
            try:
                found = [ipaddress.ip_address(host)]
            except ValueError:
                try:
                    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
                except (socket.gaierror, UnicodeError):
                    continue
                found = sorted({ipaddress.ip_address(str(info[4][0])) for info in infos}, key=str)
            outside = [a for a in found if not any(a in net for net in allowed)]
            if outside:
                problems.append(
                    Problem(
                        file,
                        line,
                        None,
                        f"{system.id}: {what} {host} ({outside[0]}) is outside the allowed networks "
                        f"({', '.join(str(n) for n in allowed) or 'none configured'})",
                        "log backends are scanned like endpoints: add the network to scope.allowed_networks if it is yours",
                    )
                )
    return problems


def inventory_paths(config: Config) -> list[Path]:
    return [config.resolve(p) for p in config.inventory]

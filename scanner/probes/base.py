"""The probe interface: what a probe is given, what it returns, and how it documents its facts.

A probe gathers facts (I/O only) about many targets at once, so it can batch work (one nmap run for
a group of endpoints) and honour per-system politeness. It never judges: checks do that.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol

JSONValue = Any  # facts are JSON-serialisable: str, int, float, bool, None, lists and dicts of those


class ProbeErrorReason(StrEnum):
    """Why a probe could not gather facts. Every reason makes the dependent checks `error`."""

    REFUSED = "refused"  # TCP connection refused: nothing listens
    UNREACHABLE = "unreachable"  # no route / host down / name does not resolve
    TIMEOUT = "timeout"  # target did not answer within the probe's time limit
    PROTOCOL = "protocol"  # target answered, but not in a way the probe could interpret
    FILE = "file"  # a declared local file (a collector's log) is missing, not a regular file, unreadable or corrupt
    TOOL_MISSING = "tool_missing"  # a required external tool (nmap) is not installed
    TOOL_FAILED = "tool_failed"  # the external tool failed or produced unreadable output
    INTERNAL = "internal"  # a bug in hcscan; the traceback is in the detail


@dataclass(frozen=True)
class ProbeError:
    """A typed 'could not gather facts': becomes an `error` finding, never a pass."""

    reason: ProbeErrorReason
    detail: str

    def message(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True)
class ProbeFacts:
    """Facts about one target: a flat mapping of documented dotted names (``tls.protocols``) to JSON values."""

    facts: Mapping[str, JSONValue]


ProbeOutcome = ProbeFacts | ProbeError


@dataclass(frozen=True)
class Politeness:
    """How gently a system must be probed. `fragile` systems (medical devices) get light probes only."""

    timing: int = 3  # nmap timing template 0..5
    max_concurrency: int = 4  # simultaneous connections to one system
    timeout_s: float = 10.0  # per-connection timeout
    fragile: bool = False
    # The inventory sets this system's own politeness.max_concurrency: an explicit limit that must hold for the
    # system itself, so its nmap runs are its own (never shared with other systems). Fragile systems too.
    own_concurrency: bool = False
    # Fragile systems only: nmap ssl-enum-ciphers may run (politeness.fragile_cipher_enumeration). When false the
    # TLS probe makes just its one handshake and the protocol/cipher facts are withheld.
    cipher_enumeration: bool = True

    @property
    def strict(self) -> bool:
        """Its concurrency cap must hold for this one system: it gets nmap runs of its own."""
        return self.fragile or self.own_concurrency


@dataclass(frozen=True)
class Target:
    """One declared endpoint, already validated and scope-checked. Probes only ever see these."""

    key: str  # stable endpoint key: "<system_id>/<endpoint_id>"
    system_id: str
    address: str  # an IP address inside the allowed networks (resolved before probing)
    port: int
    protocol: str  # https, tls, http, ssh, dicom, dicom-tls, mllp, fhir, syslog-tls, ...
    server_name: str | None = None  # hostname to send as SNI and to verify the certificate against
    politeness: Politeness = field(default_factory=Politeness)
    # What the inventory declares about the system and endpoint (JSON data, no secrets), for probes that
    # need it: {"system": {...}, "endpoint": {...} | None, "endpoints": [...]}.
    declared: Mapping[str, JSONValue] = field(default_factory=dict)


SYSTEM_LEVEL = "system"  # Target.protocol of a system-level target (one per system, not per endpoint)


@dataclass(frozen=True)
class TrustSettings:
    """Where trusted root certificates come from: the system store and/or extra PEM bundles."""

    use_system_store: bool = True
    ca_bundles: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ProbeContext:
    """Run-wide settings a probe may need. No network configuration other than this reaches a probe."""

    trust: TrustSettings = field(default_factory=TrustSettings)
    max_workers: int = 16  # threads for per-endpoint work across all systems
    nmap_path: str | None = None  # None: find nmap on PATH
    # scope.allowed_networks, for probes that must resolve a declared name themselves (log backends): an
    # address outside them is never connected to. The app always sets it; empty means "not given".
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


def is_ip(text: str) -> bool:
    """Whether `text` is an IP address (not a name)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class OutOfScope(ValueError):
    """A declared name now resolves outside the allowed networks (DNS changed since validation)."""


def resolve_in_scope(host: str, ctx: ProbeContext) -> str:
    """The address to connect to for `host`: every address it resolves to must be in scope, else OutOfScope."""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        addresses = sorted({ipaddress.ip_address(str(info[4][0])) for info in infos}, key=str)
    if ctx.allowed_networks:
        outside = [a for a in addresses if not any(a in net for net in ctx.allowed_networks)]
        if outside:
            raise OutOfScope(f"{host} resolves to {outside[0]}, outside the allowed networks: not connecting")
    return str(addresses[0])


@dataclass(frozen=True)
class FactSpec:
    """Documentation of one fact a probe produces, so control authors know what an assert may use."""

    name: str
    type: str  # "bool", "int", "float", "str", "datetime", "list[str]", "list[object]", "object"
    description: str
    nullable: bool = False
    # A reading that moves from scan to scan on a steady target (clock skew, latency, uptime, a timestamp, the
    # hash of a raw nmap XML). It is never part of a verdict's digest: only the verdict's comparison of it against
    # the policy is, and the latest reading is kept as evidence of the latest verification (finding_state).
    volatile: bool = False


class Probe(Protocol):
    """A probe kind. `gather` must return an outcome for every target it was given."""

    kind: ClassVar[str]
    facts: ClassVar[Sequence[FactSpec]]
    protocols: ClassVar[frozenset[str]]  # endpoint protocols this probe can look at

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        """Gather facts for each target; key of the result is Target.key."""
        ...


def system_hosts(target: Target) -> set[str]:
    """Every address a target stands for: a system-level target covers all the system's in-scope addresses."""
    declared = target.declared.get("addresses") or []
    hosts = {str(a) for a in declared} if isinstance(declared, list) else set()
    return hosts | ({target.address} if target.address else set())


def declared_ports(target: Target) -> set[int]:
    """The ports of every endpoint the target's system declares."""
    endpoints = target.declared.get("endpoints") or []
    return {int(e["port"]) for e in endpoints if isinstance(e, dict) and isinstance(e.get("port"), int)}

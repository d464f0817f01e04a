"""Domain results handed from the engine to the store: plain frozen dataclasses, no ORM rows."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from scanner.models import Status


def fingerprint(control_id: str, system_id: str, endpoint_key: str) -> str:
    """Stable identity of a finding across runs: control + system + endpoint."""
    return hashlib.sha256(f"{control_id}\x00{system_id}\x00{endpoint_key}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class FindingRecord:
    control_id: str
    family: str
    severity: str
    region_id: str
    system_id: str
    endpoint_key: str
    criticality: str
    status: Status
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    # What the verdict depends on besides status and evidence: how each of its comparisons came out (Verdict.outcome)
    outcome: tuple[str, ...] = ()
    # Evidence keys that are volatile readings (FactSpec.volatile): kept, but not part of the verdict's digest
    volatile: tuple[str, ...] = ()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.control_id, self.system_id, self.endpoint_key)


@dataclass(frozen=True)
class ControlInfo:
    control_id: str
    title: str
    family: str
    severity: str
    rationale: str
    remediation: str
    references: dict[str, list[str]]


@dataclass(frozen=True)
class SystemInfo:
    system_id: str
    region_id: str
    region_name: str
    name: str
    owner: str
    criticality: str
    fragile: bool


@dataclass(frozen=True)
class RunMeta:
    """What a run is judged by: recorded so any report can be reproduced and audited."""

    tool_version: str
    catalog_digest: str
    inventory_digest: str
    config_digest: str
    selection: dict[str, Any]
    regions: list[str]
    host: str
    pid: int
    agent_id: str = ""
    controls: tuple[ControlInfo, ...] = ()
    systems: tuple[SystemInfo, ...] = ()


@dataclass(frozen=True)
class RunSummary:
    run_id: int
    status: str
    counts: dict[str, int]
    changes: dict[str, int]

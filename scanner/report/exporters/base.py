"""The exporter interface and the one row shape every format starts from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from scanner.store import queries
from scanner.store.queries import ControlView, FindingView

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ExportInput:
    findings: list[FindingView]
    controls: dict[str, ControlView]
    generated_at: datetime
    tool_version: str

    @classmethod
    def from_store(
        cls, engine: Engine, generated_at: datetime, tool_version: str, region: str | None = None
    ) -> ExportInput:
        findings = queries.latest_findings(engine, region)
        runs = queries.runs(engine, ids=sorted({f.run_id for f in findings}))
        return cls(findings, queries.control_defs(engine, {r.catalog_digest for r in runs}), generated_at, tool_version)


def finding_row(f: FindingView, controls: dict[str, ControlView]) -> dict[str, Any]:
    """One finding as documented in docs/export.md (JSON and CSV share these fields)."""
    c = controls.get(f.control_id)
    return {
        "fingerprint": f.fingerprint,
        "status": f.status,
        "control_id": f.control_id,
        "title": c.title if c else "",
        "family": f.family,
        "severity": f.severity,
        "region": f.region_id,
        "system": f.system_id,
        "endpoint": f.endpoint_key,
        "criticality": f.criticality,
        "message": f.message,
        "remediation": c.remediation if c else "",
        "first_seen": f.first_seen_at.isoformat() if f.first_seen_at else None,
        "last_verified": f.last_verified_at.isoformat(),
        "change": f.change,
        "run_id": f.run_id,
    }


class Exporter(ABC):
    """Turns the latest findings into one document of its format."""

    media_type: str = "text/plain"

    @abstractmethod
    def export(self, data: ExportInput) -> str: ...

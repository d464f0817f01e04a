"""JSON export: {"schema_version", "generated_at", "tool_version", "findings": [...]} — see docs/export.md."""

from __future__ import annotations

import json

from scanner.report.exporters.base import SCHEMA_VERSION, Exporter, ExportInput, finding_row


class JsonExporter(Exporter):
    media_type = "application/json"

    def export(self, data: ExportInput) -> str:
        findings = []
        for f in data.findings:
            row = finding_row(f, data.controls)
            row["evidence"] = f.evidence
            findings.append(row)
        doc = {
            "schema_version": SCHEMA_VERSION,
            "generated_at": data.generated_at.isoformat(),
            "tool_version": data.tool_version,
            "findings": findings,
        }
        return json.dumps(doc, indent=2, default=str, ensure_ascii=False) + "\n"

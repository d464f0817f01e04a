"""SARIF 2.1.0 export: failing and could-not-assess findings as results, controls as rules (code-scanning tools)."""

from __future__ import annotations

import json
from typing import Any

from scanner.report.exporters.base import Exporter, ExportInput

_LEVEL = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}
_SCORE = {"critical": "9.5", "high": "8.0", "medium": "5.0", "low": "2.0"}


class SarifExporter(Exporter):
    media_type = "application/sarif+json"

    def export(self, data: ExportInput) -> str:
        rule_ids = sorted({f.control_id for f in data.findings})
        index = {cid: i for i, cid in enumerate(rule_ids)}
        rules: list[dict[str, Any]] = []
        for cid in rule_ids:
            c = data.controls.get(cid)
            sev = c.severity if c else "medium"
            rules.append(
                {
                    "id": cid,
                    "name": cid.replace("-", ""),
                    "shortDescription": {"text": c.title if c else cid},
                    "fullDescription": {"text": c.rationale if c else cid},
                    "help": {"text": c.remediation if c else ""},
                    "defaultConfiguration": {"level": _LEVEL.get(sev, "warning")},
                    "properties": {"security-severity": _SCORE.get(sev, "5.0"), "tags": ["security", "compliance"]},
                }
            )
        results: list[dict[str, Any]] = []
        for f in data.findings:
            if f.status not in ("fail", "error", "waived"):
                continue
            result: dict[str, Any] = {
                "ruleId": f.control_id,
                "ruleIndex": index[f.control_id],
                "level": "warning" if f.status == "error" else _LEVEL.get(f.severity, "warning"),
                "message": {"text": ("could not assess: " if f.status == "error" else "") + f.message},
                "locations": [
                    {
                        "physicalLocation": {"artifactLocation": {"uri": f"hcscan://{f.region_id}/{f.endpoint_key}"}},
                        "logicalLocations": [{"name": f.endpoint_key, "kind": "resource"}],
                    }
                ],
                "partialFingerprints": {"hcscan/v1": f.fingerprint},
                "properties": {"status": f.status, "system": f.system_id, "criticality": f.criticality},
            }
            if f.status == "waived":
                result["suppressions"] = [{"kind": "external", "justification": f.message}]
            results.append(result)
        doc = {
            "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
            "version": "2.1.0",
            "runs": [
                {
                    "tool": {
                        "driver": {
                            "name": "hcscan",
                            "version": data.tool_version,
                            "informationUri": "https://example.invalid/hcscan",
                            "rules": rules,
                        }
                    },
                    "results": results,
                }
            ],
        }
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

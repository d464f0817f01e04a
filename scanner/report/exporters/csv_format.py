"""CSV export: one row per finding, every field quoted (remediation text has commas, quotes and newlines)."""

from __future__ import annotations

import csv
import io

from scanner.report.exporters.base import Exporter, ExportInput, finding_row


class CsvExporter(Exporter):
    media_type = "text/csv"

    def export(self, data: ExportInput) -> str:
        buf = io.StringIO()
        rows = [finding_row(f, data.controls) for f in data.findings]
        fields = list(rows[0]) if rows else ["fingerprint", "status", "control_id"]
        writer = csv.DictWriter(buf, fieldnames=fields, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        writer.writeheader()
        for row in rows:
            # A cell starting with = + - @ is a formula to spreadsheets: target text must never run there.
            writer.writerow({k: defuse_formula("" if v is None else str(v)) for k, v in row.items()})
        return buf.getvalue()


def defuse_formula(value: str) -> str:
    """A cell a spreadsheet would run as a formula (= + - @, or a leading tab/CR) gets a leading quote."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value

"""Exports of the latest findings: one module per format behind one small interface (`Exporter`)."""

from __future__ import annotations

from enum import StrEnum

from scanner.report.exporters.base import Exporter, ExportInput
from scanner.report.exporters.csv_format import CsvExporter
from scanner.report.exporters.json_format import JsonExporter
from scanner.report.exporters.junit import JunitExporter
from scanner.report.exporters.sarif import SarifExporter


class ExportFormat(StrEnum):
    JSON = "json"
    CSV = "csv"
    SARIF = "sarif"
    JUNIT = "junit"


EXPORTERS: dict[ExportFormat, Exporter] = {
    ExportFormat.JSON: JsonExporter(),
    ExportFormat.CSV: CsvExporter(),
    ExportFormat.SARIF: SarifExporter(),
    ExportFormat.JUNIT: JunitExporter(),
}

__all__ = ["EXPORTERS", "ExportFormat", "ExportInput", "Exporter"]

"""Exports of the latest findings: JSON (documented shape), CSV (quoted), SARIF 2.1.0, JUnit XML."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import defusedxml.ElementTree as SafeET
import pytest
from sqlalchemy import Engine

from scanner.report.exporters import EXPORTERS, ExportFormat, ExportInput
from scanner.store.db import open_store
from tests.report.history import HOSTILE, NOW, REMEDIATION, build_history


@pytest.fixture
def data(tmp_path: Path) -> ExportInput:
    engine: Engine = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    build_history(engine)
    return ExportInput.from_store(engine, NOW, "0.1.0")


def test_json_has_every_latest_finding_with_evidence(data: ExportInput) -> None:
    doc = json.loads(EXPORTERS[ExportFormat.JSON].export(data))
    assert doc["schema_version"] == 1 and len(doc["findings"]) == 8
    epj = next(f for f in doc["findings"] if f["control_id"] == "TLS-04" and f["system"] == "epj")
    assert epj["evidence"]["tls.leaf.subject"] == HOSTILE and epj["remediation"] == REMEDIATION


def test_csv_quotes_commas_and_quotes(data: ExportInput) -> None:
    text = EXPORTERS[ExportFormat.CSV].export(data)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 8 and {r["remediation"] for r in rows} >= {REMEDIATION}
    assert text.splitlines()[0].startswith('"fingerprint","status"')


def test_sarif_lists_failures_errors_and_suppresses_waived(data: ExportInput) -> None:
    doc = json.loads(EXPORTERS[ExportFormat.SARIF].export(data))
    assert doc["version"] == "2.1.0"
    results = doc["runs"][0]["results"]
    rules = [r["id"] for r in doc["runs"][0]["tool"]["driver"]["rules"]]
    assert all(rules[r["ruleIndex"]] == r["ruleId"] for r in results)
    assert sum(1 for r in results if "suppressions" in r) == 1  # the active waiver
    assert len(results) == 6  # 4 fail + 1 error + 1 waived


def test_junit_counts_and_parses(data: ExportInput) -> None:
    root = SafeET.fromstring(EXPORTERS[ExportFormat.JUNIT].export(data).encode())
    assert root.get("tests") == "8" and root.get("failures") == "4" and root.get("errors") == "1"
    assert root.get("skipped") == "1"

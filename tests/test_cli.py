"""The hcscan command as a user runs it: exit codes, output formats, controls test, facts, schema, report."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from scanner.lab import Lab
from scanner.yamlio import load_yaml
from tests.helpers import make_workspace, system, write_yaml

REPO = Path(__file__).resolve().parents[1]


def hcscan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanner", *args], cwd=cwd, capture_output=True, text=True, timeout=180
    )


@pytest.mark.needs_nmap
def test_scan_exit_0_when_everything_passes_then_report(lab: Lab, tmp_path: Path) -> None:
    ep = lab.endpoints["good"]
    make_workspace(
        tmp_path, [system("epj", ep.address, ep.port, "https", ep.server_name)], ca_bundles=[str(lab.ca_bundle)]
    )
    result = hcscan("scan", "--config", "config.yaml", "--family", "tls", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 finding(s): 7 pass" in result.stdout
    report = hcscan("report", "--config", "config.yaml", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "reports" / "region-testregion.html").read_text()
    assert 'data-testid="score">100.0 %<' in html


@pytest.mark.needs_nmap
def test_scan_csv_is_quoted_and_selection_narrows(lab: Lab, tmp_path: Path) -> None:
    ep = lab.endpoints["legacy_protocols"]
    make_workspace(
        tmp_path, [system("lab", ep.address, ep.port, "https", ep.server_name)], ca_bundles=[str(lab.ca_bundle)]
    )
    result = hcscan("scan", "--config", "config.yaml", "--control", "TLS-01", "--format", "csv", cwd=tmp_path)
    assert result.returncode == 1
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["control"], r["status"]) for r in rows] == [("TLS-01", "fail")]
    assert "TLSv1.0, TLSv1.1" in rows[0]["message"]


def test_config_example_validates(tmp_path: Path) -> None:
    shutil.copy(REPO / "config.example.yaml", tmp_path / "config.yaml")
    shutil.copytree(REPO / "inventory", tmp_path / "inventory")
    result = hcscan("validate", "--config", "config.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "5 region(s)" in result.stdout


def test_controls_test_runs_shipped_cases(tmp_path: Path) -> None:
    make_workspace(tmp_path, [system("a", "127.0.0.1", 9)])
    result = hcscan("controls", "test", "--config", "config.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 failed")


def test_controls_test_reports_a_wrong_expectation(tmp_path: Path) -> None:
    make_workspace(tmp_path, [system("a", "127.0.0.1", 9)])
    cases = write_yaml(
        tmp_path / "cases.yaml",
        {
            "cases": [
                {
                    "control": "TLS-01",
                    "name": "wrong on purpose",
                    "facts": {"tls.offered": True, "tls.protocols": ["TLSv1.0"]},
                    "expect": "pass",
                }
            ]
        },
    )
    result = hcscan("controls", "test", "--config", "config.yaml", str(cases), cwd=tmp_path)
    assert result.returncode == 1
    assert "expected pass, got fail" in result.stdout
    bad = write_yaml(
        tmp_path / "bad.yaml",
        {"cases": [{"control": "TLS-01", "name": "x", "facts": {"tls.bogus": 1}, "expect": "pass"}]},
    )
    result = hcscan("controls", "test", "--config", "config.yaml", str(bad), cwd=tmp_path)
    assert result.returncode == 2 and "tls.bogus" in result.stderr


def test_controls_show_and_facts(tmp_path: Path) -> None:
    make_workspace(
        tmp_path, [system("a", "127.0.0.1", 9)], extra_config={"control_params": {"TLS-04": {"min_days_left": 45}}}
    )
    shown = json.loads(hcscan("controls", "show", "TLS-04", "--config", "config.yaml", cwd=tmp_path).stdout)
    assert shown["effective_params"] == {"min_days_left": 45}
    assert shown["references"]["iso27001"] == ["A.8.24"]
    facts = hcscan("facts", "--probe", "tls", cwd=tmp_path)
    assert facts.returncode == 0 and "tls.protocols" in facts.stdout and "tls.chain.trusted" in facts.stdout


def test_unknown_control_param_is_refused(tmp_path: Path) -> None:
    make_workspace(
        tmp_path, [system("a", "127.0.0.1", 9)], extra_config={"control_params": {"TLS-04": {"min_days": 45}}}
    )
    result = hcscan("validate", "--config", "config.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "unknown parameter(s) ['min_days']" in result.stderr


@pytest.mark.parametrize(
    ("kind", "files"),
    [
        ("inventory", ["inventory/hovedstaden.yaml", "inventory/nordjylland.yaml"]),
        ("controls", ["controls/tls.yaml"]),
        ("waivers", ["inventory/waivers.yaml"]),
        ("control-tests", ["controls/tests/tls.yaml"]),
        ("config", ["config.example.yaml"]),
    ],
)
def test_published_json_schemas_accept_shipped_files(kind: str, files: list[str], tmp_path: Path) -> None:
    schema = json.loads(hcscan("schema", kind, cwd=tmp_path).stdout)
    for name in files:
        data = load_yaml(REPO / name).data  # timestamps stay strings, as an editor sees them
        jsonschema.validate(data, schema)  # raises on mismatch
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"unexpected_top_level_key": 1}, schema)


@pytest.mark.parametrize("kind", ["config", "inventory", "controls", "waivers", "control-tests"])
def test_published_schema_files_are_current(kind: str, tmp_path: Path) -> None:
    """docs/schema/*.json is what editors point at; regenerate with `hcscan schema KIND > docs/schema/KIND.schema.json`."""
    current = json.loads(hcscan("schema", kind, cwd=tmp_path).stdout)
    assert json.loads((REPO / "docs" / "schema" / f"{kind}.schema.json").read_text()) == current

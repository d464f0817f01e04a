"""End to end against the live loopback lab: every TLS control gives the expected verdict on every case."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scanner.lab import Lab
from tests.helpers import make_workspace, system

pytestmark = [pytest.mark.needs_nmap, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab_scan(
    lab: Lab, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str], float]:
    root = tmp_path_factory.mktemp("labscan")
    systems = [
        system(name.replace("_", "-"), ep.address, ep.port, ep.protocol, ep.server_name)
        for name, ep in lab.endpoints.items()
    ]
    make_workspace(root, systems, ca_bundles=[str(lab.ca_bundle)])
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", "--config", "config.yaml", "--family", "tls", "--format", "json"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return root, result, time.monotonic() - started


def test_every_control_verdict_matches_the_lab_case(
    lab: Lab, lab_scan: tuple[Path, subprocess.CompletedProcess[str], float]
) -> None:
    _, result, _ = lab_scan
    assert result.returncode == 1, result.stderr  # the lab has failing cases, so the scan exits 1
    findings = json.loads(result.stdout)
    got = {(f["system"], f["control"]): f for f in findings}
    mismatches = []
    checked = 0
    for name, ep in lab.endpoints.items():
        for control_id, expected in ep.expect.items():
            finding = got.get((name.replace("_", "-"), control_id))
            assert finding is not None, f"no finding for {control_id} on {name}"
            checked += 1
            if finding["status"] != expected:
                mismatches.append(
                    f"{name} {control_id}: expected {expected}, got {finding['status']}: {finding['message']}"
                )
    assert not mismatches, "\n".join(mismatches)
    assert checked >= 20 * 7


def test_unreachable_and_hanging_are_errors_never_pass(
    lab_scan: tuple[Path, subprocess.CompletedProcess[str], float],
) -> None:
    _, result, _ = lab_scan
    findings = json.loads(result.stdout)
    for name in ("tarpit", "refused"):
        mine = [f for f in findings if f["system"] == name]
        assert mine and all(f["status"] == "error" for f in mine)
        assert all(f["message"].startswith("could not assess") for f in mine)


def test_findings_carry_evidence_and_messages(lab_scan: tuple[Path, subprocess.CompletedProcess[str], float]) -> None:
    _, result, _ = lab_scan
    findings = {(f["system"], f["control"]): f for f in json.loads(result.stdout)}
    legacy = findings[("legacy-protocols", "TLS-01")]
    assert "TLSv1.0" in legacy["message"] and "TLS 1.2" in legacy["message"]
    assert "TLSv1.0" in legacy["evidence"]["tls.protocols"]
    dh = findings[("dh1024", "TLS-02")]
    assert dh["evidence"]["tls.min_dh_bits"] == 1024
    chain = findings[("incomplete-chain", "TLS-03")]
    assert chain["evidence"]["tls.chain.error"] == "incomplete_chain"


def test_run_is_stored_complete_with_provenance(lab_scan: tuple[Path, subprocess.CompletedProcess[str], float]) -> None:
    root, result, _ = lab_scan
    findings = json.loads(result.stdout)
    db = sqlite3.connect(root / "hcscan.db")
    runs = db.execute(
        "select status, n_findings, catalog_digest, inventory_digest, tool_version from scan_run"
    ).fetchall()
    assert len(runs) == 1
    status, n, catalog, inventory, version = runs[0]
    assert status == "complete" and n == len(findings)
    assert len(catalog) == 64 and len(inventory) == 64 and version
    assert db.execute("select count(*) from finding").fetchone()[0] == len(findings)
    assert db.execute("pragma journal_mode").fetchone()[0] == "wal"


def test_a_private_root_makes_an_internal_chain_pass(lab: Lab, tmp_path: Path) -> None:
    """Without the region's CA in config the good chain is untrusted; with it, it passes."""
    ep = lab.endpoints["good"]
    for bundles, expected in (([], "fail"), ([str(lab.ca_bundle)], "pass")):
        root = tmp_path / ("with" if bundles else "without")
        make_workspace(root, [system("good", ep.address, ep.port, "https", ep.server_name)], ca_bundles=bundles)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "scanner",
                "scan",
                "--config",
                "config.yaml",
                "--control",
                "TLS-03",
                "--format",
                "json",
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
        )
        (finding,) = json.loads(result.stdout)
        assert finding["status"] == expected, finding

"""PAT and EXP controls end to end against the live service lab (banner, DICOM, MLLP and FHIR servers)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scanner.lab.services import ServiceLab
from tests.helpers import make_workspace

pytestmark = [pytest.mark.needs_nmap, pytest.mark.slow]


@pytest.fixture(scope="module")
def service_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceLab]:
    with ServiceLab(tmp_path_factory.mktemp("servicelab")) as lab:
        yield lab


def _system(name: str, ep: Any) -> dict[str, Any]:
    software = [
        {k: (dt.date.today().isoformat() if v == "today" else v) for k, v in item.items()} for item in ep.case.software
    ]
    endpoint: dict[str, Any] = {"id": "ep", "host": ep.address, "port": ep.port, "protocol": ep.protocol}
    if ep.protocol == "fhir":
        endpoint["server_name"] = ep.server_name
    if ep.case.fhir_base:
        endpoint["path"] = ep.case.fhir_base
    system: dict[str, Any] = {
        "id": name.replace("_", "-"),
        "name": ep.case.description or name,
        "owner": "Lab team",
        "criticality": "high",
        "endpoints": [endpoint],
    }
    if ep.case.dicom_declared_aet:
        system["availability"] = {"checks": {"ep": {"ae_title": ep.case.dicom_declared_aet}}}
    if software:
        system["software"] = software
    return system


@pytest.fixture(scope="module")
def lab_findings(
    service_lab: ServiceLab, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[tuple[str, str], dict[str, Any]], float]:
    root = tmp_path_factory.mktemp("servicescan")
    systems = [_system(name, ep) for name, ep in service_lab.cases.items()]
    sweep = sorted({p for ep in service_lab.cases.values() for p in ep.extra_ports} | {21, 23})
    make_workspace(
        root,
        systems,
        ca_bundles=[str(service_lab.ca_bundle)],
        extra_config={
            # Freshness of the shipped knowledge is judged with pinned days in tests/versiondata/test_banner_lab.py;
            # here a wide max_age_days keeps these live verdicts about recognising what the services show.
            "exposure": {"sweep_ports": sweep, "version_intensity": 2, "version_data": {"max_age_days": 3650}},
            "politeness": {"timeout_s": 5},
        },
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", "--config", "config.yaml", "--format", "json",
         "--family", "patching", "--family", "exposure", "--control", "PAT-01", "--control", "PAT-02",
         "--control", "PAT-03", "--control", "PAT-05", "--control", "PAT-06", "--control", "EXP-01",
         "--control", "EXP-02", "--control", "EXP-03", "--control", "EXP-04"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    findings = {(f["system"], f["control"]): f for f in json.loads(result.stdout)}
    # LOG-06 is in the logging family: judge it in a second, FHIR-only run.
    log = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", "--config", "config.yaml", "--format", "json", "--control", "LOG-06"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    findings.update({(f["system"], f["control"]): f for f in json.loads(log.stdout)})
    return findings, elapsed


def test_every_pat_and_exp_verdict_matches_the_lab_case(
    service_lab: ServiceLab, lab_findings: tuple[dict[tuple[str, str], dict[str, Any]], float]
) -> None:
    findings, _ = lab_findings
    mismatches = []
    checked = 0
    for name, ep in service_lab.cases.items():
        for control, expected in ep.case.expect.items():
            finding = findings.get((name.replace("_", "-"), control))
            assert finding is not None, f"no {control} finding for {name}"
            checked += 1
            if finding["status"] != expected:
                mismatches.append(
                    f"{name} {control}: expected {expected}, got {finding['status']}: {finding['message']}"
                    f" (evidence: {finding['evidence']})"
                )
    assert not mismatches, "\n".join(mismatches)
    assert checked >= 25


def test_distribution_banner_error_says_what_to_declare(
    lab_findings: tuple[dict[tuple[str, str], dict[str, Any]], float],
) -> None:
    findings, _ = lab_findings
    f = findings[("ssh-ubuntu", "PAT-02")]
    assert "patch level cannot be judged from a distribution banner; declare the package version" in f["message"]
    assert f["evidence"]["patch.evidence"] == "distribution_banner"
    assert f["evidence"]["patch.source_text"].startswith("8.9p1 Ubuntu")


def test_pat_findings_name_their_evidence(lab_findings: tuple[dict[tuple[str, str], dict[str, Any]], float]) -> None:
    findings, _ = lab_findings
    for (system, control), f in findings.items():
        if control in ("PAT-01", "PAT-02") and f["status"] in ("pass", "fail"):
            assert "banner via" in f["message"] and "data 20" in f["message"], (system, control, f["message"])
    eol = findings[("nginx-eol", "PAT-01")]
    assert "1.18" in eol["message"] and eol["evidence"]["patch.cycle_eol"] == "2021-04-20"
    assert findings[("ssh-debian9", "PAT-01")]["message"].startswith("debian 9 ended security support")


def test_unexpected_port_is_named(
    service_lab: ServiceLab, lab_findings: tuple[dict[tuple[str, str], dict[str, Any]], float]
) -> None:
    findings, _ = lab_findings
    f = findings[("ssh-ubuntu", "EXP-01")]
    assert f["evidence"]["exposure.unexpected_ports"] == [
        f"{p}/tcp" for p in service_lab.cases["ssh_ubuntu"].extra_ports
    ]


def test_unknown_product_is_never_a_silent_pass(
    lab_findings: tuple[dict[tuple[str, str], dict[str, Any]], float],
) -> None:
    findings, _ = lab_findings
    f = findings[("unknown-product", "PAT-01")]
    assert f["status"] == "error" and f["message"].startswith("could not assess: "), f
    assert "declare it under `software:` in the inventory" in f["message"], f


def test_fragile_system_gets_only_its_declared_port_and_no_version_probe(
    service_lab: ServiceLab, tmp_path: Path
) -> None:
    ep = service_lab.cases["ssh_ubuntu"]  # has an undeclared telnet port a sweep would find
    system = _system("ssh_ubuntu", ep) | {"fragile": True}
    make_workspace(
        tmp_path,
        [system],
        extra_config={"exposure": {"sweep_ports": list(ep.extra_ports)}, "politeness": {"timeout_s": 5}},
    )
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", "--config", "config.yaml", "--format", "json",
         "--control", "PAT-01", "--control", "EXP-01"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    findings = {f["control"]: f for f in json.loads(result.stdout)}
    # No version probe, so no version is visible: could not assess, with the hint to declare the software.
    assert findings["PAT-01"]["status"] == "error"
    assert "fragile" in findings["PAT-01"]["message"] and "`software:`" in findings["PAT-01"]["message"]
    assert findings["EXP-01"]["status"] == "not_applicable"


def test_exposure_findings_say_what_was_seen(lab_findings: tuple[dict[tuple[str, str], dict[str, Any]], float]) -> None:
    findings, _ = lab_findings
    nonstd = findings[("dicom-nonstd", "EXP-02")]
    assert nonstd["status"] == "fail" and "without TLS" in nonstd["message"]
    assert nonstd["evidence"]["dicom.aet_check_method"] == "nmap +dicom-ping (non-standard port)"
    assert nonstd["evidence"]["dicom.any_aet_accepted"] is True
    open_tls = findings[("dicom-tls-open", "EXP-02")]
    assert "accepts an association from an unknown calling AE title" in open_tls["message"]
    strict = findings[("dicom-tls-strict", "EXP-02")]
    assert strict["status"] == "pass" and "Calling AE title not recognised" in strict["message"]
    called_only = findings[("dicom-tls", "EXP-02")]  # checks only called AE titles, none declared: ANY-SCP rejected
    assert called_only["status"] == "error", called_only
    assert "Called AE title not recognised" in called_only["evidence"]["dicom.aet_check_detail"]
    assert "declare the node's right AE title" in called_only["evidence"]["dicom.aet_check_detail"]
    down = findings[("dicom-tls-down", "EXP-02")]
    assert down["status"] == "error" and down["message"].startswith("could not assess")
    assert "no A-ASSOCIATE answer" in down["evidence"]["dicom.aet_check_detail"]
    bad_base = findings[("fhir-bad-base", "EXP-04")]
    assert "base /fhir" in bad_base["message"] and "HTTP 200" in bad_base["message"]


def test_undeclared_fhir_base_is_a_fail_that_names_the_fix(service_lab: ServiceLab, tmp_path: Path) -> None:
    ep = service_lab.cases["fhir_good_base"]
    system = _system("fhir_good_base", ep)
    del system["endpoints"][0]["path"]  # the server lives under /fhir; the inventory does not say so
    make_workspace(tmp_path, [system], ca_bundles=[str(service_lab.ca_bundle)])
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", "--config", "config.yaml", "--format", "json", "--control", "EXP-04"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    (finding,) = json.loads(result.stdout)
    assert finding["status"] == "fail", finding
    assert "declared as the endpoint's path" in finding["message"] and "metadata HTTP 404" in finding["message"]

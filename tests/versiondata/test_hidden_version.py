"""One rule for a service whose product or version is not visible (issue 12.4).

`Server: Apache` without a version and a port that sends no `Server` header at all (Orthanc's REST port) are the
same evidence gap: PAT-01/02/05 are `error` (could not assess), say what was seen and ask for a `software:`
declaration — never `not_applicable`, which would quietly drop the endpoint from the score. Once the system
declares its software, PAT-03 judges the declaration and the endpoint controls step aside (`not_applicable`,
naming PAT-03). The facts are built by the service probe's own fact function from what nmap would report.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from scanner.catalog import builtin_controls_dir, load_catalog
from scanner.checks.verdict import judge
from scanner.models import Status
from scanner.probes.nmap import NmapRun
from scanner.probes.registry import fact_names
from scanner.probes.service import ServiceInfo, endpoint_facts
from scanner.versiondata import load_version_data
from scanner.versiondata.identify import assess_declared

DATA = load_version_data()
CATALOG = load_catalog([builtin_controls_dir() / "patching.yaml"], probe_facts=fact_names())
NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
RUN = NmapRun(xml="<nmaprun/>", xml_sha256="0" * 64, command=["nmap"], elapsed_s=0.1)
ENDPOINT_CONTROLS = ("PAT-01", "PAT-02", "PAT-05")
HINT = "declare it under `software:` in the inventory"

# What nmap -sV reports for the two real services of the issue.
APACHE_NO_VERSION = {"name": "http", "product": "Apache httpd", "banner": "Apache"}  # ServerTokens Prod
ORTHANC_REST = {"name": "http", "product": None, "banner": None}  # no Server header at all


def _facts(seen: dict[str, Any], software: list[dict[str, Any]] | None = None, probed: bool = True) -> dict[str, Any]:
    info = ServiceInfo(
        address="127.0.0.1",
        port=8042,
        state="open",
        reason="syn-ack",
        name=seen["name"],
        product=seen["product"],
        banner=seen["banner"],
        method="probed",
    )
    declared = {"system": {"software": software or []}}
    return dict(endpoint_facts(info, DATA, RUN, probed, declared))


def _verdicts(facts: dict[str, Any]) -> dict[str, tuple[Status, str]]:
    out: dict[str, tuple[Status, str]] = {}
    for control_id in ENDPOINT_CONTROLS:
        control = CATALOG.controls[control_id]
        verdict = judge(control.rule, facts, control.params, NOW)
        out[control_id] = (verdict.status, verdict.message)
    return out


@pytest.mark.parametrize(
    ("seen", "what"),
    [
        (APACHE_NO_VERSION, "Apache HTTP Server recognised, but it shows no version"),
        (ORTHANC_REST, "no product or version could be fingerprinted on this port"),
    ],
    ids=["server-apache-without-version", "no-server-header"],
)
def test_product_or_version_not_visible_is_could_not_assess(seen: dict[str, Any], what: str) -> None:
    for control_id, (status, message) in _verdicts(_facts(seen)).items():
        assert status is Status.ERROR, (control_id, message)
        assert message == f"could not assess: the product or version is not visible ({what}); {HINT}" + (
            " (product and version; PAT-03 then judges it)"
        ), (control_id, message)


def test_both_kinds_of_hidden_version_get_the_same_verdicts() -> None:
    apache, orthanc = _verdicts(_facts(APACHE_NO_VERSION)), _verdicts(_facts(ORTHANC_REST))
    assert {c: s for c, (s, _) in apache.items()} == {c: s for c, (s, _) in orthanc.items()}


def test_a_fragile_system_without_version_probes_follows_the_same_rule() -> None:
    facts = _facts(APACHE_NO_VERSION, probed=False)
    for control_id, (status, message) in _verdicts(facts).items():
        assert status is Status.ERROR, (control_id, message)
        assert "fragile system: no version probes are sent" in message and HINT in message


def test_declaring_the_hidden_product_hands_it_to_pat03() -> None:
    software = [{"product": "apache", "version": "2.4.62"}]
    facts = _facts(APACHE_NO_VERSION, software)
    assert facts["patch.declared_package"] == software[0]
    for control_id, (status, message) in _verdicts(facts).items():
        assert status is Status.NOT_APPLICABLE, (control_id, message)
        assert "the declared apache 2.4.62 is judged by PAT-03" in message
    pat03 = CATALOG.controls["PAT-03"]
    system_facts = {"software.declared": [assess_declared(DATA, software[0])], "versiondata.data_version": "x"}
    assert judge(pat03.rule, system_facts, pat03.params, NOW).status in (Status.PASS, Status.FAIL)


def test_declaring_software_on_a_system_whose_port_shows_nothing_hands_it_to_pat03() -> None:
    facts = _facts(ORTHANC_REST, [{"product": "Orthanc", "version": "1.12.5", "eol": "2030-01-01"}])
    assert facts["patch.system_software"] == ["Orthanc 1.12.5"]
    for control_id, (status, message) in _verdicts(facts).items():
        assert status is Status.NOT_APPLICABLE, (control_id, message)
        assert "the system declares its software (Orthanc 1.12.5), which PAT-03 judges" in message


def test_a_product_without_version_data_asks_for_its_vendor_dates() -> None:
    facts = _facts({"name": "http", "product": None, "banner": "AcmeMedical-Gateway/3.1"})
    for control_id, (status, message) in _verdicts(facts).items():
        assert status is Status.ERROR, (control_id, message)
        assert "hcscan has no version data on this product" in message and "eol and latest" in message

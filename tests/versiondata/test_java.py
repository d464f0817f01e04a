"""Java / OpenJDK: the version scheme, the shipped cycles, PAT-01/PAT-03 verdicts and `hcscan data import`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from scanner.catalog import builtin_controls_dir, load_catalog
from scanner.checks.verdict import judge
from scanner.models import Status
from scanner.probes.registry import fact_names
from scanner.versiondata import load_version_data
from scanner.versiondata.identify import assess_declared, identification_facts, identify_service
from scanner.versiondata.importer import import_data
from scanner.versiondata.schemes import VersionParseError, scheme_for

DATA = load_version_data()
JAVA = scheme_for("java")
CATALOG = load_catalog([builtin_controls_dir() / "patching.yaml"], probe_facts=fact_names())
NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


# Version text as JVMs, packages, CPEs and Temurin tags write it → (feature, interim, update, patch).
@pytest.mark.parametrize(
    ("text", "parts", "head"),
    [
        ("1.8.0_392", (8, 0, 392, 0), "1.8.0_392"),
        ("1.8.0_392-b08", (8, 0, 392, 0), "1.8.0_392"),
        ("8u392", (8, 0, 392, 0), "8u392"),
        ("8u392-ga-1~deb11u1", (8, 0, 392, 0), "8u392"),
        ("1.8.0.392.b08-2.el8", (8, 0, 392, 0), "1.8.0.392"),  # RHEL java-1.8.0-openjdk
        ("1.7.0_80", (7, 0, 80, 0), "1.7.0_80"),
        ("11.0.21+9", (11, 0, 21, 0), "11.0.21"),
        ("11.0.21.0.9-2.el8", (11, 0, 21, 0), "11.0.21.0"),  # RHEL java-11-openjdk: the fifth part is the build
        ("11.0.32.1+1", (11, 0, 32, 1), "11.0.32.1"),  # a security-only patch update (CSPU)
        ("17.0.9", (17, 0, 9, 0), "17.0.9"),
        ("17.0.9+9-1~deb12u1", (17, 0, 9, 0), "17.0.9"),
        ("21.0.1+12-LTS", (21, 0, 1, 0), "21.0.1"),
        ("1:11.0.21+9-1", (11, 0, 21, 0), "1:11.0.21"),  # Debian epoch
        ("27+35", (27, 0, 0, 0), "27"),
        ("1.8", (8, 0, 0, 0), "1.8"),
    ],
)
def test_java_versions_read_as_feature_interim_update_patch(text: str, parts: tuple[int, ...], head: str) -> None:
    parsed = JAVA.parse(text)
    assert parsed.parts == parts
    assert parsed.head == head


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.8.0_392", "8u402"),
        ("8u392-b08", "1.8.0_401"),
        ("1.7.0_80", "1.8.0_05"),
        ("8u504-b01", "11.0.2"),
        ("11.0.9", "11.0.21+9"),
        ("11.0.32+9", "11.0.32.1+1"),
        ("17.0.9+9", "17.0.10+7"),
        ("21.0.1+12-LTS", "21.0.12.1+1"),
        ("25", "25.0.1+8"),
    ],
)
def test_java_versions_order(older: str, newer: str) -> None:
    assert JAVA.compare(older, newer) == -1
    assert JAVA.compare(newer, older) == 1


@pytest.mark.parametrize(
    ("a", "b"), [("1.8.0_392", "8u392-b08"), ("1.8.0.392", "8u392"), ("21.0.1+12-LTS", "21.0.1"), ("17", "17.0.0")]
)
def test_java_spellings_of_one_release_are_equal(a: str, b: str) -> None:
    assert JAVA.compare(a, b) == 0


@pytest.mark.parametrize("text", ["", "Java", "u392", "jdk-17"])
def test_not_a_java_version(text: str) -> None:
    with pytest.raises(VersionParseError):
        JAVA.parse(text)


@pytest.mark.parametrize(
    ("version", "cycle"),
    [
        ("1.8.0_392", "8"),
        ("8u392-b08", "8"),
        ("1.8", "8"),
        ("1.7.0_80", "7"),
        ("11.0.21+9", "11"),
        ("17.0.9", "17"),
        ("21.0.1+12-LTS", "21"),
        ("22.0.2+9", "22"),
        ("23.0.1", "23"),
        ("24.0.2", "24"),
        ("25.0.1+8", "25"),
        ("1.4.2_42", None),  # not feature 4, and not in the data
        ("31.0.1", None),
    ],
)
def test_java_version_maps_onto_its_cycle(version: str, cycle: str | None) -> None:
    found = DATA.cycle_for(DATA.products["openjdk"], version)
    assert (found.cycle if found else None) == cycle


def test_shipped_java_data_is_sourced_and_consistent() -> None:
    java = DATA.products["openjdk"]
    cycles = {c.cycle: c for c in java.cycles}
    assert {"8", "11", "17", "21", "25", "22", "23", "24"} <= set(cycles)
    assert java.source in DATA.sources and java.note
    for c in java.cycles:
        assert c.latest is not None and c.released is not None
        assert c.latest_date is None or c.latest_date <= java.as_of
        assert JAVA.cycle_of(c.latest, [c.cycle]) == c.cycle, c  # the newest release belongs to its cycle
    for lts in ("8", "11", "17", "21", "25"):  # LTS lines: supported beyond the data's date
        assert cycles[lts].ended(java.as_of) is False
    for gone in ("7", "22", "23", "24"):
        assert cycles[gone].ended(java.as_of) is True


def _declared(product: str, version: str) -> dict[str, Any]:
    return {"software.declared": [assess_declared(DATA, {"product": product, "version": version})]}


def _verdict(control_id: str, facts: dict[str, Any]) -> tuple[Status, str]:
    control = CATALOG.controls[control_id]
    v = judge(control.rule, facts, control.params, NOW)
    return v.status, v.message


def test_pat03_declared_eol_java_fails() -> None:
    status, message = _verdict("PAT-03", _declared("openjdk", "1.7.0_80"))
    assert status is Status.FAIL
    assert "1.7.0_80 reached end of life on 2022-07-19" in message


def test_pat03_declared_current_java_passes() -> None:
    status, message = _verdict("PAT-03", _declared("java", "21.0.12.1+1"))
    assert status is Status.PASS, message
    status, message = _verdict("PAT-03", _declared("Eclipse Temurin", "8u504-b01"))
    assert status is Status.PASS, message


def test_pat03_declared_non_lts_java_that_ended_fails() -> None:
    status, message = _verdict("PAT-03", _declared("openjdk", "24.0.2"))
    assert status is Status.FAIL and "2025-09-30" in message


def _service(**seen: Any) -> dict[str, Any]:
    ident = identify_service(
        DATA,
        product=seen.get("product"),
        version=seen.get("version"),
        extrainfo=None,
        cpes=tuple(seen.get("cpes", ())),
        banner=seen.get("banner"),
    )
    return {"service.version_probed": True, **identification_facts(ident, DATA)}


def test_pat01_eol_java_seen_on_the_network_fails() -> None:
    status, message = _verdict("PAT-01", _service(cpes=["cpe:/a:oracle:jre:1.7.0_80"]))
    assert status is Status.FAIL
    assert "release cycle 7 reached end of life on 2022-07-19" in message


def test_pat01_supported_java_seen_on_the_network_passes() -> None:
    status, message = _verdict("PAT-01", _service(banner="User-Agent: Java/21.0.12"))
    assert status is Status.PASS, message
    assert "cycle 21 supported until 2029-12-31" in message


def test_eclipse_temurin_export_imports_into_openjdk(tmp_path: Path) -> None:
    export = tmp_path / "eclipse-temurin.json"  # an endoflife.date API v0 export (made-up future patch numbers)
    rows = [
        {"cycle": "25", "releaseDate": "2025-09-30", "eol": "2031-09-30", "latest": "25.0.5+11",
         "latestReleaseDate": "2026-10-28"},
        {"cycle": "8", "releaseDate": "2021-07-29", "eol": "2030-12-31", "latest": "8u512-b07",
         "latestReleaseDate": "2026-10-28"},
    ]  # fmt: skip
    export.write_text(json.dumps(rows))
    result = import_data(DATA, tmp_path / "versions.yaml", endoflife=[export], today=dt.date(2026, 11, 23))
    java = result.products["openjdk"]
    assert java.source == "import-openjdk"
    # The export updates cycles 25 and 8; the cycles it does not list (6, 7, 11, 17, 21 …) are kept.
    shipped = DATA.products["openjdk"]
    assert [c.cycle for c in java.cycles] == [c.cycle for c in shipped.cycles]
    assert {"7", "11", "17", "21"} <= {c.cycle for c in java.cycles}
    assert java.as_of == dt.date(2026, 10, 28)
    facts = assess_declared(result, {"product": "openjdk", "version": "1.8.0_504"})
    assert facts["cycle"] == "8" and facts["behind_latest"] is True and facts["cycle_latest"] == "8u512-b07"

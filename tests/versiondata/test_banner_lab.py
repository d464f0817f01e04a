"""A banner lab of real product strings judged by the shipped version data (issue 14).

Every string is what a real service shows (an SSH identification string, an HTTP `Server` header, nmap -sV's
product/version, a DICOM implementation version name); the facts are built by the service probe's own fact
function, and the verdicts by the shipped PAT controls. The day is pinned a little after the data's as-of dates,
so the verdicts are those a site sees with data that is current for the release cycles and a KEV snapshot that
is not — which is the point: knowledge that is too old is "could not assess", never a pass.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from click.testing import CliRunner

from scanner.catalog import load_catalog
from scanner.checks.verdict import judge
from scanner.cli import main
from scanner.errors import InputError
from scanner.models import Status
from scanner.probes.nmap import NmapRun
from scanner.probes.registry import fact_names
from scanner.probes.service import ServiceInfo, endpoint_facts
from scanner.resources import builtin_controls_dir
from scanner.versiondata import load_version_data, packaged_data_path
from scanner.versiondata.identify import Identification, identification_facts

DATA = load_version_data()
CATALOG = load_catalog([builtin_controls_dir() / "patching.yaml"], probe_facts=fact_names())
NOW = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)  # product knowledge 10-11 days old; the KEV snapshot 372 days old
RUN = NmapRun(xml="<nmaprun/>", xml_sha256="0" * 64, command=["nmap"], elapsed_s=0.1)
MAX_AGE = 120  # exposure.version_data.max_age_days's default
P, F, E = Status.PASS, Status.FAIL, Status.ERROR

# name: (what the service shows, {control: expected status}, a text PAT-01/02/05's message must hold or None).
# PAT-05 is judged here as by a site that accepts a KEV snapshot up to 400 days old (the shipped one is from
# 2025-08-25); with the default 120 days every PAT-05 without a KEV hit is "could not assess" (tested below).
LAB: dict[str, tuple[dict[str, Any], dict[str, Status], dict[str, str]]] = {
    "openssh-7.4-bare": (
        {"name": "ssh", "banner": "SSH-2.0-OpenSSH_7.4"},
        {"PAT-01": F, "PAT-02": F, "PAT-05": P},
        {"PAT-01": "release line 7 ended on 2019-04-18", "PAT-02": "behind 7.9p1"},
    ),
    "openssh-current": (
        {"name": "ssh", "banner": "SSH-2.0-OpenSSH_10.5p1"},
        {"PAT-01": P, "PAT-02": P, "PAT-05": P},
        {"PAT-01": "newest release line known", "PAT-05": "KEV catalogue 2025.08.25"},
    ),
    "openssh-debian-12": (
        {
            "name": "ssh",
            "product": "OpenSSH",
            "version": "9.2p1 Debian 2+deb12u3",
            "extrainfo": "protocol 2.0",
            "banner": "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3",
        },
        {"PAT-01": P, "PAT-02": E, "PAT-05": P},
        {"PAT-01": "debian 12 supports its package until 2028-06-30", "PAT-02": "declare the package version"},
    ),
    "apache-current": (
        {
            "name": "http",
            "product": "Apache httpd",
            "version": "2.4.68",
            "extrainfo": "(Unix)",
            "banner": "Apache/2.4.68 (Unix)",
        },
        {"PAT-01": P, "PAT-02": P, "PAT-05": P},
        {},
    ),
    "apache-2.4.49": (
        {"name": "http", "banner": "Apache/2.4.49 (Unix)"},
        {"PAT-01": P, "PAT-02": F, "PAT-05": F},
        {"PAT-05": "CVE-2021-41773"},
    ),
    "nginx-current": (
        {"name": "http", "product": "nginx", "version": "1.30.4", "banner": "nginx/1.30.4"},
        {"PAT-01": P, "PAT-02": P, "PAT-05": P},
        {},
    ),
    "nginx-eol": (
        {"name": "http", "banner": "nginx/1.18.0"},
        {"PAT-01": F, "PAT-05": P},
        {"PAT-01": "reached end of life on 2021-04-20"},
    ),
    "iis-10": (
        {"name": "http", "product": "Microsoft IIS httpd", "version": "10.0", "banner": "Microsoft-IIS/10.0"},
        {"PAT-01": P, "PAT-02": E, "PAT-05": P},
        {"PAT-02": "not in the version data"},
    ),
    "iis-6": (
        {"name": "http", "banner": "Microsoft-IIS/6.0"},
        {"PAT-01": F, "PAT-05": F},
        {"PAT-05": "CVE-2017-7269"},
    ),
    "tomcat-hiding-its-version": (
        {"name": "http", "product": "Apache Tomcat/Coyote JSP engine", "version": "1.1", "banner": "Apache-Coyote/1.1"},
        {"PAT-01": E, "PAT-02": E, "PAT-05": E},
        {"PAT-01": "Apache Tomcat recognised, but it shows no version"},
    ),
    "tomcat-9.0.98": (
        {"name": "http", "product": "Apache Tomcat", "version": "9.0.98", "banner": "Apache Tomcat/9.0.98"},
        {"PAT-01": P, "PAT-02": F, "PAT-05": F},
        # 20 days behind 9.0.121 is inside the usual 30 days, but the release fixes a KEV-listed CVE: 14 days.
        {"PAT-02": "fixes known-exploited CVE-2025-24813, so policy allows 14 days", "PAT-05": "CVE-2025-24813"},
    ),
    "mirth-connect-4.4.0": (
        {"name": "http", "banner": "Mirth Connect 4.4.0"},
        {"PAT-01": E, "PAT-02": F, "PAT-05": F},
        {"PAT-01": "hcscan data update", "PAT-02": "behind 4.5.0", "PAT-05": "CVE-2023-43208"},
    ),
    "mirth-connect-4.5.0": (
        {"name": "http", "banner": "Mirth Connect 4.5.0"},
        {"PAT-01": E, "PAT-02": E, "PAT-05": P},
        {"PAT-02": "unknown since 2024-03-20"},
    ),
    "dcmtk-3.6.9": (
        {"name": "dicom", "banner": "OFFIS_DCMTK_369"},
        {"PAT-01": F, "PAT-02": P, "PAT-05": P},
        {"PAT-01": "release line 3.6 ended on 2025-12-15"},
    ),
}


def _facts(seen: dict[str, Any]) -> dict[str, Any]:
    info = ServiceInfo(
        address="127.0.0.1",
        port=443,
        state="open",
        reason="syn-ack",
        name=seen["name"],
        product=seen.get("product"),
        version=seen.get("version"),
        extrainfo=seen.get("extrainfo"),
        banner=seen.get("banner"),
        method="probed",
    )
    return dict(endpoint_facts(info, DATA, RUN, True, {"system": {"software": []}}, MAX_AGE))


def _judge(
    control_id: str, facts: dict[str, Any], now: dt.datetime = NOW, params: dict[str, Any] | None = None
) -> tuple[Status, str]:
    control = CATALOG.controls[control_id]
    verdict = judge(control.rule, facts, {**control.params, **(params or {})}, now)
    return verdict.status, verdict.message


@pytest.mark.parametrize("case", sorted(LAB))
def test_every_verdict_of_the_banner_lab(case: str) -> None:
    seen, expected, texts = LAB[case]
    facts = _facts(seen)
    for control_id, status in expected.items():
        params = {"max_age_days": 400} if control_id == "PAT-05" else {}
        got, message = _judge(control_id, facts, params=params)
        assert got == status, f"{case} {control_id}: expected {status.value}, got {got.value}: {message}"
        if control_id in texts:
            assert texts[control_id] in message, f"{case} {control_id}: {message}"


@pytest.mark.parametrize("case", sorted(LAB))
def test_with_the_default_max_age_a_stale_kev_snapshot_is_never_a_pass(case: str) -> None:
    status, message = _judge("PAT-05", _facts(LAB[case][0]))
    assert status in (F, E), message
    if status == E and _facts(LAB[case][0])["patch.version"] is not None:
        assert "older than the site allows (120 days)" in message or "not in hcscan's data" in message, message


def test_no_product_judged_on_knowledge_older_than_max_age_passes_pat02() -> None:
    """Every product, every cycle, at its newest known release: a pass while the knowledge is fresh, never once
    the product's as-of date is more than max_age_days back."""
    fresh_passes = 0
    for product in DATA.file.products:
        for cycle in product.cycles:
            if cycle.latest is None:
                continue
            ident = Identification(product, cycle.latest, cycle, "bare_upstream_banner", "banner", cycle.latest)
            facts = identification_facts(ident, DATA) | {"versiondata.max_age_days": MAX_AGE}
            stale_day = dt.datetime.combine(product.as_of, dt.time(), dt.UTC) + dt.timedelta(days=MAX_AGE + 1)
            status, message = _judge("PAT-02", facts, stale_day)
            assert status != P, f"{product.id} {cycle.cycle}: {message}"
            assert status == E and "hcscan data update" in message, f"{product.id} {cycle.cycle}: {message}"
            fresh_day = dt.datetime.combine(product.as_of, dt.time(), dt.UTC) + dt.timedelta(days=1)
            fresh_passes += _judge("PAT-02", facts, fresh_day)[0] == P
    assert fresh_passes > 100  # the rule is not vacuous: the same versions pass on fresh knowledge


def test_newest_line_support_is_derived_once_when_the_data_loads() -> None:
    ssh = {c.cycle: c for c in DATA.products["openssh"].cycles}
    assert DATA.products["openssh"].support == "newest-line"
    assert ssh["9"].eol == ssh["10"].released == dt.date(2025, 4, 9)  # 9 ended the day 10.0 came out
    assert ssh["7"].eol == ssh["8"].released and ssh["10"].eol is None
    assert DATA.cycle_for(DATA.products["openssh"], "7.4") == ssh["7"]


def test_the_shipped_data_is_current_and_says_where_it_comes_from() -> None:
    f = DATA.file
    assert f.kev_snapshot is not None and f.kev_snapshot.catalog_version == "2025.08.25"
    assert f.kev_snapshot.date_released == dt.date(2025, 8, 25) and f.kev_snapshot.source in DATA.sources
    for source in f.sources:
        assert source.url and source.retrieved <= f.generated
    supports = {p.id: p.support for p in f.products}
    assert supports["openssh"] == supports["mirth-connect"] == supports["dcmtk"] == "newest-line"
    assert supports["cisco-asa"] == supports["netscaler"] == "unknown" and supports["tomcat"] == "dated"
    for pid in ("mirth-connect", "orthanc", "dcm4chee-arc", "dcmtk", "exchange", "netscaler", "fortios",
                "ivanti-connect-secure", "cisco-asa", "pan-os", "vmware-esxi", "vmware-vcenter"):  # fmt: skip
        assert DATA.products[pid].cpe, pid
    openssl = {c.cycle: c for c in DATA.products["openssl"].cycles}
    assert openssl["3.0"].eol == dt.date(2026, 9, 7) and "3.5" in openssl
    assert "10" in {c.cycle for c in DATA.products["openssh"].cycles}
    assert {"11.0", "10.1", "9"} <= {c.cycle for c in DATA.products["tomcat"].cycles}
    mirth = next(k for k in f.kev if k.cve == "CVE-2023-43208")
    assert mirth.product == "mirth-connect" and mirth.date_added == dt.date(2024, 5, 20) and mirth.fixed == ["4.4.1"]
    for k in f.kev:  # every entry either has checked ranges or says why not
        assert (k.versions and k.checked) or (not k.versions and k.unverified), k.cve


def test_a_kev_entry_without_ranges_must_say_why(tmp_path: Any) -> None:
    text = packaged_data_path().read_text(encoding="utf-8")
    bad = text.replace('    unverified: "', '    note_removed: "', 1)
    with pytest.raises(InputError):
        load_version_data(tmp_path / "v.yaml", text=bad)
    no_reason = text.replace('    unverified: "', '    checked: "', 1)
    with pytest.raises(InputError, match="say in `unverified`"):
        load_version_data(tmp_path / "v.yaml", text=no_reason)


def test_newest_line_needs_release_dates(tmp_path: Any) -> None:
    text = packaged_data_path().read_text(encoding="utf-8")
    bad = text.replace('{cycle: "8", released: 2019-04-18, ', '{cycle: "8", ', 1)
    assert bad != text
    with pytest.raises(InputError, match="newest-line needs a released date"):
        load_version_data(tmp_path / "v.yaml", text=bad)


def test_data_info_shows_support_as_of_and_kev_per_product() -> None:
    result = CliRunner().invoke(main, ["data", "info", "--json"], catch_exceptions=False)
    doc = __import__("json").loads(result.output)
    rows = {p["id"]: p for p in doc["product_list"]}
    assert rows["openssh"]["support"] == "newest-line" and rows["openssh"]["as_of"] == "2026-08-21"
    assert rows["mirth-connect"]["kev_entries"] == 1 and rows["mirth-connect"]["kev_unverified"] == 0
    assert rows["fortios"]["kev_entries"] == rows["fortios"]["kev_unverified"] > 0
    assert doc["kev_snapshot"]["catalog_version"] == "2025.08.25"
    text = " ".join(CliRunner().invoke(main, ["data", "info"], catch_exceptions=False).output.split())
    assert "CISA KEV catalogue 2025.08.25 of 2025-08-25" in text and "mirth-connect" in text

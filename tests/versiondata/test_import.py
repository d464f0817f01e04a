"""`hcscan data import`: endoflife.date exports, KEV joined to NVD ranges, atomic replacement."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.errors import InputError
from scanner.versiondata import load_version_data
from scanner.versiondata.identify import assess_declared, identification_facts, identify_service
from scanner.versiondata.importer import cycles_from_endoflife, import_data, merge_cycles
from scanner.versiondata.model import Cycle


def _write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc))
    return path


KEV = {
    "catalogVersion": "2026.11.20",
    "vulnerabilities": [
        {"cveID": "CVE-2021-41773", "vendorProject": "Apache", "product": "HTTP Server",
         "vulnerabilityName": "Apache HTTP Server Path Traversal", "dateAdded": "2021-11-03"},
        {"cveID": "CVE-2099-0001", "vendorProject": "Other", "product": "Thing", "dateAdded": "2026-01-01"},
    ],
}  # fmt: skip
NVD = {
    "vulnerabilities": [
        {"cve": {"id": "CVE-2021-41773", "configurations": [{"nodes": [{"cpeMatch": [
            {"vulnerable": True, "criteria": "cpe:2.3:a:apache:http_server:2.4.49:*:*:*:*:*:*:*"}]}]}]}},
        {"cve": {"id": "CVE-2099-0001", "configurations": [{"nodes": [{"cpeMatch": [
            {"vulnerable": True, "criteria": "cpe:2.3:a:other:thing:*:*:*:*:*:*:*:*", "versionEndExcluding": "2"}]}]}]}},
        {"cve": {"id": "CVE-2000-0001", "configurations": []}},
    ]
}  # fmt: skip


def test_import_endoflife_and_kev(tmp_path: Path) -> None:
    nginx = _write(
        tmp_path / "nginx.json",
        [
            {"cycle": "1.30", "releaseDate": "2026-04-20", "eol": False, "latest": "1.30.1", "latestReleaseDate": "2026-10-01"},
            {"cycle": "1.28", "releaseDate": "2025-04-23", "eol": "2026-04-20", "latest": "1.28.3"},
        ],
    )  # fmt: skip
    out = tmp_path / "data" / "versions.yaml"
    result = import_data(
        load_version_data(),
        out,
        endoflife=[nginx],
        kev=_write(tmp_path / "kev.json", KEV),
        nvd=[_write(tmp_path / "nvd.json", NVD)],
        today=dt.date(2026, 11, 23),
    )
    assert out.is_file() and result.file.generated == dt.date(2026, 11, 23)
    shipped = [c.cycle for c in load_version_data().products["nginx"].cycles]
    nginx_cycles = {c.cycle: c for c in result.products["nginx"].cycles}
    assert list(nginx_cycles) == shipped or list(nginx_cycles) == ["1.30", *shipped]  # none lost
    assert nginx_cycles["1.30"].latest == "1.30.1" and nginx_cycles["1.28"].latest == "1.28.3"
    assert nginx_cycles["1.28"].eol == dt.date(2026, 4, 20)
    assert result.products["nginx"].as_of == dt.date(2026, 10, 1)
    (kev,) = result.file.kev
    assert kev.cve == "CVE-2021-41773" and kev.product == "apache-httpd"
    reloaded = load_version_data(out)
    hit = identify_service(reloaded, product=None, version=None, extrainfo=None, cpes=(), banner="Apache/2.4.49 (Unix)")
    assert [k["cve"] for k in identification_facts(hit, reloaded)["patch.kev"]] == ["CVE-2021-41773"]
    fixed = identify_service(reloaded, product=None, version=None, extrainfo=None, cpes=(), banner="Apache/2.4.51")
    assert identification_facts(fixed, reloaded)["patch.kev"] == []


def test_a_bad_export_leaves_the_old_file_in_place(tmp_path: Path) -> None:
    out = tmp_path / "versions.yaml"
    good = _write(tmp_path / "nginx.json", [{"cycle": "1.30", "eol": False}])
    import_data(load_version_data(), out, endoflife=[good])
    before = out.read_text()
    bad = tmp_path / "php.json"
    bad.write_text('[{"cycle": ')
    with pytest.raises(InputError) as info:
        import_data(load_version_data(out), out, endoflife=[bad])
    assert info.value.problems[0].file == bad
    assert out.read_text() == before
    assert not list(tmp_path.glob(".versions-*"))


def test_unknown_product_export_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no product 'cobol'"):
        import_data(load_version_data(), tmp_path / "v.yaml", endoflife=[_write(tmp_path / "cobol.json", [])])


def test_cli_import_then_info(tmp_path: Path) -> None:
    (tmp_path / "inventory").mkdir()
    (tmp_path / "inventory" / "r.yaml").write_text("region: {id: r, name: R}\nsystems: []\n")
    (tmp_path / "config.yaml").write_text(
        "inventory: [inventory]\nexposure:\n  version_data: {path: data/versions.yaml, max_age_days: 30}\n"
    )
    _write(tmp_path / "nginx.json", [{"cycle": "1.30", "eol": False, "latest": "1.30.1"}])
    run = subprocess.run(
        [sys.executable, "-m", "scanner", "data", "import", "--endoflife", "nginx.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "data" / "versions.yaml").is_file()
    info = subprocess.run(
        [sys.executable, "-m", "scanner", "data", "info", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    doc = json.loads(info.stdout)
    assert doc["path"].endswith("data/versions.yaml") and doc["max_age_days"] == 30 and doc["age_days"] == 0


def test_an_export_updates_cycles_by_name_or_alias_and_keeps_what_it_does_not_list(tmp_path: Path) -> None:
    """endoflife.date names SQL Server cycles by year and Debian's by number: names, codenames and build
    aliases of the shipped data survive, so banners that name a build or codename still find their cycle."""
    base = load_version_data()
    mssql = _write(
        tmp_path / "mssqlserver.json",
        [
            {"cycle": "2022", "releaseDate": "2022-11-16", "eol": "2033-01-11", "latest": "16.0.4999.1",
             "latestReleaseDate": "2026-11-10"},
            {"cycle": "2030", "releaseDate": "2029-11-01", "eol": "2040-01-01", "latest": "18.0.1000.1"},
        ],
    )  # fmt: skip
    debian = _write(tmp_path / "debian.json", [{"cycle": "12", "eol": "2028-06-30", "latest": "12.12"}])
    result = import_data(base, tmp_path / "v.yaml", endoflife=[mssql, debian], today=dt.date(2026, 11, 23))
    sql = {c.cycle: c for c in result.products["mssql"].cycles}
    assert sql["16.0"].latest == "16.0.4999.1" and sql["16.0"].aliases == ["2022"]  # matched through its alias
    assert "2022" not in sql and sql["2030"].latest == "18.0.1000.1"  # unknown cycle added
    assert len(sql) == len(base.products["mssql"].cycles) + 1  # nothing dropped
    deb = {c.cycle: c for c in result.products["debian"].cycles}
    assert deb["12"].aliases == ["bookworm"] and deb["12"].latest == "12.12" and deb["12"].eol == dt.date(2028, 6, 30)
    assert deb["12"].released == next(c for c in base.products["debian"].cycles if c.cycle == "12").released  # kept
    assert deb["9"].aliases == ["stretch"]  # not in the export: kept as shipped
    facts = assess_declared(result, {"product": "mssql", "version": "16.0.4245.2"})
    assert facts["cycle"] == "16.0" and facts["behind_latest"] is True
    source = next(s for s in result.file.sources if s.id == "import-mssql")
    assert "cycles: 1 updated, 1 added" in source.url


def test_an_export_cycle_matching_two_cycles_by_alias_is_refused(tmp_path: Path) -> None:
    base = [{"cycle": "2008-r2-sp1", "aliases": ["2008 r2"]}, {"cycle": "2008-r2", "aliases": ["2008 R2"]}]
    export = tmp_path / "windows-server.json"
    with pytest.raises(InputError, match=r"matches several cycles of the data by alias \(2008-r2-sp1, 2008-r2\)"):
        merge_cycles(base, [Cycle(cycle="2008 r2")], export)
    with pytest.raises(InputError, match="lists cycle '2008-R2' twice"):
        merge_cycles(base, [Cycle(cycle="2008-r2"), Cycle(cycle="2008-R2")], export)
    merged, summary = merge_cycles(base, [Cycle(cycle="2008-r2", eol=dt.date(2020, 1, 14))], export)
    assert merged[1] == {"cycle": "2008-r2", "aliases": ["2008 R2"], "eol": "2020-01-14"}
    assert summary == "cycles: 1 updated, 0 added, 1 kept"


def test_an_export_states_no_end_of_life_keeps_order_and_never_lists_a_cycle_twice(tmp_path: Path) -> None:
    file = tmp_path / "nginx.json"
    base = [{"cycle": "1.28", "eol": "2026-04-20", "latest": "1.28.3"}, {"cycle": "1.27"}, {"cycle": "1.26"}]
    # "eol": false (v0) and isEol false (v1) mean no end announced: an older date does not survive it
    v0 = cycles_from_endoflife([{"cycle": "1.28", "eol": False, "latest": "1.28.4"}], file)
    v1 = cycles_from_endoflife({"result": {"releases": [{"name": "1.28", "isEol": False, "eolFrom": None}]}}, file)
    silent = cycles_from_endoflife({"result": {"releases": [{"name": "1.28", "latest": {"name": "1.28.4"}}]}}, file)
    assert merge_cycles(base, v0, file)[0][0] == {"cycle": "1.28", "eol": False, "latest": "1.28.4"}
    assert merge_cycles(base, v1, file)[0][0]["eol"] is False
    assert merge_cycles(base, silent, file)[0][0]["eol"] == "2026-04-20"  # says nothing about it: kept
    # the export's order, kept cycles where they stood among their neighbours
    export = cycles_from_endoflife([{"cycle": c} for c in ("1.30", "1.28", "1.26", "1.24")], file)
    merged, summary = merge_cycles(base, export, file)
    assert [c["cycle"] for c in merged] == ["1.30", "1.28", "1.27", "1.26", "1.24"]
    assert summary == "cycles: 2 updated, 2 added, 1 kept"
    for twice in (["1.30", "1.30"], ["1.28", "1.28"]):
        with pytest.raises(InputError, match=r"lists cycle '1\.(30|28)' twice"):
            merge_cycles(base, cycles_from_endoflife([{"cycle": c} for c in twice], file), file)

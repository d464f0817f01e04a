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
from scanner.versiondata.identify import identification_facts, identify_service
from scanner.versiondata.importer import import_data


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
    assert [c.cycle for c in result.products["nginx"].cycles] == ["1.30", "1.28"]
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

"""Bad input gets a clear error naming file and line, exit code 2, and the store is untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import make_workspace, system, write_yaml


def hcscan(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanner", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    make_workspace(tmp_path, [system("sys-a", "127.0.0.1", 9)])
    return tmp_path


def assert_refused(ws: Path, *needles: str, command: str = "scan") -> str:
    result = hcscan(command, "--config", "config.yaml", cwd=ws)
    assert result.returncode == 2, result.stdout + result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
    assert not (ws / "hcscan.db").exists(), "bad input must not create or touch the store"
    return result.stderr


def test_malformed_yaml(ws: Path) -> None:
    inv = ws / "inventory" / "testregion.yaml"
    inv.write_text(inv.read_text() + "  - id: [broken\n", encoding="utf-8")
    assert_refused(ws, "testregion.yaml:", "YAML syntax error")


def test_unknown_field_names_line(ws: Path) -> None:
    inv = ws / "inventory" / "testregion.yaml"
    text = inv.read_text().replace("criticality: high", "criticality: high\n  critcality: low")
    inv.write_text(text, encoding="utf-8")
    line = text.splitlines().index("  critcality: low") + 1
    assert_refused(ws, f"testregion.yaml:{line}:", "unknown field 'critcality'", "hint:")


def test_duplicate_key_in_mapping(ws: Path) -> None:
    inv = ws / "inventory" / "testregion.yaml"
    inv.write_text(
        inv.read_text().replace("criticality: high", "criticality: high\n  criticality: low"), encoding="utf-8"
    )
    assert_refused(ws, "duplicate key 'criticality'")


def test_duplicate_system_id_across_files(ws: Path) -> None:
    write_yaml(
        ws / "inventory" / "other.yaml",
        {"region": {"id": "other", "name": "Other"}, "systems": [system("sys-a", "127.0.0.2", 443)]},
    )
    err = assert_refused(ws, "duplicate system id 'sys-a'", "other.yaml:")
    assert "first declared in" in err


def test_duplicate_control_id(ws: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "controls" / "tls.yaml"
    (ws / "controls").mkdir()
    (ws / "controls" / "a.yaml").write_text(src.read_text(), encoding="utf-8")
    (ws / "controls" / "b.yaml").write_text(src.read_text(), encoding="utf-8")
    cfg = ws / "config.yaml"
    cfg.write_text(cfg.read_text().replace("- builtin", "- controls"), encoding="utf-8")
    assert_refused(ws, "b.yaml:", "duplicate control id 'TLS-01'", "first defined in")


def test_bad_regex_in_control(ws: Path) -> None:
    (ws / "controls").mkdir()
    write_yaml(
        ws / "controls" / "site.yaml",
        {
            "controls": [
                {
                    "id": "SITE-01",
                    "title": "Subject names the region",
                    "family": "tls",
                    "severity": "low",
                    "rationale": "Certificates should name the region that owns them.",
                    "remediation": "Re-issue the certificate with the region in the subject.",
                    "probe": "tls",
                    "assert": {"fact": "tls.leaf.subject", "matches": "(region"},
                }
            ]
        },
    )
    cfg = ws / "config.yaml"
    cfg.write_text(cfg.read_text().replace("- builtin", "- builtin\n- controls"), encoding="utf-8")
    err = assert_refused(ws, "site.yaml:", "invalid regular expression")
    line = (ws / "controls" / "site.yaml").read_text().splitlines()
    expected = next(i for i, text in enumerate(line, 1) if "matches" in text)
    assert f"site.yaml:{expected}:" in err


def test_unknown_fact_in_control(ws: Path) -> None:
    (ws / "controls").mkdir()
    write_yaml(
        ws / "controls" / "site.yaml",
        {
            "controls": [
                {
                    "id": "SITE-02",
                    "title": "Typo in a fact",
                    "family": "tls",
                    "severity": "low",
                    "rationale": "Tests that fact names are checked.",
                    "remediation": "Fix the fact name in the control.",
                    "probe": "tls",
                    "assert": {"fact": "tls.protocol", "none_of": ["SSLv3"]},
                }
            ]
        },
    )
    cfg = ws / "config.yaml"
    cfg.write_text(cfg.read_text().replace("- builtin", "- controls"), encoding="utf-8")
    assert_refused(ws, "unknown fact 'tls.protocol'", "tls.protocols")


def test_out_of_scope_target(ws: Path) -> None:
    make_workspace(ws, [system("sys-a", "127.0.0.1", 9), system("sys-b", "192.0.2.10", 443)])
    err = assert_refused(ws, "outside the allowed networks", "testregion.yaml:")
    assert "sys-b/ep" in err


def test_range_is_not_a_target(ws: Path) -> None:
    make_workspace(ws, [system("sys-a", "127.0.0.0/24", 443)])
    assert_refused(ws, "never expands ranges")


def test_option_like_host_refused(ws: Path) -> None:
    make_workspace(ws, [system("sys-a", "-oX=/tmp/pwn", 443)])
    assert_refused(ws, "neither an IP address nor a valid hostname")


def test_unknown_selection_is_input_error(ws: Path) -> None:
    result = hcscan("scan", "--config", "config.yaml", "--region", "atlantis", cwd=ws)
    assert result.returncode == 2
    assert "unknown region 'atlantis'" in result.stderr
    assert not (ws / "hcscan.db").exists()


def test_missing_config_explains_what_to_do(tmp_path: Path) -> None:
    result = hcscan("validate", cwd=tmp_path)
    assert result.returncode == 2
    assert "config.example.yaml" in result.stderr


def test_validate_reports_all_problems_at_once(ws: Path) -> None:
    inv = ws / "inventory" / "testregion.yaml"
    inv.write_text(
        inv.read_text().replace("port: 9", "port: 70000").replace("criticality: high", "criticality: urgent")
    )
    err = assert_refused(ws, "port", "criticality", command="validate")
    assert "2 problem(s)" in err


def test_existing_store_untouched_by_bad_input(ws: Path) -> None:
    db = ws / "hcscan.db"
    db.write_bytes(b"not touched")
    inv = ws / "inventory" / "testregion.yaml"
    inv.write_text(inv.read_text() + "bogus: 1\n")
    result = hcscan("scan", "--config", "config.yaml", cwd=ws)
    assert result.returncode == 2
    assert db.read_bytes() == b"not touched"
    assert not (ws / "hcscan.db-wal").exists()


def test_waiver_longer_than_a_year_refused(ws: Path) -> None:
    write_yaml(
        ws / "waivers.yaml",
        {
            "waivers": [
                {
                    "control": "TLS-01",
                    "system": "sys-a",
                    "reason": "Vendor appliance cannot be upgraded this year.",
                    "approved_by": "CISO",
                    "approved_on": "2026-01-01",
                    "expires": "2028-01-01",
                }
            ]
        },
    )
    cfg = ws / "config.yaml"
    cfg.write_text(cfg.read_text() + "waivers: [waivers.yaml]\n")
    assert_refused(ws, "waivers.yaml:", "at most 366 days")


def test_yaml_aliases_are_refused_not_expanded(ws: Path) -> None:
    """A self-referencing alias would recurse forever; nested ones would exhaust memory."""
    inv = ws / "inventory" / "testregion.yaml"
    inv.write_text(inv.read_text() + "x: &loop [*loop]\n", encoding="utf-8")
    assert_refused(ws, "testregion.yaml:", "YAML anchors (&loop) are not supported", command="validate")


@pytest.mark.parametrize(
    ("store_url", "words"),
    [("bogus://nowhere", "Can't load plugin"), ("postgresql+psycopg://hcscan:s3cret@127.0.0.1:1/x", "***")],
)
def test_bad_or_unreachable_store_is_an_input_error(ws: Path, store_url: str, words: str) -> None:
    cfg = ws / "config.yaml"
    cfg.write_text(cfg.read_text().replace("sqlite:///hcscan.db", store_url), encoding="utf-8")
    result = hcscan("report", "--config", "config.yaml", cwd=ws)
    assert result.returncode == 2, result.stderr
    assert "cannot open the store" in result.stderr and words in result.stderr
    assert "s3cret" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("path", "protocol", "words"),
    [
        ("/fhir?_format=json", "fhir", "has a query or fragment"),
        ("/fhir#x", "fhir", "has a query or fragment"),
        ("/fhir/../admin", "fhir", "'.' or '..' segment"),
        ("/fhir/%2e%2E/admin", "fhir", "'.' or '..' segment"),
        ("/fhir/..;/admin", "fhir", "has a ';'"),
        ("/fhir;jsessionid=1", "fhir", "has a ';'"),
        ("/fhir%2f..%2fadmin", "fhir", "percent-encoded '/' or '\\'"),
        ("/fhir%2F..%2Fadmin", "fhir", "percent-encoded '/' or '\\'"),
        ("/fhir%5c..%5Cadmin", "fhir", "percent-encoded '/' or '\\'"),
        ("/fhir%252f..%252fadmin", "fhir", "percent-encoded '%' (%25: double encoding"),
        ("/fhir/..%3b/admin", "fhir", "percent-encoded ';' or NUL"),
        ("/fhir%00", "fhir", "percent-encoded ';' or NUL"),
        ("/fhir/%252e%252e/admin", "fhir", "percent-encoded '%' (%25: double encoding"),
        ("fhir", "fhir", "must start with '/'"),
        ("/fhir base", "fhir", "URL path characters only"),
        ("/fhir", "https", "only ['fhir'] endpoints take one"),
    ],
)
def test_bad_endpoint_base_path_names_its_line(ws: Path, path: str, protocol: str, words: str) -> None:
    write_yaml(
        ws / "inventory" / "testregion.yaml",
        {
            "region": {"id": "testregion", "name": "Region testregion"},
            "systems": [system("sys-a", "127.0.0.1", 8443, protocol) | {"endpoints": [
                {"id": "api", "host": "127.0.0.1", "port": 8443, "protocol": protocol, "path": path}
            ]}],
        },
    )  # fmt: skip
    err = assert_refused(ws, "testregion.yaml:", words, command="validate")
    assert "1 problem" in err, err


def test_a_declared_fhir_base_path_is_normalised(tmp_path: Path) -> None:
    from scanner.inventory import load_inventory

    sys_ = system("sys-a", "127.0.0.1", 8443, "fhir")
    sys_["endpoints"][0]["path"] = "/baseR4/"
    write_yaml(tmp_path / "r.yaml", {"region": {"id": "r", "name": "R"}, "systems": [sys_]})
    (ref,) = load_inventory([tmp_path / "r.yaml"]).endpoints()
    assert ref.endpoint.path == "/baseR4"


@pytest.mark.parametrize(
    "ae_title",
    ["STORE SCP", " PACS01", "PACS01 ", "PACS\\01", "PACS,01", "PACS=01", "ÆRØ", "A" * 17, ""],
)
def test_an_ae_title_hcscan_cannot_send_is_refused_with_its_line(ws: Path, ae_title: str) -> None:
    """Never silently replaced by ANY-SCP at scan time: refused when the inventory is loaded, naming file and line."""
    write_yaml(
        ws / "inventory" / "testregion.yaml",
        {
            "region": {"id": "testregion", "name": "Region testregion"},
            "systems": [system("sys-a", "127.0.0.1", 2762, "dicom-tls", availability={"checks": {"ep": {
                "ae_title": ae_title}}})],
        },
    )  # fmt: skip
    lines = (ws / "inventory" / "testregion.yaml").read_text(encoding="utf-8").splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "ae_title" in text)
    err = assert_refused(ws, f"testregion.yaml:{line}:", "ae_title", command="validate")
    assert "1 problem" in err, err


def test_an_endpoint_declared_as_two_instances_is_refused(ws: Path) -> None:
    """[a@north, a@south] would count as redundancy (AVL-02) with one endpoint: refused, naming the line."""
    write_yaml(
        ws / "inventory" / "testregion.yaml",
        {
            "region": {"id": "testregion", "name": "Region testregion"},
            "systems": [system("sys-a", "127.0.0.1", 2575, "mllp", availability={"instances": [
                {"endpoint": "ep", "site": "north"}, {"endpoint": "ep", "site": "south"}]})],
        },
    )  # fmt: skip
    lines = (ws / "inventory" / "testregion.yaml").read_text(encoding="utf-8").splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "instances" in text)
    err = assert_refused(
        ws, f"testregion.yaml:{line}:", "endpoint 'ep' is declared as an instance twice", command="validate"
    )
    assert "1 problem" in err, err


@pytest.mark.parametrize("ae_title", ["PACS01", "ANY-SCP", "STORE_SCP", "A" * 16, "ris.site:1/b@c+d"])
def test_an_ae_title_hcscan_can_send_is_accepted(tmp_path: Path, ae_title: str) -> None:
    from scanner.inventory import load_inventory

    sys_ = system("sys-a", "127.0.0.1", 2762, "dicom-tls", availability={"checks": {"ep": {"ae_title": ae_title}}})
    write_yaml(tmp_path / "r.yaml", {"region": {"id": "r", "name": "R"}, "systems": [sys_]})
    (ref,) = load_inventory([tmp_path / "r.yaml"]).endpoints()
    assert ref.system.availability is not None
    assert ref.system.availability.checks["ep"].ae_title == ae_title

"""The probe registry: every kind resolves to its implementation; the probe index (fact names and protocols) is the
implementations' own, read from the user's cache when it is trustworthy, so a start-up imports only the probes it
runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.probes import registry
from scanner.probes.availability import SLA_KIND

ROOT = Path(__file__).resolve().parents[2]
NOT_NEEDED_BY_TLS = ("scanner.probes.service", "scanner.versiondata", "scanner.probes.exposure",
                     "scanner.probes.auditlog", "scanner.probes.dicom_assoc", "scanner.probes.uptime")  # fmt: skip


def run_python(code: str, cache: Path | str) -> dict[str, object]:
    env = {**os.environ, "HCSCAN_CACHE_DIR": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


LOAD_INDEX = """
import json, sys
from scanner.probes.registry import fact_names, probe_protocols, make_probes
names, protocols = fact_names(), probe_protocols()
probes = make_probes(None, {"tls", "http"})
print(json.dumps({
    "facts": {k: sorted(v) for k, v in names.items()},
    "protocols": {k: sorted(v) for k, v in protocols.items()},
    "probes": sorted(probes),
    "imported": sorted(m for m in sys.modules if m.startswith("scanner.")),
}))
"""


def test_every_kind_is_its_implementations_own() -> None:
    for kind in registry.PROBE_CLASS_PATHS:
        assert registry.probe_class(kind).kind == kind
    assert set(registry.STORE_KINDS) == {SLA_KIND}
    assert set(registry.make_probes(None, {"tls", "ntp", "sla", "nonsense"})) == {"tls", "ntp"}


def test_the_index_is_the_implementations_facts_and_protocols() -> None:
    index = registry.build_index()
    assert index["facts"] == {k: sorted({s.name for s in specs}) for k, specs in registry.fact_specs().items()}
    assert index["protocols"]["tls"] == sorted(registry.probe_class("tls").protocols)
    assert {k: sorted(v) for k, v in registry.fact_names().items()} == index["facts"]
    assert {k: sorted(v) for k, v in registry.probe_protocols().items()} == index["protocols"]


def test_a_cached_index_spares_the_imports_of_probes_not_run(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cold = run_python(LOAD_INDEX, cache)
    (written,) = list(cache.glob("probe-index-*.json"))
    assert oct(written.stat().st_mode & 0o777) == "0o600" and oct(cache.stat().st_mode & 0o777) == "0o700"
    warm = run_python(LOAD_INDEX, cache)
    assert warm["facts"] == cold["facts"] == registry.build_index()["facts"]
    assert warm["protocols"] == cold["protocols"]
    assert warm["probes"] == ["http", "tls"]
    imported = warm["imported"]
    assert isinstance(imported, list)
    assert not [m for m in imported if m.startswith(NOT_NEEDED_BY_TLS)], imported
    assert "scanner.probes.service" in str(cold["imported"])  # built from the implementations the first time


@pytest.mark.parametrize("damage", ["garbage", "wrong-shape", "others-may-write"])
def test_a_damaged_or_untrusted_index_is_not_used(tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    expected = run_python(LOAD_INDEX, cache)
    (written,) = list(cache.glob("probe-index-*.json"))
    if damage == "garbage":
        written.write_text("{not json", encoding="utf-8")
    elif damage == "wrong-shape":
        forged = json.loads(written.read_text(encoding="utf-8"))
        forged["facts"]["tls"] = ["tls.forged"]
        del forged["protocols"]["http"]
        written.write_text(json.dumps(forged), encoding="utf-8")
    else:
        forged = json.loads(written.read_text(encoding="utf-8"))
        forged["facts"]["tls"].append("tls.forged")
        written.write_text(json.dumps(forged), encoding="utf-8")
        written.chmod(0o666)
    again = run_python(LOAD_INDEX, cache)
    assert again["facts"] == expected["facts"] and again["protocols"] == expected["protocols"]
    assert "scanner.probes.service" in str(again["imported"])  # rebuilt from the implementations


def test_no_cache_dir_or_an_unwritable_one_still_works(tmp_path: Path) -> None:
    expected = registry.build_index()["facts"]
    assert run_python(LOAD_INDEX, "")["facts"] == expected
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x", encoding="utf-8")
    assert run_python(LOAD_INDEX, blocked / "cache")["facts"] == expected
    assert not list(tmp_path.rglob("probe-index-*.json"))

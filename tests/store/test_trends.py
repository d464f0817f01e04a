"""Trend points are the region's state after each run, summed per family: runs scheduled per family (nightly TLS,
weekly patching) must not make the line jump, and stores from before the split keep their points."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, text

from scanner.models import Status
from scanner.results import FindingRecord, RunMeta
from scanner.store import queries, repo
from scanner.store.db import MIGRATIONS, make_engine, open_store
from tests.store.test_repo import T0

W = 5 * 4  # weight of a high-severity control on a critical system


def _rec(control: str, family: str, system: str, status: Status) -> FindingRecord:
    return FindingRecord(control, family, "high", "r1", system, f"{system}/web", "critical", status, "", {})


def _run(engine: Engine, day: int, records: list[FindingRecord], selection: dict[str, list[str]]) -> int:
    meta = RunMeta("0.1.0", "c" * 64, "i" * 64, "f" * 64, selection, ["r1"], "host", 1)
    at = T0 + timedelta(days=day)
    run_id = repo.start_run(engine, meta, at)
    repo.complete_run(engine, run_id, records, at + timedelta(minutes=1))
    return run_id


def test_each_point_sums_every_familys_latest_state(engine: Engine) -> None:
    tls_ok = [_rec("TLS-01", "tls", s, Status.PASS) for s in ("s1", "s2")]
    patch_bad = [_rec("PAT-01", "patching", s, Status.FAIL) for s in ("s1", "s2")]
    tls_half = [_rec("TLS-01", "tls", "s1", Status.PASS), _rec("TLS-01", "tls", "s2", Status.FAIL)]
    r1 = _run(engine, 0, tls_ok, {"families": ["tls"]})
    r2 = _run(engine, 1, patch_bad, {"families": ["patching"]})
    r3 = _run(engine, 2, tls_half, {"families": ["tls"]})
    _run(engine, 3, [_rec("TLS-01", "tls", "s2", Status.PASS)], {"systems": ["s2"]})  # ad hoc: no point
    points = queries.region_history(engine, "r1")
    assert [p.run_id for p in points] == [r1, r2, r3]
    assert [(p.w_pass, p.w_total) for p in points] == [(2 * W, 2 * W), (2 * W, 4 * W), (W, 4 * W)]
    assert points[-1].counts == {"pass": 1, "fail": 3, "error": 0, "waived": 0, "not_applicable": 0}
    assert [p.systems for p in points] == [2, 2, 2]
    assert len(queries.region_history(engine, "r1", limit=2)) == 2


def test_aggregates_of_a_store_from_before_the_split_keep_their_points(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = make_engine(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with old.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0005")
    with old.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO scan_run (id, started_at, status, status_detail, tool_version, catalog_digest,"
                " inventory_digest, config_digest, selection, regions, host, pid, agent_id, n_findings, n_pass,"
                " n_fail, n_error, n_not_applicable, n_waived) VALUES (7, '2026-11-01 00:00:00', 'complete', '',"
                " '0.1.0', 'c', 'i', 'f', '{}', '[\"r1\"]', 'h', 1, '', 3, 2, 1, 0, 0, 0)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO run_system_agg VALUES (7, 's1', 'r1', 1, 0, 0, 0, 0, 20, 20),"
                " (7, 's2', 'r1', 1, 1, 0, 0, 0, 20, 40)"
            )
        )
    old.dispose()
    engine = open_store(url)  # migrates to the head: run_system_agg becomes run_family_agg
    (point,) = queries.region_history(engine, "r1")
    assert (point.run_id, point.w_pass, point.w_total, point.systems) == (7, 40, 60, 2)
    assert point.counts["pass"] == 2 and point.counts["fail"] == 1
    # A run after the upgrade writes per family; the pre-split row stops counting once families are judged anew.
    run_id = _run(engine, 30, [_rec("TLS-01", "tls", "s1", Status.PASS)], {})
    assert [(p.run_id, p.w_pass, p.w_total) for p in queries.region_history(engine, "r1")] == [
        (7, 40, 60),
        (run_id, W, W),
    ]
    engine.dispose()

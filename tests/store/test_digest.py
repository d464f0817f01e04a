"""Verdict digests hold what a verdict depends on: a volatile reading (clock skew, uptime) that stays on the same side
of the policy adds no finding row; a reading that crosses it does. Judged by the shipped controls (LOG-05, PAT-04)
and stored on SQLite and PostgreSQL; then three scans of an unchanged loopback lab add no rows after the first."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from scanner.app import load_workspace, plan_scan, run_scan, volatile_facts
from scanner.catalog import ControlCatalog, builtin_controls_dir, load_catalog
from scanner.checks.verdict import judge
from scanner.engine import Selection
from scanner.lab import Lab
from scanner.probes.registry import fact_names, fact_specs, make_probes, probe_protocols
from scanner.results import FindingRecord, RunMeta
from scanner.store import queries, repo
from scanner.yamlio import yaml_files
from tests.helpers import make_workspace, system

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
VOLATILE = frozenset(s.name for specs in fact_specs().values() for s in specs if s.volatile)


@pytest.fixture(scope="module")
def catalog() -> ControlCatalog:
    return load_catalog(yaml_files([builtin_controls_dir()], "controls"), probe_facts=fact_names())


def judged(catalog: ControlCatalog, control_id: str, facts: dict[str, Any], endpoint: str = "web") -> FindingRecord:
    """One record as the engine makes it: the shipped control judges the facts; volatile facts are marked."""
    control = catalog.controls[control_id]
    verdict = judge(control.rule, facts, control.params, T0)
    return FindingRecord(
        control_id, control.spec.family, control.spec.severity.value, "r1", "s1", f"s1/{endpoint}", "high",
        verdict.status, verdict.message, verdict.evidence, verdict.outcome,
        tuple(k for k in verdict.evidence if k in VOLATILE),
    )  # fmt: skip


def store_run(engine: Engine, records: list[FindingRecord], at: datetime) -> dict[str, int]:
    run_id = repo.start_run(engine, RunMeta("0.1.0", "c" * 64, "i" * 64, "f" * 64, {}, ["r1"], "h", 1), at)
    return repo.complete_run(engine, run_id, records, at + timedelta(seconds=30)).changes


def finding_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("select count(*) from finding")).scalar_one())


def state_of(engine: Engine, control_id: str) -> tuple[str, Any, datetime]:
    with engine.connect() as conn:
        status, latest, verified = conn.execute(
            text("select status, latest_evidence, last_verified_at from finding_state where control_id = :c"),
            {"c": control_id},
        ).one()
    if isinstance(latest, str):  # SQLite hands JSON back as text through a plain SQL query
        latest = json.loads(latest)
    if isinstance(verified, str):
        verified = datetime.fromisoformat(verified)
    return str(status), latest, verified


def skew(seconds: float | None) -> dict[str, Any]:
    return {"http.clock_skew_seconds": seconds}


def uptime(min_days: float, max_days: float, host: str = "127.0.0.5") -> dict[str, Any]:
    return {
        "uptime.estimated": True,
        "uptime.min_days": min_days,
        "uptime.max_days": max_days,
        "uptime.longest_host": host,
        "uptime.last_boot": f"boot {min_days}",
        "uptime.unbounded": [],
    }


def test_the_volatile_facts_are_the_readings() -> None:
    assert {"http.clock_skew_seconds", "uptime.min_days", "uptime.max_days", "ntp.offset_seconds"} <= VOLATILE
    assert not {"tls.protocols", "http.hsts.max_age", "uptime.estimated", "ntp.synchronized"} & VOLATILE


def test_a_moving_clock_skew_adds_no_row_until_it_crosses_the_limit(engine: Engine, catalog: ControlCatalog) -> None:
    hour = timedelta(hours=1)
    assert store_run(engine, [judged(catalog, "LOG-05", skew(-0.63))], T0) == {"new": 1}
    assert store_run(engine, [judged(catalog, "LOG-05", skew(-0.41))], T0 + hour) == {"unchanged": 1}
    assert store_run(engine, [judged(catalog, "LOG-05", skew(-0.59))], T0 + 2 * hour) == {"unchanged": 1}
    assert finding_rows(engine) == 1  # three passes, one row
    status, latest, verified = state_of(engine, "LOG-05")
    # The latest reading is kept as evidence of the latest verification, nothing is lost.
    assert status == "pass" and latest == {"http.clock_skew_seconds": -0.59}
    assert verified.replace(tzinfo=UTC) == T0 + 2 * hour + timedelta(seconds=30)

    # A real change: the clock runs 7.2 s ahead (over the 5 s limit) — a fail, with its own row.
    assert store_run(engine, [judged(catalog, "LOG-05", skew(7.2))], T0 + 3 * hour) == {"new": 1}
    assert finding_rows(engine) == 2
    assert store_run(engine, [judged(catalog, "LOG-05", skew(8.9))], T0 + 4 * hour) == {"unchanged": 1}
    assert finding_rows(engine) == 2  # still ahead, still over: the same verdict
    # Still failing, but now on the other side of the policy (behind): a different verdict, a new row.
    assert store_run(engine, [judged(catalog, "LOG-05", skew(-6.0))], T0 + 5 * hour) == {"unchanged": 1}
    assert finding_rows(engine) == 3
    # No Date header: could not assess, a row; back within the limit: a row.
    assert store_run(engine, [judged(catalog, "LOG-05", skew(None))], T0 + 6 * hour) == {"unassessed": 1}
    assert store_run(engine, [judged(catalog, "LOG-05", skew(0.2))], T0 + 7 * hour) == {"reassessed": 1}
    assert finding_rows(engine) == 5
    with engine.connect() as conn:
        kept = [row[0] for row in conn.execute(text("select status from finding order by id"))]
    assert kept == ["pass", "fail", "fail", "error", "pass"]


def test_pat04_is_stable_on_a_steady_host(engine: Engine, catalog: ControlCatalog) -> None:
    """Uptime readings grow every scan; the verdict depends on the days against 45, not on the reading."""
    day = timedelta(days=1)
    for i in range(3):
        days = 10.25 + i * 1.000116  # one day later each time, read with nmap's usual jitter
        store_run(engine, [judged(catalog, "PAT-04", uptime(days, days + 0.000012))], T0 + i * day)
    assert finding_rows(engine) == 1
    status, latest, _ = state_of(engine, "PAT-04")
    assert status == "pass" and latest is not None and latest["uptime.min_days"] == pytest.approx(12.250232)
    # The host is not rebooted: once past 45 days the verdict changes, and that is a row.
    assert store_run(engine, [judged(catalog, "PAT-04", uptime(45.5, 45.6))], T0 + 36 * day) == {"new": 1}
    assert store_run(engine, [judged(catalog, "PAT-04", uptime(46.5, 46.6))], T0 + 37 * day) == {"unchanged": 1}
    assert finding_rows(engine) == 2


def test_non_volatile_evidence_still_makes_a_new_row(engine: Engine, catalog: ControlCatalog) -> None:
    """Only readings are left out: a stable fact that changes (HSTS max-age) is a new verdict row even when the
    status stays the same."""
    facts = {
        "http.scheme": "https",
        "http.status": 200,
        "http.hsts.present": True,
        "http.hsts.max_age": 31536000,
        "http.hsts.include_subdomains": False,
        "http.redirects_to_https": False,
        "http.location": None,
    }
    first = judged(catalog, "TLS-07", facts)
    assert first.status.value == "pass"
    store_run(engine, [first], T0)
    store_run(engine, [judged(catalog, "TLS-07", facts)], T0 + timedelta(hours=1))
    assert finding_rows(engine) == 1
    store_run(engine, [judged(catalog, "TLS-07", {**facts, "http.hsts.max_age": 63072000})], T0 + timedelta(hours=2))
    assert finding_rows(engine) == 2


@pytest.mark.needs_nmap
@pytest.mark.slow
def test_three_scans_of_an_unchanged_lab_add_no_rows_after_the_first(lab: Lab, store_url: str, tmp_path: Path) -> None:
    """Every control but those of the nmap service and uptime probes (TLS, HTTP and clock skew, logging,
    availability) on real loopback servers of the project's lab, three times into one store: the first scan writes
    every verdict, the next two write none although the measured clock skews differ every time. (The service probe's
    nmap -sV takes about 25 s a scan here, and nmap -O on loopback now and then collects no TCP timestamps at all — a
    real change of PAT-04's verdict; PAT-04 on moving readings is the test above. A full scan was checked the same
    way by hand: no rows after the first.)"""
    names = ["good", "legacy_protocols", "expired", "http_redirect"]
    systems = [
        system(n.replace("_", "-"), lab.endpoints[n].address, lab.endpoints[n].port, lab.endpoints[n].protocol,
               lab.endpoints[n].server_name)
        for n in names
    ]  # fmt: skip
    # Generous timeouts: on a busy machine a slow handshake must not turn a verdict into "could not assess".
    extra = {"store_url": store_url, "politeness": {"timeout_s": 15}}
    config = make_workspace(tmp_path, systems, ca_bundles=[str(lab.ca_bundle)], extra_config=extra)
    ws = load_workspace(config, fact_names())
    skipped = {"service", "uptime"}
    selection = Selection(controls=frozenset(c.id for c in ws.catalog.controls.values() if c.spec.probe not in skipped))
    plan, _ = plan_scan(ws, selection, probe_protocols())
    probes = make_probes(ws.config)
    assert "http.clock_skew_seconds" in volatile_facts(probes)
    rows: list[int] = []
    skews: list[Any] = []
    verdicts: list[dict[str, str]] = []
    engine = create_engine(store_url)
    try:
        for _ in range(3):
            result = run_scan(ws, plan, probes, selection)
            assert result.summary.counts, "the scan judged nothing"
            rows.append(finding_rows(engine))
            verdicts.append(
                {f"{r.control_id} {r.endpoint_key}": f"{r.status.value}: {r.message}" for r in result.records}
            )
            skews.append(
                sorted(
                    str(r.evidence.get("http.clock_skew_seconds")) for r in result.records if r.control_id == "LOG-05"
                )
            )
        log05 = [r for r in result.records if r.control_id == "LOG-05"]
    finally:
        engine.dispose()
    assert log05 and all(r.status.value == "pass" for r in log05), [r.message for r in log05]
    assert rows[0] == len(result.records) >= len(names) * 7
    changed = {k: [v[k] for v in verdicts] for k in verdicts[0] if len({v[k].split(":")[0] for v in verdicts}) > 1}
    assert not changed, f"a verdict changed on the unchanged lab (a probe too slow here?): {changed}"
    assert rows[1] == rows[0] and rows[2] == rows[0], f"finding rows after each scan: {rows} (skews {skews})"


def test_a_store_judged_before_the_new_digests_adds_no_rows_for_unchanged_verdicts(
    engine: Engine, catalog: ControlCatalog
) -> None:
    """Digests written before migration 0007 were status + message + evidence: a verdict judged exactly the same
    again is converted without a row; one whose reading moved writes its row once, then no more."""
    same, moving = judged(catalog, "LOG-05", skew(-0.5), "a"), judged(catalog, "LOG-05", skew(-0.63), "b")
    store_run(engine, [same, moving], T0)
    with engine.begin() as conn:  # as a store from before the upgrade holds them
        for rec in (same, moving):
            conn.execute(
                text("update finding_state set verdict_digest = :d where endpoint_key = :e"),
                {"d": repo.legacy_digest(rec.status.value, rec.message, rec.evidence), "e": rec.endpoint_key},
            )
    moved = judged(catalog, "LOG-05", skew(-0.41), "b")
    store_run(engine, [same, moved], T0 + timedelta(hours=1))
    assert finding_rows(engine) == 3  # only the moved reading's row (the old digest held the reading)
    store_run(engine, [same, judged(catalog, "LOG-05", skew(-0.59), "b")], T0 + timedelta(hours=2))
    assert finding_rows(engine) == 3
    with engine.connect() as conn:
        digests = set(conn.execute(text("select verdict_digest from finding_state")).scalars())
    assert digests == {repo.verdict_digest("pass", r.evidence, r.volatile, r.outcome) for r in (same, moved)}


def test_reports_and_exports_show_the_latest_reading_of_an_unchanged_verdict(
    engine: Engine, catalog: ControlCatalog
) -> None:
    """The row keeps the reading it was written with; the latest verification's reading is what a reader sees."""
    hour = timedelta(hours=1)
    store_run(engine, [judged(catalog, "LOG-05", skew(-0.63))], T0)
    store_run(engine, [judged(catalog, "LOG-05", skew(-0.41))], T0 + hour)
    (view,) = queries.latest_findings(engine)
    assert view.status == "pass" and view.evidence["http.clock_skew_seconds"] == -0.41

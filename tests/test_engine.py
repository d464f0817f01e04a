"""The engine with a fake probe (pure logic): planning, system-level controls, probe failures, waivers, politeness."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import ClassVar

import pytest

from scanner.catalog import load_catalog
from scanner.config import Config
from scanner.engine import Selection, build_plan, gather_facts, judge_all, politeness_for
from scanner.inventory import check_scope, load_inventory
from scanner.models import Status
from scanner.probes.base import FactSpec, ProbeContext, ProbeError, ProbeErrorReason, ProbeFacts, ProbeOutcome, Target
from scanner.waivers import Waiver, Waivers
from tests.helpers import write_yaml

NOW = datetime(2026, 11, 22, tzinfo=UTC)


class FakeProbe:
    kind: ClassVar[str] = "fake"
    facts: ClassVar[Sequence[FactSpec]] = [FactSpec("fake.ok", "bool", "whether all is well")]
    protocols: ClassVar[frozenset[str]] = frozenset({"https", "system"})

    def __init__(self, crash: bool = False) -> None:
        self.crash = crash
        self.seen: list[Target] = []

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        if self.crash:
            raise RuntimeError("boom")
        self.seen.extend(targets)
        out: dict[str, ProbeOutcome] = {}
        for t in targets:
            if t.port == 9:
                out[t.key] = ProbeError(ProbeErrorReason.REFUSED, "connection refused")
            elif t.port != 10:  # port 10: the probe "forgets" the target
                out[t.key] = ProbeFacts({"fake.ok": t.port != 444})
        return out


def control(cid: str, level: str = "endpoint") -> dict[str, object]:
    return {
        "id": cid,
        "title": f"Control {cid}",
        "family": "tls",
        "severity": "high",
        "rationale": "Because it matters a lot.",
        "remediation": "Make it so, number one.",
        "applies_to": {"level": level, "protocols": ["https"]},
        "probe": "fake",
        "assert": {"fact": "fake.ok", "equals": True},
    }


@pytest.fixture
def setup(tmp_path: Path) -> tuple[object, ...]:
    eps = [{"id": f"p{p}", "host": "127.0.0.1", "port": p, "protocol": "https"} for p in (443, 444, 9, 10)]
    write_yaml(
        tmp_path / "inv" / "r.yaml",
        {
            "region": {"id": "r", "name": "R"},
            "systems": [
                {"id": "a", "name": "A", "owner": "o", "criticality": "high", "endpoints": eps},
                {
                    "id": "pump",
                    "name": "Pump",
                    "owner": "o",
                    "criticality": "critical",
                    "fragile": True,
                    "politeness": {"timing": 5, "max_concurrency": 50},
                    "endpoints": eps[:1],
                },
            ],
        },
    )
    write_yaml(tmp_path / "c.yaml", {"controls": [control("FAKE-01"), control("FAKE-02", "system")]})
    inventory = load_inventory([tmp_path / "inv"])
    catalog = load_catalog([tmp_path / "c.yaml"], probe_facts={"fake": {"fake.ok"}})
    config = Config.model_validate({"scope": {"allowed_networks": ["127.0.0.0/8"]}})
    scoped = check_scope(inventory, list(config.scope.allowed_networks))
    return inventory, catalog, config, scoped


def test_plan_endpoint_and_system_level(setup: tuple[object, ...]) -> None:
    inventory, catalog, config, scoped = setup
    plan = build_plan(inventory, catalog, scoped, config, Selection(), {"fake": FakeProbe.protocols})  # type: ignore[arg-type]
    keys = sorted((c.control.id, c.key) for c in plan.checks)
    assert keys == sorted(
        [("FAKE-01", f"a/p{p}") for p in (443, 444, 9, 10)]
        + [("FAKE-01", "pump/p443"), ("FAKE-02", "a/*"), ("FAKE-02", "pump/*")]
    )
    system_target = next(t for t in plan.targets["fake"] if t.key == "a/*")
    assert system_target.protocol == "system" and len(system_target.declared["endpoints"]) == 4  # type: ignore[arg-type]


def test_verdicts_fail_closed(setup: tuple[object, ...]) -> None:
    inventory, catalog, config, scoped = setup
    plan = build_plan(
        inventory, catalog, scoped, config, Selection(controls=frozenset({"FAKE-01"})), {"fake": FakeProbe.protocols}
    )  # type: ignore[arg-type]
    facts = gather_facts(plan, {"fake": FakeProbe()}, ProbeContext())
    status = {r.endpoint_key: (r.status, r.message) for r in judge_all(plan, facts, Waivers(), NOW)}
    assert status["a/p443"][0] is Status.PASS
    assert status["a/p444"][0] is Status.FAIL
    assert status["a/p9"] == (Status.ERROR, "could not assess: refused: connection refused")
    assert status["a/p10"][0] is Status.ERROR and "no outcome" in status["a/p10"][1]


def test_probe_crash_is_error_for_each_target(setup: tuple[object, ...]) -> None:
    inventory, catalog, config, scoped = setup
    plan = build_plan(inventory, catalog, scoped, config, Selection(), {"fake": FakeProbe.protocols})  # type: ignore[arg-type]
    facts = gather_facts(plan, {"fake": FakeProbe(crash=True)}, ProbeContext())
    records = judge_all(plan, facts, Waivers(), NOW)
    assert records and all(r.status is Status.ERROR and "crashed" in r.message for r in records)


def test_waivers_active_and_expired(setup: tuple[object, ...]) -> None:
    inventory, catalog, config, scoped = setup
    plan = build_plan(
        inventory,
        catalog,
        scoped,
        config,
        Selection(systems=frozenset({"a"}), controls=frozenset({"FAKE-01"})),
        {"fake": FakeProbe.protocols},
    )  # type: ignore[arg-type]
    facts = gather_facts(plan, {"fake": FakeProbe()}, ProbeContext())

    def waiver(expires: str) -> Waiver:
        return Waiver.model_validate(
            {
                "control": "FAKE-01",
                "system": "a",
                "endpoint": "p444",
                "reason": "vendor fix scheduled",
                "approved_by": "CISO",
                "approved_on": "2026-06-01",
                "expires": expires,
            }
        )

    active = {r.endpoint_key: r for r in judge_all(plan, facts, Waivers((waiver("2027-01-01"),)), NOW)}
    assert active["a/p444"].status is Status.WAIVED and "waived until 2027-01-01" in active["a/p444"].message
    assert active["a/p9"].status is Status.ERROR  # a waiver never hides could-not-assess
    expired = {r.endpoint_key: r for r in judge_all(plan, facts, Waivers((waiver("2026-11-01"),)), NOW)}
    assert expired["a/p444"].status is Status.FAIL and "waiver expired on 2026-11-01" in expired["a/p444"].message


def test_fragile_system_is_capped_whatever_it_declares(setup: tuple[object, ...]) -> None:
    inventory, _, config, _ = setup
    _, pump = inventory.systems["pump"]  # type: ignore[attr-defined]
    polite = politeness_for(pump, config)  # type: ignore[arg-type]
    assert (polite.timing, polite.max_concurrency, polite.fragile) == (2, 1, True)


def test_probes_refuse_a_name_that_now_resolves_out_of_scope() -> None:
    """Defence in depth for probes that resolve declared names themselves (log backends)."""
    import ipaddress

    from scanner.probes.base import OutOfScope, resolve_in_scope

    ctx = ProbeContext(allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),))
    assert resolve_in_scope("127.0.0.2", ctx) == "127.0.0.2"
    with pytest.raises(OutOfScope):
        resolve_in_scope("127.0.0.1", ctx)
    with pytest.raises(OutOfScope):
        resolve_in_scope("localhost", ctx)  # resolves to loopback addresses other than 127.0.0.2


def test_a_run_abandoned_before_storing_is_interrupted_with_its_reason_and_stores_nothing(tmp_path: Path) -> None:
    """The agent's lease went to another agent while probing: the run is ended `interrupted`, not completed."""
    import sqlite3

    from scanner.app import RunAbandoned, load_workspace, plan_scan, run_scan
    from scanner.probes.registry import fact_names, make_probes, probe_protocols
    from tests.helpers import make_workspace, system

    config = make_workspace(tmp_path, [system("a", "127.0.0.1", 9)])
    ws = load_workspace(config, fact_names())
    selection = Selection(controls=frozenset({"TLS-01"}))
    plan, _ = plan_scan(ws, selection, probe_protocols())
    reason = "the slot's lease was lost (another agent took it over); not stored"
    with pytest.raises(RunAbandoned, match="lease was lost"):
        run_scan(ws, plan, make_probes(ws.config), selection, abandon=lambda: reason)
    with sqlite3.connect(tmp_path / "hcscan.db") as db:
        runs = db.execute("SELECT status, status_detail FROM scan_run").fetchall()
        findings = db.execute("SELECT COUNT(*) FROM finding").fetchone()[0]
    assert runs == [("interrupted", reason)] and findings == 0


class _TimedProbe:
    """Records when it worked on which system (no I/O: the orchestration is what is under test)."""

    facts: ClassVar[Sequence[FactSpec]] = []
    protocols: ClassVar[frozenset[str]] = frozenset({"https"})

    def __init__(self, kind: str, log: list[tuple[str, str, float, float]]) -> None:
        self.kind = kind
        self.log = log

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        import time

        started = time.monotonic()
        time.sleep(0.2)
        ended = time.monotonic()
        self.log.extend((self.kind, t.system_id, started, ended) for t in targets)
        return {t.key: ProbeFacts({}) for t in targets}


def test_a_strict_system_meets_one_probe_kind_at_a_time_the_others_all_at_once() -> None:
    from scanner.engine import Plan
    from scanner.probes.base import Politeness

    def target(system: str, politeness: Politeness) -> Target:
        return Target(f"{system}/web", system, "127.0.0.1", 443, "https", politeness=politeness)

    targets = (
        target("pump", Politeness(max_concurrency=1, fragile=True)),
        target("lis", Politeness(max_concurrency=2, own_concurrency=True)),
        target("epj", Politeness()),
    )
    kinds = ("tls", "http", "service")
    log: list[tuple[str, str, float, float]] = []
    probes = {k: _TimedProbe(k, log) for k in kinds}
    reported: list[tuple[str, int]] = []
    plan = Plan(checks=(), targets=dict.fromkeys(kinds, targets), unresolved={})
    facts = gather_facts(plan, probes, ProbeContext(), lambda kind, n: reported.append((kind, n)))
    assert {k: list(v) for k, v in facts.items()} == {k: [t.key for t in targets] for k in kinds}
    assert reported == [(k, 3) for k in kinds]

    def spans(system: str) -> list[tuple[float, float]]:
        return sorted((s, e) for _, sys_id, s, e in log if sys_id == system)

    for system in ("pump", "lis"):  # strict: the kinds one after another
        got = spans(system)
        assert len(got) == 3 and all(a[1] <= b[0] for a, b in pairwise(got)), got
    shared = spans("epj")  # not strict: the kinds side by side
    assert max(s for s, _ in shared) < min(e for _, e in shared), shared
    for kind in kinds:  # one probe never gathers twice at once: its strict run follows its shared one
        (shared_run,) = [(s, e) for k, sys_id, s, e in log if k == kind and sys_id == "epj"]
        (strict_run,) = [(s, e) for k, sys_id, s, e in log if k == kind and sys_id == "pump"]
        assert shared_run[1] <= strict_run[0], (kind, shared_run, strict_run)

"""Availability end to end: a loopback server goes down and up on a known schedule while rounds are sampled at
injected times; the stored coverage, SLA bounds, outages and control verdicts are asserted exactly."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from scanner.app import load_workspace, plan_scan, run_scan
from scanner.app_availability import availability_table, run_sample
from scanner.availability import to_ms
from scanner.engine import Selection
from scanner.models import Status
from scanner.probes.registry import fact_names, make_probes, probe_protocols
from scanner.store.availability import heartbeat, service_stats, window_stats
from scanner.store.db import open_store
from tests.helpers import make_workspace

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


class SwitchableServer:
    """A TCP listener on 127.0.0.1 that can be taken down (port closed: refused) and brought back on the same port."""

    def __init__(self, address: str = "127.0.0.1", port: int = 0) -> None:
        self._sock: socket.socket | None = None
        self.address = address
        self.port = port
        self.up()

    def up(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.address, self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    def down(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            # shutdown wakes the thread blocked in accept(); close alone would leave the port listening
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def set(self, up: bool) -> None:
        self.up() if up else self.down()


@pytest.fixture
def server() -> Iterator[SwitchableServer]:
    s = SwitchableServer()
    yield s
    s.down()


def _workspace(tmp_path: Path, port: int, **availability: Any) -> Any:
    ep_a = {"id": "a", "host": "127.0.0.1", "port": port, "protocol": "mllp"}
    ep_b = {"id": "b", "host": "127.0.0.2", "port": port, "protocol": "mllp"}
    system = {
        "id": "lis",
        "name": "Lab system",
        "owner": "Lab IT",
        "criticality": "critical",
        "endpoints": [ep_a, ep_b],
        "availability": {
            "latency_budget_ms": 1000,
            "instances": [{"endpoint": "a", "site": "north"}, {"endpoint": "b", "site": "south"}],
            **availability,
        },
    }
    config = make_workspace(
        tmp_path,
        [system],
        extra_config={
            "availability": {"interval_s": 60, "timeout_s": 1, "retry_delay_s": 0.02, "window": "20m"},
            "control_params": {"AVL-03": {"min_samples": 10}},
        },
    )
    return load_workspace(config, fact_names())


ONLY_A = Selection(systems=frozenset({"lis"}))
DOWN_ROUNDS = {5, 6, 7, 12}  # rounds (minutes after T0) when the server is down


def _take_rounds(ws: Any, server: SwitchableServer, rounds: range | list[int]) -> None:
    for i in rounds:
        server.set(i not in DOWN_ROUNDS)
        run_sample(ws, ONLY_A, at=T0 + i * MINUTE, now=lambda: T0)


def test_known_schedule_gives_exact_percentage_outages_and_coverage(tmp_path: Path, server: SwitchableServer) -> None:
    ws = _workspace(tmp_path, server.port)
    _take_rounds(ws, server, range(20))  # samples at T0 .. T0+19 min
    engine = open_store(ws.config.resolved_store_url())
    end = T0 + 20 * MINUTE
    stats = window_stats(engine, ["lis/a", "lis/b"], T0, end)
    a = stats["lis/a"]
    # each sample covers the minute up to the next; the last one [19, 21) is clipped to the window end (20)
    assert (a.up_ms, a.down_ms, a.unknown_ms, a.measured_ms) == (16 * 60_000, 4 * 60_000, 0, 20 * 60_000)
    assert (a.lower_percent, a.upper_percent, a.coverage_percent) == (80.0, 80.0, 100.0)
    assert a.outage_count == 2 and a.longest_outage_ms == 3 * 60_000
    assert [(o.start, o.end, o.seconds, o.ended_by) for o in a.outages] == [
        (T0 + 12 * MINUTE, T0 + 13 * MINUTE, 60.0, "up"),
        (T0 + 5 * MINUTE, T0 + 8 * MINUTE, 180.0, "up"),
    ]
    assert a.samples == 20 and a.latency_samples == 16
    # 127.0.0.2 has nothing listening on the port: down all the time, one ongoing outage
    b = stats["lis/b"]
    assert (b.up_ms, b.down_ms, b.lower_percent) == (0, 20 * 60_000, 0.0)
    assert [(o.seconds, o.ongoing, o.ended_by) for o in b.outages] == [(1200.0, True, "ongoing")]

    # a declared maintenance window over minutes 4..8 removes the first outage and 4 minutes of the window
    maint = [(to_ms(T0 + 4 * MINUTE), to_ms(T0 + 8 * MINUTE))]
    m = window_stats(engine, ["lis/a"], T0, end, {"lis/a": maint})["lis/a"]
    assert (m.measured_ms, m.maintenance_ms, m.up_ms, m.down_ms) == (16 * 60_000, 4 * 60_000, 15 * 60_000, 60_000)
    assert m.lower_percent == 93.75 and m.outage_count == 1
    beat = heartbeat(engine, T0, end)
    assert (beat.rounds, beat.covered_ms) == (20, 20 * 60_000)
    engine.dispose()

    # the controls judge the same figures (window 20m from config, now = T0 + 20 min)
    plan, _ = plan_scan(ws, Selection(families=frozenset({"availability"})), probe_protocols())
    result = run_scan(ws, plan, make_probes(), Selection(), now=lambda: end)
    verdicts = {(r.control_id, r.endpoint_key): (r.status, r.message) for r in result.records}
    # a and b are the system's two instances: each is judged with the service (AVL-04), not alone. b never
    # answered, so the service was down exactly when a was.
    for key in ("lis/a", "lis/b"):
        status, message = verdicts[("AVL-01", key)]
        assert status is Status.NOT_APPLICABLE and "judged for the service as a whole" in message
    status, message = verdicts[("AVL-04", "lis/*")]
    assert status is Status.FAIL and "at most 80 % < target 99.9 %" in message and "2 outage(s)" in message
    assert "service of 2 instances" in message
    assert verdicts[("AVL-02", "lis/*")][0] is Status.FAIL
    assert "b@south" in verdicts[("AVL-02", "lis/*")][1]
    assert verdicts[("AVL-03", "lis/a")][0] is Status.PASS
    assert verdicts[("AVL-03", "lis/b")][0] is Status.ERROR  # no up sample: no latency to judge


def test_a_sampling_gap_is_unknown_and_makes_the_verdict_inconclusive(tmp_path: Path, server: SwitchableServer) -> None:
    ws = _workspace(tmp_path, server.port, instances=[])  # no redundancy declared: AVL-01 judges each endpoint
    # rounds 8..11 never happen (scanner down); the server stays up throughout
    for i in [*range(8), *range(12, 20)]:
        run_sample(ws, ONLY_A, at=T0 + i * MINUTE, now=lambda: T0)
    end = T0 + 20 * MINUTE
    engine = open_store(ws.config.resolved_store_url())
    a = window_stats(engine, ["lis/a"], T0, end)["lis/a"]
    # sample 7 covers [7, 9) (2 × interval); [9, 12) is unknown
    assert (a.up_ms, a.down_ms, a.unknown_ms) == (17 * 60_000, 0, 3 * 60_000)
    assert (a.lower_percent, a.upper_percent, a.coverage_percent) == (85.0, 100.0, 85.0)
    assert a.outage_count == 0
    beat = heartbeat(engine, T0, end)
    assert (beat.rounds, beat.covered_ms) == (16, 17 * 60_000)
    engine.dispose()
    table = availability_table(ws, ONLY_A, ["1h"], now=lambda: end)
    row = next(r for r in table.rows if r.endpoint_key == "lis/a")
    assert row.windows[0].verdict is Status.ERROR  # 1 h window: most of it unknown
    plan, _ = plan_scan(ws, Selection(controls=frozenset({"AVL-01"})), probe_protocols())
    result = run_scan(ws, plan, make_probes(), Selection(), now=lambda: end)
    rec = next(r for r in result.records if r.endpoint_key == "lis/a")
    assert rec.status is Status.ERROR and "inconclusive: coverage 85 %" in rec.message


def test_a_redundant_service_is_down_only_while_every_instance_is(tmp_path: Path, server: SwitchableServer) -> None:
    """Two instances on 127.0.0.1 and 127.0.0.2 take turns being down; the service was down only in the two
    minutes both were. A third round schedule leaves b unsampled while a is down: unknown, not down."""
    other = SwitchableServer("127.0.0.2", server.port)
    try:
        ws = _workspace(tmp_path, server.port)
        a_down, b_down = {5, 6, 7, 12}, {2, 3, 6, 7, 15}
        for i in range(20):
            server.set(i not in a_down)
            other.set(i not in b_down)
            run_sample(ws, ONLY_A, at=T0 + i * MINUTE, now=lambda: T0)
        end = T0 + 20 * MINUTE
        engine = open_store(ws.config.resolved_store_url())
        stats = window_stats(engine, ["lis/a", "lis/b"], T0, end)
        assert stats["lis/a"].down_ms == 4 * 60_000 and stats["lis/b"].down_ms == 5 * 60_000
        service = service_stats(engine, "lis/*", ["lis/a", "lis/b"], T0, end)
        assert (service.up_ms, service.down_ms, service.unknown_ms) == (18 * 60_000, 2 * 60_000, 0)
        assert (service.lower_percent, service.upper_percent, service.coverage_percent) == (90.0, 90.0, 100.0)
        assert [(o.start, o.end, o.seconds, o.ended_by) for o in service.outages] == [
            (T0 + 6 * MINUTE, T0 + 8 * MINUTE, 120.0, "up")
        ]
        assert service.samples == 40 and service.last_sample_at == T0 + 19 * MINUTE
        # maintenance over minutes 5..7 removes one of the two minutes
        maint = [(to_ms(T0 + 5 * MINUTE), to_ms(T0 + 7 * MINUTE))]
        m = service_stats(engine, "lis/*", ["lis/a", "lis/b"], T0, end, maint)
        assert (m.measured_ms, m.down_ms, m.outages[0].seconds) == (18 * 60_000, 60_000, 60.0)
        # an instance never sampled: while a was down the service is unknown, never down
        ghost = service_stats(engine, "lis/*", ["lis/a", "lis/never"], T0, end)
        assert (ghost.up_ms, ghost.down_ms, ghost.unknown_ms) == (16 * 60_000, 0, 4 * 60_000)
        engine.dispose()

        table = availability_table(ws, ONLY_A, ["20m"], now=lambda: end)
        rows = {r.endpoint_key: r for r in table.rows}
        assert set(rows) == {"lis/a", "lis/b", "lis/*"} and rows["lis/*"].instances == 2
        assert (rows["lis/*"].windows[0].lower, rows["lis/*"].windows[0].down_minutes) == (90.0, 2.0)
        assert rows["lis/a"].instances is None and rows["lis/a"].windows[0].lower == 80.0

        plan, _ = plan_scan(ws, Selection(families=frozenset({"availability"})), probe_protocols())
        result = run_scan(ws, plan, make_probes(), Selection(), now=lambda: end)
        by_key = {(r.control_id, r.endpoint_key): r for r in result.records}
        avl04 = by_key[("AVL-04", "lis/*")]
        assert avl04.status is Status.FAIL and "at most 90 % < target 99.9 %" in avl04.message
        assert "1 outage(s) in the last 20m, the longest 2 min" in avl04.message
        assert avl04.evidence["sla.basis"] == "service" and avl04.evidence["sla.down_seconds"] == 120.0
        assert by_key[("AVL-01", "lis/a")].status is Status.NOT_APPLICABLE

        # with 85 % as the target the same service passes, though each instance alone was down 4-5 minutes
        ws85 = _workspace(tmp_path, server.port, sla_percent=85.0)
        plan, _ = plan_scan(ws85, Selection(controls=frozenset({"AVL-04"})), probe_protocols())
        result = run_scan(ws85, plan, make_probes(), Selection(), now=lambda: end)
        avl04 = next(r for r in result.records if r.control_id == "AVL-04")
        assert avl04.status is Status.PASS and "at least 90 % ≥ target 85 %" in avl04.message, avl04.message
    finally:
        other.down()


def test_out_of_order_and_repeated_rounds_are_ignored(tmp_path: Path, server: SwitchableServer) -> None:
    ws = _workspace(tmp_path, server.port)
    run_sample(ws, ONLY_A, at=T0 + 2 * MINUTE, now=lambda: T0)
    late = run_sample(ws, ONLY_A, at=T0 + MINUTE, now=lambda: T0)
    assert late.n_rejected == 2 and late.n_up == 0
    engine = open_store(ws.config.resolved_store_url())
    a = window_stats(engine, ["lis/a"], T0, T0 + 10 * MINUTE)["lis/a"]
    assert (a.up_ms, a.unknown_ms) == (2 * 60_000, 8 * 60_000)
    engine.dispose()


def test_weekly_maintenance_window_expands_in_its_time_zone() -> None:
    from scanner.availability import MaintenanceWindow

    w = MaintenanceWindow.model_validate(
        {"days": ["mon"], "at": "09:00", "duration_min": 30, "tz": "Europe/Copenhagen"}
    )
    # 2026-03-02 is a Monday; 09:00 CET = 08:00 UTC
    spans = w.intervals((to_ms(T0 - timedelta(days=1)), to_ms(T0 + timedelta(days=1))))
    assert spans == [(to_ms(T0), to_ms(T0 + 30 * MINUTE))]
    with pytest.raises(ValueError, match="either weekly"):
        MaintenanceWindow.model_validate({"days": ["mon"], "start": "2026-03-02T08:00:00Z"})


def test_a_missed_round_inside_an_outage_does_not_split_it(engine: Engine) -> None:
    """Store arithmetic on recorded samples (SQLite and PostgreSQL): down at minutes 0..5 with no sample at minute 2
    (one missed round is still covered), up at 6 — one outage of 6 minutes ended by 'up', for the endpoint and for
    its service."""
    from scanner.probes.availability import Sample
    from scanner.store.availability import record_round

    def sample(key: str, up: bool) -> Sample:
        return Sample(key, "x", "tcp", up, 5.0 if up else None, None if up else "refused", None, 1)

    for i in range(8):
        if i != 2:
            record_round(engine, T0 + i * MINUTE, 60, [sample("x/a", i >= 6), sample("x/b", False)], {"x": "r"})
    end = T0 + 8 * MINUTE
    a = window_stats(engine, ["x/a"], T0, end)["x/a"]
    assert a.outage_count == 1 and a.longest_outage_ms == 6 * 60_000
    assert [(o.start, o.end, o.ended_by) for o in a.outages] == [(T0, T0 + 6 * MINUTE, "up")]
    b = window_stats(engine, ["x/b"], T0, end)["x/b"]
    assert [(o.seconds, o.ongoing, o.ended_by) for o in b.outages] == [(480.0, True, "ongoing")]
    service = service_stats(engine, "x/*", ["x/a", "x/b"], T0, end)
    assert [(o.start, o.end, o.ended_by) for o in service.outages] == [(T0, T0 + 6 * MINUTE, "up")]
    # a window that ends exactly where the service came back still knows what ended the outage
    edge = service_stats(engine, "x/*", ["x/a", "x/b"], T0, T0 + 6 * MINUTE)
    assert [(o.ongoing, o.ended_by) for o in edge.outages] == [(False, "up")]

"""Availability use cases the CLI and the agent share: take one sampling round into the store (`hcscan sample`),
and read measured availability per endpoint over rolling windows (`hcscan availability`)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from scanner.app import Workspace, check_selection
from scanner.availability import parse_window, to_ms
from scanner.checks.availability import sla_verdict
from scanner.engine import Selection, declared_data, endpoint_target, politeness_for
from scanner.inventory import EndpointRef, check_scope
from scanner.models import Status
from scanner.probes.availability import AvailabilitySampler, Sample, SamplerSettings
from scanner.probes.base import Target
from scanner.textsafe import clean_text

DEFAULT_WINDOWS = ("24h", "7d", "30d")


def sample_targets(ws: Workspace, selection: Selection) -> tuple[list[Target], dict[str, str]]:
    """Every selected, in-scope endpoint as a sampling target (an out-of-scope one stops everything: InputError).

    Returns the targets and endpoint key → why it cannot be sampled (name did not resolve).
    """
    check_selection(ws, selection)
    scoped = check_scope(ws.inventory, list(ws.config.scope.allowed_networks))
    targets: list[Target] = []
    for ref in ws.inventory.endpoints():
        if not selection.wants_endpoint(ref):
            continue
        address = scoped.addresses.get(ref.key)
        if address is None:
            continue
        targets.append(endpoint_target(ref, address, politeness_for(ref.system, ws.config)))
    unresolved = {k: v for k, v in scoped.unresolved.items() if k.split("/", 1)[0] in _selected_systems(ws, selection)}
    return targets, unresolved


def _selected_systems(ws: Workspace, selection: Selection) -> set[str]:
    return {ref.system.id for ref in ws.inventory.endpoints() if selection.wants_endpoint(ref)}


@dataclass(frozen=True)
class SampleRound:
    round_id: int
    t: datetime
    samples: list[Sample]
    unresolved: dict[str, str]
    n_up: int
    n_down: int
    n_unknown: int
    n_rejected: int


def sampler_for(ws: Workspace) -> AvailabilitySampler:
    cfg = ws.config.availability
    return AvailabilitySampler(SamplerSettings(cfg.timeout_s, cfg.retry_delay_s, cfg.max_concurrency))


def run_sample(
    ws: Workspace,
    selection: Selection,
    *,
    sampler: AvailabilitySampler | None = None,
    at: datetime | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SampleRound:
    """Take one round now (or at the injected time `at`, for tests) and store it in one transaction."""
    from scanner.store.availability import record_round
    from scanner.store.db import open_store

    targets, unresolved = sample_targets(ws, selection)
    t = at or now()
    # The sampler's boundary for target text (as engine.clean_outcome is the scan's): error details quote answers.
    samples = [
        replace(s, detail=clean_text(s.detail, 2000)) if s.detail is not None else s
        for s in (sampler or sampler_for(ws)).sample(targets).values()
    ]
    regions = {system.id: region.id for region, system in ws.inventory.systems.values()}
    engine = open_store(ws.config.resolved_store_url())
    try:
        summary = record_round(
            engine, t, ws.config.availability.interval_s, samples, regions, host=socket.gethostname(), finished=now()
        )
    finally:
        engine.dispose()
    return SampleRound(
        summary.round_id, t, samples, unresolved, summary.n_up, summary.n_down, summary.n_unknown, summary.n_rejected
    )


@dataclass(frozen=True)
class WindowFigures:
    window: str
    lower: float | None
    upper: float | None
    coverage: float | None
    verdict: Status
    outages: int
    down_minutes: float
    p95_ms: tuple[float, float | None] | None


@dataclass(frozen=True)
class AvailabilityRow:
    region_id: str
    system_id: str
    endpoint_key: str
    criticality: str
    target: float | None
    target_source: str
    windows: tuple[WindowFigures, ...]
    outages: tuple[Any, ...]  # scanner.store.availability.Outage of the longest window
    last_sample_at: datetime | None
    instances: int | None = None  # a redundant service's row (key '<system>/*'): how many instances it has


@dataclass(frozen=True)
class AvailabilityTable:
    now: datetime
    rows: list[AvailabilityRow]
    heartbeat_rounds: int
    heartbeat_coverage: float  # percent of the longest window the sampler itself covered
    last_round_at: datetime | None


def availability_table(
    ws: Workspace,
    selection: Selection,
    windows: Sequence[str] = DEFAULT_WINDOWS,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> AvailabilityTable:
    """Measured availability of every selected endpoint over each window, judged against its SLA target, and of
    every redundant service (≥ 2 declared instances: up while any answers) as a row keyed '<system>/*'."""
    from scanner.store.availability import (
        heartbeat,
        redundant_instance_keys,
        service_stats,
        sla_target,
        system_availability,
        window_stats,
    )
    from scanner.store.db import open_store

    check_selection(ws, selection)
    lengths = {w: parse_window(w) for w in windows}
    at = now()
    refs = [ref for ref in ws.inventory.endpoints() if selection.wants_endpoint(ref)]
    keys = [ref.key for ref in refs]
    declared = {ref.key: declared_data(ref, False) for ref in refs}
    services: dict[str, tuple[EndpointRef, list[str]]] = {}  # '<system>/*' → a ref of the system, instance keys
    for ref in refs:
        instance_keys = redundant_instance_keys(ref.system.id, system_availability(declared[ref.key]))
        if instance_keys:
            services.setdefault(f"{ref.system.id}/*", (ref, instance_keys))
    engine = open_store(ws.config.resolved_store_url())
    try:
        stats = {}
        for w, length in lengths.items():
            start = at - length
            span = (to_ms(start), to_ms(at))
            maint = {k: system_availability(declared[k]).maintenance_intervals(span) for k in keys}
            stats[w] = window_stats(engine, keys, start, at, maint)
            for service_key, (ref, instance_keys) in services.items():
                maintenance = system_availability(declared[ref.key]).maintenance_intervals(span)
                stats[w][service_key] = service_stats(engine, service_key, instance_keys, start, at, maintenance)
        longest = max(lengths, key=lambda w: lengths[w])
        beat = heartbeat(engine, at - lengths[longest], at)
    finally:
        engine.dispose()
    rows: list[AvailabilityRow] = []
    judged = [(ref, ref.key, None) for ref in refs] + [
        (ref, key, len(instance_keys)) for key, (ref, instance_keys) in services.items()
    ]
    for ref, key, instances in judged:
        target, source = sla_target(declared[ref.key], ws.config.availability)
        figures = []
        for w in windows:
            s = stats[w][key]
            result = sla_verdict(s.lower_percent, s.upper_percent, s.coverage_percent, target)
            verdict = result.status or (Status.PASS if result.ok else Status.FAIL)
            figures.append(
                WindowFigures(
                    w,
                    s.lower_percent,
                    s.upper_percent,
                    s.coverage_percent,
                    verdict,
                    s.outage_count,
                    s.down_ms / 60000,
                    s.p95_bounds(),
                )
            )
        s_long = stats[longest][key]
        rows.append(
            AvailabilityRow(
                ref.region.id,
                ref.system.id,
                key,
                ref.system.criticality.value,
                target,
                source,
                tuple(figures),
                s_long.outages,
                s_long.last_sample_at,
                instances,
            )
        )
    return AvailabilityTable(at, rows, beat.rounds, beat.coverage_percent, beat.last_round_at)

"""Use cases the CLI and the agent share: load everything the user wrote, then scan into the store.

Everything a user wrote is loaded and validated before the store is opened, so bad input changes nothing.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from scanner import __version__
from scanner.catalog import ControlCatalog, control_files, load_catalog
from scanner.config import Config, load_config
from scanner.engine import Plan, Selection, build_plan, gather_facts, judge_all
from scanner.errors import InputError, Problem
from scanner.fileio import DiskFull, disk_full_reason
from scanner.inventory import Inventory, ScopedTargets, check_scope, inventory_paths, load_inventory
from scanner.probes.base import Probe, ProbeContext, TrustSettings
from scanner.results import ControlInfo, FindingRecord, RunMeta, RunSummary, SystemInfo
from scanner.waivers import Waivers, load_waivers

if TYPE_CHECKING:  # the store (SQLAlchemy) is imported only by the commands that open it
    from sqlalchemy import Engine


@dataclass(frozen=True)
class Workspace:
    """Everything a scan is judged by, validated."""

    config: Config
    inventory: Inventory
    catalog: ControlCatalog
    waivers: Waivers
    config_digest: str


def load_workspace(config_path: Path, fact_names: Mapping[str, frozenset[str]]) -> Workspace:
    """Load config, inventory, controls and waivers; raise one InputError listing every problem found."""
    config = load_config(config_path)
    problems: list[Problem] = []
    inventory: Inventory | None = None
    catalog: ControlCatalog | None = None
    try:
        inventory = load_inventory(inventory_paths(config))
    except InputError as exc:
        problems.extend(exc.problems)
    try:
        catalog = load_catalog(
            control_files(config.controls, config.base_dir), probe_facts=fact_names, overrides=config.control_params
        )
    except InputError as exc:
        problems.extend(exc.problems)
    for bundle in config.tls.ca_bundles:
        if not config.resolve(bundle).is_file():
            problems.append(
                Problem(config.source, None, None, f"tls.ca_bundles: file not found: {bundle}", "fix the path")
            )
    waivers = Waivers()
    if inventory is not None and catalog is not None:
        try:
            waivers = load_waivers(
                [config.resolve(p) for p in config.waivers], set(catalog.controls), set(inventory.systems)
            )
        except InputError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputError(problems)
    assert inventory is not None and catalog is not None
    digest = hashlib.sha256(config_path.read_bytes()).hexdigest()
    return Workspace(config, inventory, catalog, waivers, digest)


def check_selection(ws: Workspace, selection: Selection) -> None:
    """A --region/--system/--control/--family that names nothing is a user error, not an empty scan."""
    problems = []
    checks = [
        ("region", selection.regions, set(ws.inventory.regions)),
        ("system", selection.systems, set(ws.inventory.systems)),
        ("control", selection.controls, set(ws.catalog.controls)),
        ("family", selection.families, {c.spec.family for c in ws.catalog.controls.values()}),
    ]
    for label, wanted, known in checks:
        for item in sorted((wanted or set()) - known):
            problems.append(
                Problem(None, None, None, f"unknown {label} '{item}'", f"known: {', '.join(sorted(known)) or 'none'}")
            )
    if problems:
        raise InputError(problems)


def probe_context(config: Config) -> ProbeContext:
    trust = TrustSettings(
        use_system_store=config.tls.use_system_store,
        ca_bundles=tuple(config.resolve(p) for p in config.tls.ca_bundles),
    )
    return ProbeContext(
        trust=trust, max_workers=config.max_workers, allowed_networks=tuple(config.scope.allowed_networks)
    )


def store_probes(
    engine: Engine, config: Config, now: Callable[[], datetime], kinds: Collection[str] | None = None
) -> dict[str, Probe]:
    """Probe kinds whose facts come from the store: `sla` (availability measured from stored samples). With `kinds`
    (the plan's probe kinds), only those planned: a scan without availability controls does not import them."""
    from scanner.probes.registry import STORE_KINDS

    if kinds is not None and not STORE_KINDS & set(kinds):
        return {}
    from scanner.store.availability import SlaProvider

    return {SlaProvider.kind: SlaProvider(engine, config.availability, now)}


def volatile_facts(probes: Mapping[str, Probe]) -> frozenset[str]:
    """The facts the probes declare volatile (FactSpec.volatile): readings kept as evidence, not digested."""
    return frozenset(spec.name for probe in probes.values() for spec in probe.facts if spec.volatile)


def plan_scan(
    ws: Workspace, selection: Selection, probe_protocols: Mapping[str, frozenset[str]]
) -> tuple[Plan, ScopedTargets]:
    check_selection(ws, selection)
    scoped = check_scope(ws.inventory, list(ws.config.scope.allowed_networks))
    return build_plan(ws.inventory, ws.catalog, scoped, ws.config, selection, probe_protocols), scoped


@dataclass(frozen=True)
class ScanResult:
    summary: RunSummary
    records: list[FindingRecord]


class RunAbandoned(Exception):
    """The run was gathered but not stored: whoever scheduled it no longer owns it (the reason is the message)."""


def run_scan(
    ws: Workspace,
    plan: Plan,
    probes: Mapping[str, Probe],
    selection: Selection,
    progress: Callable[[str, int], None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    agent_id: str = "",
    on_run_started: Callable[[int], None] | None = None,
    abandon: Callable[[], str | None] | None = None,
) -> ScanResult:
    """Probe, judge and store one run. A crash or Ctrl-C leaves the run `interrupted`, never half-counted.

    The agent passes its id (recorded on the run), learns the run id through `on_run_started`, and through
    `abandon` says why the run must not be stored after all (its slot's lease went to another agent): the run
    is then ended `interrupted` with that reason and RunAbandoned raised.
    """
    from scanner.store import repo
    from scanner.store.db import keep_room_to_end_run, open_store
    from scanner.store.retry import retry_locked

    engine = open_store(ws.config.resolved_store_url())
    probes = {**store_probes(engine, ws.config, now, plan.targets.keys()), **probes}  # a caller's own kind wins
    host = socket.gethostname()
    meta = run_meta(ws, plan, selection, host, agent_id)
    started = now()
    try:
        retry_locked(lambda: repo.mark_interrupted_runs(engine, host))  # locks: another scan or the agent writes
        run_id = retry_locked(lambda: repo.start_run(engine, meta, started))
    except Exception as exc:
        full = disk_full_reason(exc)
        engine.dispose()
        if full is None:
            raise
        raise DiskFull(f"{full}; no run was started (free space where the store is: {_store_place(ws)})") from exc
    keep_room_to_end_run(engine)  # so that a full disk later still lets this run be marked interrupted
    try:
        if on_run_started is not None:
            on_run_started(run_id)
        facts = gather_facts(plan, probes, probe_context(ws.config), progress)
        records = judge_all(plan, facts, ws.waivers, started, volatile_facts(probes))
        why = abandon() if abandon is not None else None
        if why is not None:
            retry_locked(lambda: repo.end_run(engine, run_id, repo.INTERRUPTED, why))
            raise RunAbandoned(why)
        finished = now()
        summary = retry_locked(lambda: repo.complete_run(engine, run_id, records, finished))
    except KeyboardInterrupt:
        retry_locked(lambda: repo.end_run(engine, run_id, repo.INTERRUPTED, "interrupted by the user (Ctrl-C)"))
        raise
    except RunAbandoned:
        raise
    except BaseException as exc:
        full = disk_full_reason(exc)
        if full is None:
            aborted = f"run aborted: {exc!r}"
            retry_locked(lambda: repo.end_run(engine, run_id, repo.INTERRUPTED, aborted))
            raise
        raise _ended_by_full_disk(engine, run_id, full, _store_place(ws)) from exc
    finally:
        engine.dispose()
    return ScanResult(summary, records)


def _store_place(ws: Workspace) -> str:
    url = ws.config.resolved_store_url()
    return url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else "the database server"


def _ended_by_full_disk(engine: Engine, run_id: int, full: str, place: str) -> DiskFull:
    """Mark the run `interrupted` with the disk-full reason (nothing of it was stored) and say so in one line."""
    from scanner.store import repo
    from scanner.store.retry import retry_locked

    try:
        retry_locked(lambda: repo.end_run(engine, run_id, repo.INTERRUPTED, f"{full}; none of its findings stored"))
        state = f"run #{run_id} ended interrupted, none of its findings stored"
    except Exception:  # still full: the next scan marks the run of this ended process interrupted
        state = f"run #{run_id} could not even be marked interrupted; the next scan will mark it"
    return DiskFull(f"{full}; {state} (free space where the store is: {place})")


def run_meta(ws: Workspace, plan: Plan, selection: Selection, host: str, agent_id: str = "") -> RunMeta:
    """What a run is judged by (tool version, digests, control and system descriptions)."""
    return RunMeta(
        tool_version=__version__,
        catalog_digest=ws.catalog.digest,
        inventory_digest=ws.inventory.digest,
        config_digest=ws.config_digest,
        selection=selection.as_dict(),
        regions=plan.regions,
        host=host,
        pid=os.getpid(),
        agent_id=agent_id,
        controls=tuple(
            ControlInfo(
                control_id=c.id,
                title=c.spec.title,
                family=c.spec.family,
                severity=c.spec.severity.value,
                rationale=c.spec.rationale.strip(),
                remediation=c.spec.remediation.strip(),
                references=c.spec.references.model_dump(),
            )
            for c in ws.catalog.controls.values()
        ),
        systems=tuple(
            SystemInfo(
                system_id=system.id,
                region_id=region.id,
                region_name=region.name,
                name=system.name,
                owner=system.owner,
                criticality=system.criticality.value,
                fragile=system.fragile,
            )
            for region, system in ws.inventory.systems.values()
        ),
    )

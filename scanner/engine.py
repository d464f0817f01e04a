"""One scan: plan → probe → check → records. The store and the terminal are the caller's business."""

from __future__ import annotations

import traceback
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence, Set
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from scanner.catalog import Control, ControlCatalog
from scanner.checks.verdict import Verdict, could_not_assess, judge
from scanner.config import Config
from scanner.inventory import EndpointRef, Inventory, ScopedTargets, System
from scanner.models import Status
from scanner.probes.base import (
    SYSTEM_LEVEL,
    Politeness,
    Probe,
    ProbeContext,
    ProbeError,
    ProbeErrorReason,
    ProbeFacts,
    ProbeOutcome,
    Target,
)
from scanner.results import FindingRecord
from scanner.textsafe import clean_text, clean_value
from scanner.waivers import Waivers


@dataclass(frozen=True)
class Selection:
    """Narrows a run: every given set must contain the item. None means everything."""

    regions: frozenset[str] | None = None
    systems: frozenset[str] | None = None
    controls: frozenset[str] | None = None
    families: frozenset[str] | None = None

    def wants_endpoint(self, ref: EndpointRef) -> bool:
        return (self.regions is None or ref.region.id in self.regions) and (
            self.systems is None or ref.system.id in self.systems
        )

    def wants_control(self, control: Control) -> bool:
        return (self.controls is None or control.id in self.controls) and (
            self.families is None or control.spec.family in self.families
        )

    def as_dict(self) -> dict[str, list[str] | None]:
        return {k: sorted(v) if v is not None else None for k, v in self.__dict__.items()}


SYSTEM_ENDPOINT_ID = "*"  # endpoint id of findings judged once per system


@dataclass(frozen=True)
class PlannedCheck:
    control: Control
    ref: EndpointRef  # for a system-level control: the system's first endpoint

    @property
    def endpoint_id(self) -> str:
        return SYSTEM_ENDPOINT_ID if self.control.system_level else self.ref.endpoint.key_id

    @property
    def key(self) -> str:
        return f"{self.ref.system.id}/{self.endpoint_id}"


@dataclass(frozen=True)
class Plan:
    checks: tuple[PlannedCheck, ...]
    targets: Mapping[str, tuple[Target, ...]]  # probe kind → targets
    unresolved: Mapping[str, str]  # endpoint key → why it has no address

    @property
    def regions(self) -> list[str]:
        return sorted({c.ref.region.id for c in self.checks})


def politeness_for(system: System, config: Config) -> Politeness:
    """Config defaults, then the system's own settings; a fragile system never gets more than the fragile caps."""
    base, own = config.politeness, system.politeness
    timing = own.timing if own is not None and own.timing is not None else base.timing
    concurrency = own.max_concurrency if own is not None and own.max_concurrency else base.max_concurrency
    timeout = own.timeout_s if own is not None and own.timeout_s else base.timeout_s
    if system.fragile:
        timing = min(timing, base.fragile_timing)
        concurrency = min(concurrency, base.fragile_max_concurrency)
    return Politeness(
        timing=timing,
        max_concurrency=concurrency,
        timeout_s=timeout,
        fragile=system.fragile,
        own_concurrency=own is not None and own.max_concurrency is not None,
        cipher_enumeration=not system.fragile or base.fragile_cipher_enumeration,
    )


def declared_data(
    ref: EndpointRef,
    system_level: bool,
    addresses: Sequence[str] = (),
    host_ports: Mapping[str, set[int]] | None = None,
) -> dict[str, Any]:
    return {
        "system": ref.system.model_dump(mode="json", exclude={"endpoints"}),
        "endpoint": None if system_level else ref.endpoint.model_dump(mode="json"),
        "endpoints": [e.model_dump(mode="json") for e in ref.system.endpoints],
        "addresses": sorted(set(addresses)),  # every in-scope address of the system (system-level targets)
        # address → the ports the system declares on it (system-level targets): probes that must touch only
        # declared host:port pairs use this rather than every port of the system on every host
        "host_ports": {a: sorted(p) for a, p in sorted((host_ports or {}).items())},
    }


def endpoint_target(ref: EndpointRef, address: str, politeness: Politeness) -> Target:
    """The probe's view of one declared, scope-checked endpoint (the one place a Target is built from it)."""
    return Target(
        key=ref.key,
        system_id=ref.system.id,
        address=address,
        port=ref.endpoint.port,
        protocol=ref.endpoint.protocol.value,
        server_name=ref.endpoint.server_name or (ref.endpoint.host if ref.endpoint.host != address else None),
        politeness=politeness,
        declared=declared_data(ref, False),
    )


def build_plan(
    inventory: Inventory,
    catalog: ControlCatalog,
    scoped: ScopedTargets,
    config: Config,
    selection: Selection,
    probe_protocols: Mapping[str, frozenset[str]],
) -> Plan:
    """Which controls apply to which endpoints (or systems), and which targets each probe kind must look at."""
    checks: list[PlannedCheck] = []
    targets: dict[str, dict[str, Target]] = defaultdict(dict)
    controls = [c for c in catalog.controls.values() if selection.wants_control(c)]
    unresolved = dict(scoped.unresolved)
    for ref in inventory.endpoints():
        if not selection.wants_endpoint(ref):
            continue
        first_of_system = ref.endpoint is ref.system.endpoints[0]
        for control in controls:
            if (control.system_level and not first_of_system) or not control.applies(ref):
                continue
            check = PlannedCheck(control, ref)
            checks.append(check)
            kind = control.spec.probe
            politeness = politeness_for(ref.system, config)
            if control.system_level:
                system_addresses = [scoped.addresses[k] for k in _system_keys(ref) if k in scoped.addresses]
                first_address = system_addresses[0] if system_addresses else ""
                host_ports: dict[str, set[int]] = defaultdict(set)
                for endpoint in ref.system.endpoints:
                    ep_address = scoped.addresses.get(f"{ref.system.id}/{endpoint.key_id}")
                    if ep_address is not None:
                        host_ports[ep_address].add(endpoint.port)
                if SYSTEM_LEVEL in probe_protocols.get(kind, frozenset()):
                    targets[kind][check.key] = Target(
                        key=check.key,
                        system_id=ref.system.id,
                        address=first_address,
                        port=0,
                        protocol=SYSTEM_LEVEL,
                        politeness=politeness,
                        declared=declared_data(ref, True, system_addresses, host_ports),
                    )
                continue
            address = scoped.addresses.get(ref.key)
            if address is None or ref.endpoint.protocol.value not in probe_protocols.get(kind, frozenset()):
                continue
            targets[kind][ref.key] = endpoint_target(ref, address, politeness)
    return Plan(
        checks=tuple(checks),
        targets={k: tuple(v.values()) for k, v in targets.items()},
        unresolved=unresolved,
    )


def _system_keys(ref: EndpointRef) -> list[str]:
    return [f"{ref.system.id}/{e.key_id}" for e in ref.system.endpoints]


ProgressFn = Callable[[str, int], None]  # (probe kind finished, number of targets)


def gather_facts(
    plan: Plan, probes: Mapping[str, Probe], ctx: ProbeContext, progress: ProgressFn | None = None
) -> dict[str, dict[str, ProbeOutcome]]:
    """Run every probe kind over its targets, the kinds concurrently, except on strict systems (one kind at a time
    there). A probe's crash becomes errors, not a crash."""

    def run(kind: str, targets: Sequence[Target]) -> dict[str, ProbeOutcome]:
        probe = probes.get(kind)
        if probe is None:
            err = ProbeError(ProbeErrorReason.INTERNAL, f"no probe of kind '{kind}' is available")
            return {t.key: err for t in targets}
        try:
            result = probe.gather(targets, ctx)
        except Exception:
            crash = f"probe '{kind}' crashed: {traceback.format_exc(limit=3)}"
            crashed = clean_outcome(ProbeError(ProbeErrorReason.INTERNAL, crash))
            return {t.key: crashed for t in targets}
        missing = ProbeError(ProbeErrorReason.INTERNAL, f"probe '{kind}' returned no outcome for this endpoint")
        return {t.key: clean_outcome(result.get(t.key, missing)) for t in targets}

    # A strict system (fragile, or with its own max_concurrency) is probed by one probe kind at a time, so its
    # limit holds across kinds too: one lane runs the kinds one after another over all strict systems, beside the
    # other systems' kinds, which run at once. A kind enters the lane once its shared run is over: a probe never
    # gathers twice at once (its own caps, e.g. nmap processes, hold per call).
    shared = {kind: [t for t in targets if not t.politeness.strict] for kind, targets in plan.targets.items()}
    strict: dict[str, Future[dict[str, ProbeOutcome]]] = {
        kind: Future() for kind, targets in plan.targets.items() if any(t.politeness.strict for t in targets)
    }
    facts: dict[str, dict[str, ProbeOutcome]] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(plan.targets)) + 1) as pool:
        futures = {kind: pool.submit(run, kind, targets) for kind, targets in shared.items() if targets}

        def strict_lane() -> None:
            pending = list(strict)
            try:
                while pending:
                    ready = [k for k in pending if k not in futures or futures[k].done()]
                    if not ready:
                        wait([futures[k] for k in pending], return_when=FIRST_COMPLETED)
                        continue
                    kind = ready[0]
                    pending.remove(kind)
                    strict[kind].set_result(run(kind, [t for t in plan.targets[kind] if t.politeness.strict]))
            except BaseException as exc:  # never leave a kind unanswered: the caller waits on every one
                for rest in strict.values():
                    if not rest.done():
                        rest.set_exception(exc)
                raise

        if strict:
            pool.submit(strict_lane)
        for kind, targets in plan.targets.items():
            found = futures[kind].result() if kind in futures else {}
            if kind in strict:
                found |= strict[kind].result()
            facts[kind] = {t.key: found[t.key] for t in targets}  # every target, in the plan's order
            if progress is not None:
                progress(kind, len(targets))
    return facts


def _apply_waiver(verdict: Verdict, check: PlannedCheck, waivers: Waivers, now: datetime) -> Verdict:
    if verdict.status is not Status.FAIL:
        return verdict
    system = check.ref.system
    waiver = waivers.find(check.control.id, system.id, check.endpoint_id, frozenset(system.tags))
    if waiver is None:
        return verdict
    evidence = {**verdict.evidence, "waiver": waiver.as_evidence(now)}
    if waiver.active(now):
        msg = f"waived until {waiver.expires} by {waiver.approved_by}: {waiver.reason} — finding: {verdict.message}"
        return replace(
            verdict, status=Status.WAIVED, message=msg, evidence={**evidence, "waiver_expires": str(waiver.expires)}
        )
    msg = f"{verdict.message} (waiver expired on {waiver.expires}: the finding counts again; it was approved by {waiver.approved_by})"
    return replace(verdict, message=msg, evidence=evidence)


def clean_outcome(outcome: ProbeOutcome) -> ProbeOutcome:
    """The boundary for target text in a scan: every fact and every probe error text is cleaned once, here, before
    anything judges, stores, exports, renders or prints it (scanner/textsafe.py says what cleaning means)."""
    if isinstance(outcome, ProbeError):
        return ProbeError(outcome.reason, clean_text(outcome.detail))
    return ProbeFacts(clean_value(outcome.facts))


def judge_all(
    plan: Plan,
    facts: Mapping[str, Mapping[str, ProbeOutcome]],
    waivers: Waivers,
    now: datetime,
    volatile: Set[str] = frozenset(),
) -> list[FindingRecord]:
    """Pure: every planned check gets exactly one record. `volatile`: the fact names probes declare volatile
    (FactSpec.volatile), marked on each record's evidence so the store leaves them out of the verdict digest."""
    records: list[FindingRecord] = []
    for check in plan.checks:
        control, ref = check.control, check.ref
        outcome = facts.get(control.spec.probe, {}).get(check.key)
        if not control.system_level and ref.key in plan.unresolved:
            verdict = could_not_assess(control.rule, plan.unresolved[ref.key])
        elif outcome is None:
            what = "systems" if control.system_level else f"{ref.endpoint.protocol.value} endpoints"
            verdict = could_not_assess(control.rule, f"the '{control.spec.probe}' probe cannot look at {what}")
        elif isinstance(outcome, ProbeError):
            verdict = could_not_assess(control.rule, outcome.message())
        else:
            try:
                verdict = judge(control.rule, outcome.facts, control.params, now)
            except Exception:  # a bug in judging one check must not lose the run's other findings
                verdict = could_not_assess(
                    control.rule, f"internal error while judging: {traceback.format_exc(limit=3)}"
                )
        verdict = _apply_waiver(verdict, check, waivers, now)
        records.append(
            FindingRecord(
                control_id=control.id,
                family=control.spec.family,
                severity=control.spec.severity.value,
                region_id=ref.region.id,
                system_id=ref.system.id,
                endpoint_key=check.key,
                criticality=ref.system.criticality.value,
                status=verdict.status,
                message=verdict.message,
                evidence=verdict.evidence,
                outcome=verdict.outcome,
                volatile=tuple(k for k in verdict.evidence if k in volatile),
            )
        )
    return records

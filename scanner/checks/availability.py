"""Check types of the AVL controls. Each has three outcomes: pass, fail, and *inconclusive* — the measurements
cannot decide (too little coverage, no latency samples, instances not sampled lately), which is `error`, never a
guess."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from scanner.checks.registry import CheckResult, CheckType
from scanner.models import Status


def _pct(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") + " %"


def _duration(seconds: float) -> str:
    """A duration as people say it: 45 s, 10 min, 7.2 h (no "0.0 min", no "10.0 min")."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 120:
        return f"{minutes:.1f}".rstrip("0").rstrip(".") + " min"
    return f"{minutes / 60:.1f}".rstrip("0").rstrip(".") + " h"


def sla_verdict(lower: float | None, upper: float | None, coverage: float | None, target: float | None) -> CheckResult:
    """pass if lower ≥ target; fail if upper < target; otherwise inconclusive (the unknown time decides)."""
    if target is None:
        return CheckResult(False, ("no SLA target for this system (config availability.sla_targets)",), Status.ERROR)
    if lower is None or upper is None or coverage is None:
        return CheckResult(
            False, ("inconclusive: nothing left to measure (the window is all maintenance)",), Status.ERROR
        )
    figures = f"measured {_pct(lower)}–{_pct(upper)}, coverage {_pct(coverage)}, target {_pct(target)}"
    if lower >= target:
        return CheckResult(True, (f"availability at least {_pct(lower)} ≥ target {_pct(target)} ({figures})",))
    if upper < target:
        return CheckResult(False, (f"availability at most {_pct(upper)} < target {_pct(target)} ({figures})",))
    return CheckResult(False, (f"inconclusive: coverage {_pct(coverage)} ({figures})",), Status.ERROR)


def _sla_window(facts: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> CheckResult:
    basis = facts.get("sla.basis")
    if basis == "instance":
        return CheckResult(
            False,
            (
                "one of the system's redundant instances: the SLA is judged for the service as a whole (up while any "
                "instance answers), at system level",
            ),
            Status.NOT_APPLICABLE,
        )
    if basis == "none":
        return CheckResult(
            False,
            ("fewer than 2 redundant instances declared (availability.instances): the SLA is judged per endpoint",),
            Status.NOT_APPLICABLE,
        )
    result = sla_verdict(
        facts.get("sla.lower_percent"),
        facts.get("sla.upper_percent"),
        facts.get("sla.coverage_percent"),
        facts.get("sla.target_percent"),
    )
    extra: list[str] = []
    outages = facts.get("sla.outage_count") or 0
    if outages and result.status is None:
        window = facts.get("sla.window")
        within = f" in the last {window}" if window else ""
        longest = facts.get("sla.longest_outage_seconds")
        if isinstance(longest, int | float) and not isinstance(longest, bool):
            extra.append(f"{outages} outage(s){within}, the longest {_duration(float(longest))}")
        else:
            extra.append(f"{outages} outage(s){within}")
    if basis == "service":
        n = facts.get("sla.instances_declared")
        of = f"{n} instances" if isinstance(n, int) else "its instances"
        extra.append(f"judged as a service of {of}: up while any answers, down only while all are down")
    return CheckResult(result.ok, (*result.reasons, *extra), result.status) if extra else result


def _latency_p95(facts: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> CheckResult:
    budget = facts.get("sla.latency_budget_ms")
    n = facts.get("sla.latency_samples") or 0
    low, high = facts.get("sla.latency_p95_low_ms"), facts.get("sla.latency_p95_high_ms")
    if budget is None:
        return CheckResult(
            False, ("no latency budget declared (availability.latency_budget_ms)",), Status.NOT_APPLICABLE
        )
    if n < int(params["min_samples"]):
        return CheckResult(False, (f"inconclusive: {n} latency sample(s), need {params['min_samples']}",), Status.ERROR)
    if low is None:
        return CheckResult(False, (f"inconclusive: no p95 latency could be computed from {n} samples",), Status.ERROR)
    if high is not None and high <= budget:
        return CheckResult(True, (f"p95 latency ≤ {high:g} ms within budget {budget} ms ({n} samples)",))
    if low >= budget:
        shown = f"above {low:g} ms" if high is None else f"between {low:g} and {high:g} ms"
        return CheckResult(False, (f"p95 latency is {shown}, over the budget of {budget} ms ({n} samples)",))
    shown = f"above {low:g} ms" if high is None else f"between {low:g} and {high:g} ms"
    return CheckResult(
        False,
        (f"inconclusive: p95 latency is {shown} and the budget of {budget} ms lies in that range ({n} samples)",),
        Status.ERROR,
    )


def _redundancy(facts: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> CheckResult:
    declared = int(facts.get("sla.instances_declared") or 0)
    sites = int(facts.get("sla.sites_declared") or 0)
    min_instances, min_sites = int(params["min_instances"]), int(params["min_sites"])
    if declared < min_instances or sites < min_sites:
        return CheckResult(
            False,
            (f"{declared} instance(s) at {sites} site(s) declared; need ≥ {min_instances} at ≥ {min_sites} sites",),
        )
    rows = facts.get("sla.instances") or []
    down = [f"{r['endpoint']}@{r['site']}" for r in rows if r.get("state") == "down"]
    unknown = [f"{r['endpoint']}@{r['site']}" for r in rows if r.get("state") not in ("up", "down")]
    if down:
        return CheckResult(False, (f"instance(s) not answering: {', '.join(down)}",))
    if unknown:
        return CheckResult(False, (f"inconclusive: no recent sample of {', '.join(unknown)}",), Status.ERROR)
    return CheckResult(True, (f"{declared} instances at {sites} sites, all answering",))


AVAILABILITY_CHECK_TYPES: dict[str, CheckType] = {
    "sla_window": CheckType(
        name="sla_window",
        probe="sla",
        facts=frozenset(
            {
                "sla.basis",
                "sla.instances_declared",
                "sla.window",
                "sla.target_percent",
                "sla.target_source",
                "sla.lower_percent",
                "sla.upper_percent",
                "sla.coverage_percent",
                "sla.measured_seconds",
                "sla.maintenance_seconds",
                "sla.up_seconds",
                "sla.down_seconds",
                "sla.unknown_seconds",
                "sla.outage_count",
                "sla.longest_outage_seconds",
                "sla.outages",
            }
        ),
        params={},
        fn=_sla_window,
        description="Measured availability bounds against the SLA target: pass, fail or inconclusive (error).",
    ),
    "latency_p95": CheckType(
        name="latency_p95",
        probe="sla",
        facts=frozenset(
            {"sla.latency_budget_ms", "sla.latency_samples", "sla.latency_p95_low_ms", "sla.latency_p95_high_ms"}
        ),
        params={"min_samples": 30},
        fn=_latency_p95,
        description="p95 response time of up samples within the system's declared budget.",
    ),
    "redundancy": CheckType(
        name="redundancy",
        probe="sla",
        facts=frozenset({"sla.instances_declared", "sla.sites_declared", "sla.instances"}),
        params={"min_instances": 2, "min_sites": 2},
        fn=_redundancy,
        description="Enough instances at enough sites are declared, and each answered its latest sample.",
    ),
}

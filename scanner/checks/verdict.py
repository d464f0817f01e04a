"""From facts (or a probe error) to a Verdict: the one place judgement happens."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from scanner.checks.assertions import (
    OPERATORS,
    TRANSFORMS,
    AllNode,
    AnyNode,
    AssertionRuntimeError,
    EvalContext,
    Leaf,
    Node,
    NotNode,
    ParamRef,
    placeholders,
    render_message,
)
from scanner.checks.registry import CheckType
from scanner.models import Status

MAX_EVIDENCE_ITEM = 4000  # characters of one fact kept as evidence


@dataclass(frozen=True)
class Verdict:
    status: Status
    message: str
    evidence: dict[str, Any]
    # How each comparison of the rule came out, without the value compared ("fact lte 5: true"): with the status
    # and the evidence that is not volatile, what the verdict depends on (the store's verdict digest). A reading
    # that moves every scan (clock skew) changes the verdict only when it crosses the policy.
    outcome: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    """The judging part of a control: an assertion tree or a Python check type, plus its messages."""

    assertion: Node | None
    check_type: CheckType | None
    when: Node | None
    pass_message: str | None
    fail_message: str | None

    def judged_fact_names(self) -> set[str]:
        """The facts the verdict is decided by (the assertion or check type; not `when`, not messages)."""
        names: set[str] = set()
        if self.assertion is not None:
            names |= self.assertion.fact_names()
        if self.check_type is not None:
            names |= set(self.check_type.facts)
        return names

    def fact_names(self) -> set[str]:
        names = self.judged_fact_names()
        if self.when is not None:
            names |= self.when.fact_names()
        for template in (self.pass_message, self.fail_message):
            names |= {n for n in placeholders(template or "") if n != "reasons" and not n.startswith("params.")}
        return names


def _trim(value: Any) -> Any:
    text = repr(value)
    if len(text) <= MAX_EVIDENCE_ITEM:
        return value
    if isinstance(value, list):
        return [*value[:50], f"… {len(value) - 50} more"]
    return text[:MAX_EVIDENCE_ITEM] + "…"


def evidence_of(rule: Rule, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The facts the verdict rests on, trimmed: what an auditor needs to re-judge it."""
    return {name: _trim(facts.get(name)) for name in sorted(rule.fact_names())}


WITHHELD_SUFFIX = ".withheld"  # a probe's `<namespace>.withheld` fact: {fact name: why it was not gathered}


def withheld_reasons(names: set[str], facts: Mapping[str, Any]) -> dict[str, str]:
    """Those of `names` that the probe deliberately did not gather, with its reason for each."""
    found: dict[str, str] = {}
    for name in sorted(names):
        withheld = facts.get(name.split(".", 1)[0] + WITHHELD_SUFFIX)
        if isinstance(withheld, Mapping) and name in withheld:
            found[name] = str(withheld[name])
    return found


def _withheld_verdict(withheld: Mapping[str, str], evidence: dict[str, Any]) -> Verdict:
    reasons = "; ".join(dict.fromkeys(withheld.values()))
    return Verdict(Status.ERROR, f"could not assess: {reasons}", {**evidence, "withheld": dict(withheld)})


def _leaves(node: Node | None) -> Iterator[Leaf]:
    if isinstance(node, Leaf):
        yield node
    elif isinstance(node, AllNode | AnyNode):
        for child in node.children:
            yield from _leaves(child)
    elif isinstance(node, NotNode):
        yield from _leaves(node.child)


def _leaf_outcome(leaf: Leaf, ctx: EvalContext) -> str:
    operand = leaf.operand
    if isinstance(operand, ParamRef):
        if operand.name not in ctx.params:
            return "error"
        operand = ctx.params[operand.name]
    raw = ctx.facts.get(leaf.fact)
    check = OPERATORS[leaf.op].check
    try:
        if leaf.op == "exists":
            return str(check(raw, operand)).lower()
        if raw is None:
            return "unknown"
        value = TRANSFORMS[leaf.transform](raw, ctx.now) if leaf.transform else raw
        return str(bool(check(value, operand))).lower()
    except (AssertionRuntimeError, TypeError, ValueError):
        return "error"


def comparison_outcome(rule: Rule, ctx: EvalContext) -> tuple[str, ...]:
    """Each comparison of the rule (its `when`, then its assertion), with the limit it compared against and
    whether it held: true, false, unknown (no value) or error. Every comparison is evaluated on its own (no
    short-circuit), so the outcome says which side of the policy every compared value is on."""
    out: list[str] = []
    for part, node in (("when", rule.when), ("assert", rule.assertion)):
        for leaf in _leaves(node):
            operand = leaf.operand
            shown = (
                f"param {operand.name}={ctx.params.get(operand.name)!r}"
                if isinstance(operand, ParamRef)
                else (getattr(operand, "pattern", None) or repr(operand))
            )
            transform = f" ({leaf.transform})" if leaf.transform else ""
            out.append(f"{part}: {leaf.fact}{transform} {leaf.op} {shown}: {_leaf_outcome(leaf, ctx)}")
    return tuple(out)


def judge(rule: Rule, facts: Mapping[str, Any], params: Mapping[str, Any], now: datetime) -> Verdict:
    """Judge one control on one endpoint's facts. Pure: same inputs, same verdict.

    A fact the probe withheld (listed in its `<namespace>.withheld` fact) makes the verdict `error` with the
    probe's reason, whatever the assertion would say of its null value. The verdict carries the outcome of
    each of the rule's comparisons (`Verdict.outcome`)."""
    ctx = EvalContext(facts=facts, params=params, now=now)
    verdict = _judge(rule, facts, ctx)
    if rule.assertion is None and rule.when is None:
        return verdict
    return replace(verdict, outcome=comparison_outcome(rule, ctx))


def _judge(rule: Rule, facts: Mapping[str, Any], ctx: EvalContext) -> Verdict:
    evidence = evidence_of(rule, facts)
    try:
        if rule.when is not None:
            when_withheld = withheld_reasons(rule.when.fact_names(), facts)
            if when_withheld:
                return _withheld_verdict(when_withheld, evidence)
            applies = rule.when.evaluate(ctx)
            if applies.unknown:  # not knowing whether a control applies is not "does not apply"
                return Verdict(Status.ERROR, "could not assess: " + "; ".join(applies.reasons), evidence)
            if not applies.ok:
                return Verdict(Status.NOT_APPLICABLE, "not applicable: " + "; ".join(applies.reasons), evidence)
        withheld = withheld_reasons(rule.judged_fact_names(), facts)
        if withheld:
            return _withheld_verdict(withheld, evidence)
        if rule.check_type is not None:
            try:
                result = rule.check_type.fn(facts, ctx.params, ctx.now)
            except Exception as exc:  # a site's check type is foreign code: its crash is `error`, not a pass
                name = rule.check_type.name
                return Verdict(Status.ERROR, f"could not assess: check type {name} raised {exc!r}", evidence)
            if result.status in (Status.ERROR, Status.NOT_APPLICABLE):
                prefix = "could not assess: " if result.status is Status.ERROR else "not applicable: "
                return Verdict(result.status, prefix + "; ".join(result.reasons), evidence)
            ok, reasons = result.ok, result.reasons
        else:
            assert rule.assertion is not None
            outcome = rule.assertion.evaluate(ctx)
            ok, reasons = outcome.ok, outcome.reasons
            if outcome.unknown:
                return Verdict(Status.ERROR, "could not assess: " + "; ".join(reasons), evidence)
    except AssertionRuntimeError as exc:
        return Verdict(Status.ERROR, f"could not assess: {exc}", evidence)
    template = rule.pass_message if ok else rule.fail_message
    message = render_message(template, ctx, reasons) if template else "; ".join(reasons)
    return Verdict(Status.PASS if ok else Status.FAIL, message, evidence)


def could_not_assess(rule: Rule, detail: str) -> Verdict:
    """The verdict for a control whose facts could not be gathered. Counts against compliance."""
    return Verdict(Status.ERROR, f"could not assess: {detail}", {"probe_error": detail})

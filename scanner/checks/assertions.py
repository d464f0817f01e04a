"""The assertion language of controls: a small, safe tree of comparisons over documented facts.

No `eval`: an assertion is YAML data compiled once at load time into a tree of nodes (one table of
operators, one of transforms). Regexes are compiled at load, fact names are checked against the
probe's documented facts, and every comparison explains itself so a failed check produces a readable
message ("tls.protocols has TLSv1.0, TLSv1.1; must have none of SSLv2, SSLv3, TLSv1.0, TLSv1.1").

    all: [ ... ]          every child holds          any: [ ... ]   at least one child holds
    not: { ... }          the child does not hold
    {fact: NAME, [of: TRANSFORM,] OPERATOR: OPERAND, [explain: TEXT (may name {fact.name} / {params.name})]}
                          a comparison; OPERAND may be {param: NAME}; `explain` replaces the generated reason
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scanner.checks.versions import Version
from scanner.saferegex import MAX_PATTERN_LENGTH, MAX_SUBJECT_LENGTH, SafePattern, UnsafePatternError, compile_safe

PathKey = tuple[str | int, ...]
MAX_REGEX_LENGTH = MAX_PATTERN_LENGTH
MAX_MATCH_INPUT = MAX_SUBJECT_LENGTH  # longest string a `matches` looks at


class AssertionSyntaxError(Exception):
    """An assertion that cannot be compiled. `path` is relative to the assertion's root."""

    def __init__(self, path: PathKey, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.path = path
        self.message = message
        self.hint = hint


class AssertionRuntimeError(Exception):
    """A fact had a type the operator cannot compare: the check is `error`, never pass."""


@dataclass(frozen=True)
class EvalContext:
    facts: Mapping[str, Any]
    params: Mapping[str, Any]
    now: datetime


@dataclass(frozen=True)
class Outcome:
    ok: bool
    reasons: tuple[str, ...]  # why it failed (for a fail) or what held (for a pass)
    # The result rests on a fact that is unknown: neither true nor false. `not` and `any` keep it unknown
    # (so "not (unknown)" can never become a pass), and the verdict is `error` (could not assess).
    unknown: bool = False


@dataclass(frozen=True)
class ParamRef:
    name: str


def _fmt(value: Any, limit: int = 8) -> str:
    if isinstance(value, list | tuple | set | frozenset):
        items = [_fmt(v) for v in list(value)[:limit]]
        more = f", … (+{len(value) - limit})" if len(value) > limit else ""
        return ("[" + ", ".join(items) + more + "]") if items else "none"
    if isinstance(value, float):
        return f"{value:.1f}"
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "…"


# ---- transforms (`of:`) -------------------------------------------------------------------------


def _parse_time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise AssertionRuntimeError(f"expected a date-time, got {_fmt(value)}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise AssertionRuntimeError(f"not an ISO-8601 date-time: {_fmt(value)}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _days_until(value: Any, now: datetime) -> float:
    return (_parse_time(value) - now).total_seconds() / 86400


def _days_since(value: Any, now: datetime) -> float:
    return (now - _parse_time(value)).total_seconds() / 86400


def _length(value: Any, now: datetime) -> int:
    if not isinstance(value, list | str | dict):
        raise AssertionRuntimeError(f"length of a non-list value {_fmt(value)}")
    return len(value)


def _version(value: Any, now: datetime) -> Version:
    try:
        return Version(str(value))
    except ValueError as exc:
        raise AssertionRuntimeError(str(exc)) from None


def _lower(value: Any, now: datetime) -> Any:
    if isinstance(value, list):
        return [str(v).lower() for v in value]
    return str(value).lower()


TRANSFORMS: dict[str, Callable[[Any, datetime], Any]] = {
    "days_until": _days_until,  # date-time → days from now until it (negative when past)
    "days_since": _days_since,  # date-time → days since it (negative when in the future)
    "length": _length,  # list or string → its length
    "version": _version,  # version string → comparable version
    "lower": _lower,  # string or list of strings → lower case
}


# ---- operators ----------------------------------------------------------------------------------


def _as_list(value: Any, op: str) -> list[Any]:
    if not isinstance(value, list):
        raise AssertionRuntimeError(f"'{op}' needs a list fact, got {_fmt(value)}")
    return value


def _ordered(op: str, cmp: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def check(value: Any, operand: Any) -> bool:
        if isinstance(value, Version):
            operand = Version(str(operand))
        elif isinstance(value, bool) or not isinstance(value, int | float):
            raise AssertionRuntimeError(f"'{op}' needs a number, got {_fmt(value)}")
        elif isinstance(value, float) and math.isnan(value):
            raise AssertionRuntimeError(f"'{op}' got NaN")
        return cmp(value, operand)

    return check


def _matches(value: Any, pattern: SafePattern) -> bool:
    if not isinstance(value, str):
        raise AssertionRuntimeError(f"'matches' needs a string, got {_fmt(value)}")
    return pattern.search(value) is not None  # RE2: linear time, subject truncated to MAX_MATCH_INPUT


@dataclass(frozen=True)
class Operator:
    check: Callable[[Any, Any], bool]
    words: str  # how the expectation reads: "must be at least"
    operand: str  # kind of operand: "any", "list", "number", "regex", "bool", "scalar"
    offenders: Callable[[Any, Any], Any] | None = None  # for list operators: which items broke it


OPERATORS: dict[str, Operator] = {
    "equals": Operator(lambda v, o: bool(v == o), "must equal", "any"),
    "not_equals": Operator(lambda v, o: bool(v != o), "must not equal", "any"),
    "in": Operator(lambda v, o: v in o, "must be one of", "list"),
    "not_in": Operator(lambda v, o: v not in o, "must not be one of", "list"),
    "contains": Operator(lambda v, o: o in _as_list(v, "contains"), "must contain", "scalar"),
    "any_of": Operator(lambda v, o: any(x in o for x in _as_list(v, "any_of")), "must have at least one of", "list"),
    "all_of": Operator(
        lambda v, o: all(x in _as_list(v, "all_of") for x in o),
        "must have all of",
        "list",
        lambda v, o: [x for x in o if x not in v],
    ),
    "none_of": Operator(
        lambda v, o: not any(x in o for x in _as_list(v, "none_of")),
        "must have none of",
        "list",
        lambda v, o: [x for x in v if x in o],
    ),
    "lt": Operator(_ordered("lt", lambda v, o: bool(v < o)), "must be less than", "number"),
    "lte": Operator(_ordered("lte", lambda v, o: bool(v <= o)), "must be at most", "number"),
    "gt": Operator(_ordered("gt", lambda v, o: bool(v > o)), "must be more than", "number"),
    "gte": Operator(_ordered("gte", lambda v, o: bool(v >= o)), "must be at least", "number"),
    "matches": Operator(_matches, "must match", "regex"),
    "any_match": Operator(
        lambda v, o: any(_matches(x, o) for x in _as_list(v, "any_match")), "must have an item matching", "regex"
    ),
    "none_match": Operator(
        lambda v, o: not any(_matches(x, o) for x in _as_list(v, "none_match")),
        "must have no item matching",
        "regex",
        lambda v, o: [x for x in v if _matches(x, o)],
    ),
    "exists": Operator(lambda v, o: (v is not None) == o, "must be known", "bool"),
}


# ---- nodes --------------------------------------------------------------------------------------


class Node:
    def evaluate(self, ctx: EvalContext) -> Outcome:
        raise NotImplementedError  # abstract; every concrete node overrides it

    def fact_names(self) -> set[str]:
        raise NotImplementedError  # abstract; every concrete node overrides it


@dataclass(frozen=True)
class AllNode(Node):
    children: tuple[Node, ...]

    def evaluate(self, ctx: EvalContext) -> Outcome:
        # Stops at the first child that fails, so authors order children from precondition to detail and the
        # message names the first thing wrong ("no TLS offered"), not every consequence of it.
        held: list[str] = []
        for child in self.children:
            r = child.evaluate(ctx)
            if not r.ok:
                return r
            held.extend(r.reasons)
        return Outcome(True, tuple(held))

    def fact_names(self) -> set[str]:
        return set().union(*(c.fact_names() for c in self.children))


@dataclass(frozen=True)
class AnyNode(Node):
    children: tuple[Node, ...]

    def evaluate(self, ctx: EvalContext) -> Outcome:
        results = [c.evaluate(ctx) for c in self.children]
        for r in results:
            if r.ok:
                return r
        unknown = any(r.unknown for r in results)
        return Outcome(False, (" or ".join("; ".join(r.reasons) for r in results),), unknown)

    def fact_names(self) -> set[str]:
        return set().union(*(c.fact_names() for c in self.children))


@dataclass(frozen=True)
class NotNode(Node):
    child: Node

    def evaluate(self, ctx: EvalContext) -> Outcome:
        r = self.child.evaluate(ctx)
        if r.unknown:
            return r
        return Outcome(not r.ok, tuple(f"not ({reason})" for reason in r.reasons))

    def fact_names(self) -> set[str]:
        return self.child.fact_names()


@dataclass(frozen=True)
class Leaf(Node):
    fact: str
    op: str
    operand: Any  # literal, compiled regex, or ParamRef
    transform: str | None = None
    explain: str | None = None  # the author's words for a failure, instead of the generated reason

    def _operand(self, ctx: EvalContext) -> Any:
        if isinstance(self.operand, ParamRef):
            if self.operand.name not in ctx.params:
                raise AssertionRuntimeError(f"parameter '{self.operand.name}' has no value")
            return ctx.params[self.operand.name]
        return self.operand

    def evaluate(self, ctx: EvalContext) -> Outcome:
        operator = OPERATORS[self.op]
        operand = self._operand(ctx)
        raw = ctx.facts.get(self.fact)
        label = self.fact if self.transform is None else f"{self.fact} ({self.transform})"
        shown_operand = operand.pattern if isinstance(operand, SafePattern) else operand
        if self.op == "exists":
            ok = operator.check(raw, operand)
            state = "known" if raw is not None else "unknown"
            return Outcome(ok, (self._explained(ctx) if self.explain and not ok else f"{label} is {state}",))
        if raw is None:
            # Fail closed: an unknown fact never satisfies a comparison.
            return Outcome(
                False,
                (
                    self._explained(ctx)
                    if self.explain
                    else f"{label} is unknown; {operator.words} {_fmt(shown_operand)}",
                ),
                unknown=True,
            )
        value = TRANSFORMS[self.transform](raw, ctx.now) if self.transform else raw
        try:
            ok = operator.check(value, operand)
        except (TypeError, ValueError) as exc:
            raise AssertionRuntimeError(f"{label}: {exc}") from None
        if ok:
            return Outcome(True, (f"{label} is {_fmt(value)}",))
        if self.explain:
            return Outcome(False, (self._explained(ctx),))
        shown = operator.offenders(value, operand) if operator.offenders else value
        verb = "has" if operator.offenders else "is"
        return Outcome(False, (f"{label} {verb} {_fmt(shown)}; {operator.words} {_fmt(shown_operand)}",))

    def fact_names(self) -> set[str]:
        named = {n for n in placeholders(self.explain or "") if not n.startswith("params.") and n != "reasons"}
        return {self.fact} | named

    def _explained(self, ctx: EvalContext) -> str:
        """The author's `explain`, with any {fact.name} / {params.name} in it filled in."""
        return render_message(self.explain or "", ctx, ())


# ---- compiler -----------------------------------------------------------------------------------

_BRANCHES = ("all", "any", "not")


def compile_assertion(
    data: Any,
    *,
    known_facts: Collection[str] | None = None,
    params: Mapping[str, Any] | None = None,
    path: PathKey = (),
) -> Node:
    """Compile YAML data into a node tree, or raise AssertionSyntaxError naming the path and the fix."""
    if not isinstance(data, dict) or not data:
        raise AssertionSyntaxError(path, "an assertion must be a mapping", "use all:, any:, not: or {fact: …, op: …}")
    branch = [k for k in data if k in _BRANCHES]
    if branch:
        if len(data) != 1:
            raise AssertionSyntaxError(path, f"'{branch[0]}' must stand alone in its mapping", "nest it in all: [...]")
        key = branch[0]
        value = data[key]
        if key == "not":
            return NotNode(compile_assertion(value, known_facts=known_facts, params=params, path=(*path, "not")))
        if not isinstance(value, list) or not value:
            raise AssertionSyntaxError((*path, key), f"'{key}' needs a non-empty list of assertions")
        children = tuple(
            compile_assertion(item, known_facts=known_facts, params=params, path=(*path, key, i))
            for i, item in enumerate(value)
        )
        return AllNode(children) if key == "all" else AnyNode(children)
    return _compile_leaf(data, known_facts, params, path)


def _compile_leaf(
    data: dict[str, Any], known_facts: Collection[str] | None, params: Mapping[str, Any] | None, path: PathKey
) -> Leaf:
    if "fact" not in data:
        raise AssertionSyntaxError(
            path, f"unknown assertion keys {sorted(data)}", "a comparison needs 'fact:'; or use all:/any:/not:"
        )
    fact = data["fact"]
    if not isinstance(fact, str):
        raise AssertionSyntaxError((*path, "fact"), "'fact' must be a fact name such as tls.protocols")
    if known_facts is not None and fact not in known_facts:
        close = difflib.get_close_matches(fact, sorted(known_facts), n=4, cutoff=0.6)
        raise AssertionSyntaxError(
            (*path, "fact"),
            f"unknown fact '{fact}' for this control's probe",
            f"did you mean {' or '.join(close)}? `hcscan facts` lists them" if close else "`hcscan facts` lists them",
        )
    transform = data.get("of")
    if transform is not None and transform not in TRANSFORMS:
        raise AssertionSyntaxError(
            (*path, "of"), f"unknown transform '{transform}'", f"use one of {sorted(TRANSFORMS)}"
        )
    explain = data.get("explain")
    if explain is not None and not isinstance(explain, str):
        raise AssertionSyntaxError((*path, "explain"), "'explain' must be a sentence")
    for name in sorted(placeholders(explain or "")):
        if name.startswith("params."):
            known = params is None or name.removeprefix("params.") in params
        else:
            known = known_facts is None or name in known_facts
        if not known:
            raise AssertionSyntaxError(
                (*path, "explain"), f"explain refers to unknown {name!r}", "use {fact.name} or {params.name}"
            )
    ops = [k for k in data if k not in ("fact", "of", "explain")]
    unknown = [k for k in ops if k not in OPERATORS]
    if unknown:
        raise AssertionSyntaxError(
            (*path, unknown[0]), f"unknown operator '{unknown[0]}'", f"use one of: {', '.join(OPERATORS)}"
        )
    if len(ops) != 1:
        raise AssertionSyntaxError(
            path, f"a comparison needs exactly one operator, found {len(ops)}", "split it into all:"
        )
    op = ops[0]
    operand = _compile_operand(op, data[op], params, (*path, op))
    return Leaf(fact=fact, op=op, operand=operand, transform=transform, explain=explain)


def _compile_operand(op: str, raw: Any, params: Mapping[str, Any] | None, path: PathKey) -> Any:
    if isinstance(raw, dict):
        if set(raw) != {"param"} or not isinstance(raw["param"], str):
            raise AssertionSyntaxError(path, "an operand mapping must be {param: NAME}")
        if params is not None and raw["param"] not in params:
            raise AssertionSyntaxError(
                path, f"unknown parameter '{raw['param']}'", "declare it under the control's params:"
            )
        if OPERATORS[op].operand == "regex":
            raise AssertionSyntaxError(path, "regular expressions cannot come from parameters")
        return ParamRef(raw["param"])
    kind = OPERATORS[op].operand
    if kind == "list" and not isinstance(raw, list):
        raise AssertionSyntaxError(path, f"'{op}' needs a list", f"write {op}: [a, b]")
    if kind == "number" and (isinstance(raw, bool) or not isinstance(raw, int | float | str)):
        raise AssertionSyntaxError(path, f"'{op}' needs a number (or a version string with of: version)")
    if kind == "bool" and not isinstance(raw, bool):
        raise AssertionSyntaxError(path, f"'{op}' needs true or false")
    if kind == "scalar" and isinstance(raw, list | dict):
        raise AssertionSyntaxError(path, f"'{op}' needs a single value", "use all_of/any_of for several")
    if kind == "regex":
        if not isinstance(raw, str) or len(raw) > MAX_REGEX_LENGTH:
            raise AssertionSyntaxError(
                path, f"'{op}' needs a regular expression of at most {MAX_REGEX_LENGTH} characters"
            )
        try:
            return compile_safe(raw)  # RE2, so an admin's catastrophic pattern cannot hang a run
        except UnsafePatternError as exc:
            raise AssertionSyntaxError(
                path, f"invalid regular expression: {exc}", "RE2 syntax: no backreferences or look-around"
            ) from None
    return raw


_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_.\-]+)\}")


def placeholders(template: str) -> set[str]:
    """The names a message template refers to."""
    return set(_PLACEHOLDER.findall(template))


def render_message(template: str, ctx: EvalContext, reasons: Sequence[str]) -> str:
    """Fill `{fact.name}`, `{params.name}` and `{reasons}` in a control's message; nothing else is evaluated."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "reasons":
            return "; ".join(reasons)
        if name.startswith("params."):
            key = name.removeprefix("params.")
            return _fmt(ctx.params[key]) if key in ctx.params else m.group(0)
        if name in ctx.facts:
            return _fmt(ctx.facts[name])
        return m.group(0)

    return _PLACEHOLDER.sub(sub, template)

"""The assertion language of controls: a small, safe tree of comparisons over documented facts.

No `eval`: an assertion is YAML data compiled once at load time into a tree of nodes (one table of
operators, one of transforms). Regexes are compiled at load, fact names are checked against the
probe's documented facts, and every comparison explains itself so a failed check produces a readable
message ("tls.protocols has TLSv1.0, TLSv1.1; must have none of SSLv2, SSLv3, TLSv1.0, TLSv1.1").

    all: [ ... ]          every child holds          any: [ ... ]   at least one child holds
    not: { ... }          the child does not hold
    {fact: NAME, [of: TRANSFORM,] OPERATOR: OPERAND}
                          a comparison; OPERAND may be {param: NAME}

Any node (a comparison, or a mapping holding all:/any:/not:) may carry the author's words:
    explain: TEXT         why it fails, replacing the generated reason (inside `not`, why the `not` fails)
    unknown: TEXT         why it cannot be decided (a fact it needs is unknown: the verdict is `error`)
TEXT may name {fact.name} and {params.name}; in a comparison also {value} (the compared value, after `of:`,
formatted as it was compared), {limit} (the operand) and {offending} (the items that broke a none_of,
all_of or none_match).
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
    # The reasons are the author's words (explain/unknown), not generated from fact names: when an `any` fails,
    # the author's words of its children are what it says.
    authored: bool = False


@dataclass(frozen=True)
class ParamRef:
    name: str


UNKNOWN_VALUE = "unknown"  # how a {fact} that is null reads; shipped messages keep such facts in [optional] parts


def _fmt(value: Any, limit: int = 8) -> str:
    if isinstance(value, list | tuple | set | frozenset):
        items = [_fmt(v) for v in list(value)[:limit]]
        more = f", … (+{len(value) - limit})" if len(value) > limit else ""
        return ("[" + ", ".join(items) + more + "]") if items else "none"
    if isinstance(value, float):
        return _number(value, 1)
    if value is None:
        return UNKNOWN_VALUE
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "…"


def _number(value: float, decimals: int) -> str:
    """A float with at most `decimals` decimals and no trailing zeros: 30.0 → "30", 2.50 → "2.5"."""
    if not math.isfinite(value):
        return str(value)
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _fmt_compared(value: Any, operand: Any, check: Callable[[Any, Any], bool], ok: bool) -> str:
    """A compared number shown with just enough decimals that the shown value compares as the real one did.

    29.96 against "at least 30" fails; shown with one decimal it would read "30.0; must be at least 30"."""
    if isinstance(value, float) and math.isfinite(value) and not isinstance(operand, bool):
        for decimals in range(0, 7):
            shown = round(value, decimals)
            try:
                same = check(shown, operand) == ok
            except (AssertionRuntimeError, TypeError, ValueError):
                break
            if same and (decimals > 0 or shown == value or abs(value) >= 10):
                return _number(shown, decimals)
        return _number(value, 6)
    return _fmt(value)


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


@dataclass(frozen=True)
class Words:
    """The author's sentences for a node: why it fails (`explain`) and why it cannot be decided (`unknown`)."""

    explain: str | None = None
    unknown: str | None = None


NO_WORDS = Words()


class Node:
    words: Words = NO_WORDS

    def evaluate(self, ctx: EvalContext) -> Outcome:
        raise NotImplementedError  # abstract; every concrete node overrides it

    def fact_names(self) -> set[str]:
        raise NotImplementedError  # abstract; every concrete node overrides it

    def _worded(self, r: Outcome, ctx: EvalContext) -> Outcome:
        """A failed or undecided outcome in the author's words, when this node has them."""
        text = self.words.unknown if r.unknown else self.words.explain
        if r.ok or text is None:
            return r
        return Outcome(False, (render_message(text, ctx, ()),), r.unknown, authored=True)

    def _words_fact_names(self) -> set[str]:
        return {
            n
            for text in (self.words.explain, self.words.unknown)
            for n in placeholders(text or "")
            if not n.startswith("params.") and n not in _LEAF_NAMES
        }


@dataclass(frozen=True)
class AllNode(Node):
    children: tuple[Node, ...]
    words: Words = NO_WORDS

    def evaluate(self, ctx: EvalContext) -> Outcome:
        # Stops at the first child that fails, so authors order children from precondition to detail and the
        # message names the first thing wrong ("no TLS offered"), not every consequence of it.
        held: list[str] = []
        for child in self.children:
            r = child.evaluate(ctx)
            if not r.ok:
                return self._worded(r, ctx)
            held.extend(r.reasons)
        return Outcome(True, tuple(held))

    def fact_names(self) -> set[str]:
        return set().union(*(c.fact_names() for c in self.children)) | self._words_fact_names()


@dataclass(frozen=True)
class AnyNode(Node):
    children: tuple[Node, ...]
    words: Words = NO_WORDS

    def evaluate(self, ctx: EvalContext) -> Outcome:
        results = [c.evaluate(ctx) for c in self.children]
        for r in results:
            if r.ok:
                return r
        unknown = any(r.unknown for r in results)
        # Undecided: what could not be decided is the reason (a child that plainly failed says nothing more).
        shown = [r for r in results if r.unknown] if unknown else results
        shown = [r for r in shown if r.authored] or shown
        reasons = list(dict.fromkeys("; ".join(r.reasons) for r in shown))
        authored = all(r.authored for r in shown)
        return self._worded(Outcome(False, ("; and ".join(reasons),), unknown, authored), ctx)

    def fact_names(self) -> set[str]:
        return set().union(*(c.fact_names() for c in self.children)) | self._words_fact_names()


@dataclass(frozen=True)
class NotNode(Node):
    child: Node
    words: Words = NO_WORDS

    def evaluate(self, ctx: EvalContext) -> Outcome:
        r = self.child.evaluate(ctx)
        if r.unknown:
            return self._worded(r, ctx)
        if not r.ok:
            return Outcome(True, tuple(f"not ({reason})" for reason in r.reasons))
        # The child holds, so the `not` fails: the author's words for that are the `not`'s own explain, or the
        # explain written on its child (an author writing `not: {…, explain: …}` means this failure).
        text = self.words.explain or self.child.words.explain
        if text is not None:
            return Outcome(False, (self._render_child_words(text, ctx),), authored=True)
        return Outcome(False, tuple(f"it must not be that {reason}" for reason in r.reasons))

    def _render_child_words(self, text: str, ctx: EvalContext) -> str:
        if isinstance(self.child, Leaf) and text is self.child.words.explain:
            return self.child.render(text, ctx)
        return render_message(text, ctx, ())

    def fact_names(self) -> set[str]:
        return self.child.fact_names() | self._words_fact_names()


_LEAF_NAMES = frozenset(
    {"value", "limit", "offending"}
)  # placeholders a comparison's words may use besides facts and params


@dataclass(frozen=True)
class Leaf(Node):
    fact: str
    op: str
    operand: Any  # literal, compiled regex, or ParamRef
    transform: str | None = None
    words: Words = NO_WORDS

    def _operand(self, ctx: EvalContext) -> Any:
        if isinstance(self.operand, ParamRef):
            if self.operand.name not in ctx.params:
                raise AssertionRuntimeError(f"parameter '{self.operand.name}' has no value")
            return ctx.params[self.operand.name]
        return self.operand

    def _value(self, ctx: EvalContext) -> Any:
        raw = ctx.facts.get(self.fact)
        return TRANSFORMS[self.transform](raw, ctx.now) if self.transform and raw is not None else raw

    def render(self, text: str, ctx: EvalContext) -> str:
        """The author's words with {value} and {limit} (as compared) besides {fact.name} / {params.name}."""
        operand = self._operand(ctx)
        shown_operand = operand.pattern if isinstance(operand, SafePattern) else operand
        extra: dict[str, str] = {"limit": _fmt(shown_operand)}
        offenders = OPERATORS[self.op].offenders
        if "{offending}" in text:
            value = self._value(ctx)
            extra["offending"] = _fmt(offenders(value, operand) if offenders and isinstance(value, list) else value)
        if "{value}" in text:
            value = self._value(ctx)
            if self.op == "exists" or value is None:
                extra["value"] = _fmt(value)
            else:
                check = OPERATORS[self.op].check
                try:
                    ok = check(value, operand)
                except (AssertionRuntimeError, TypeError, ValueError):
                    extra["value"] = _fmt(value)
                else:
                    extra["value"] = _fmt_compared(value, operand, check, ok)
        return render_message(text, ctx, (), extra)

    def evaluate(self, ctx: EvalContext) -> Outcome:
        operator = OPERATORS[self.op]
        operand = self._operand(ctx)
        raw = ctx.facts.get(self.fact)
        label = self.fact if self.transform is None else f"{self.fact} ({self.transform})"
        shown_operand = operand.pattern if isinstance(operand, SafePattern) else operand
        if self.op == "exists":
            ok = operator.check(raw, operand)
            state = "known" if raw is not None else "not known"
            if not ok and self.words.explain:
                return Outcome(False, (self.render(self.words.explain, ctx),), authored=True)
            return Outcome(ok, (f"{label} is {state}",))
        if raw is None:
            # Fail closed: an unknown fact never satisfies a comparison; the verdict is could-not-assess.
            if self.words.unknown:
                return Outcome(False, (self.render(self.words.unknown, ctx),), unknown=True, authored=True)
            return Outcome(False, (f"{label} is not known (it {operator.words} {_fmt(shown_operand)})",), unknown=True)
        value = TRANSFORMS[self.transform](raw, ctx.now) if self.transform else raw
        try:
            ok = operator.check(value, operand)
        except (TypeError, ValueError) as exc:
            raise AssertionRuntimeError(f"{label}: {exc}") from None
        if ok:
            return Outcome(True, (f"{label} is {_fmt_compared(value, operand, operator.check, ok)}",))
        if self.words.explain:
            return Outcome(False, (self.render(self.words.explain, ctx),), authored=True)
        if operator.offenders:
            shown = _fmt(operator.offenders(value, operand))
            return Outcome(False, (f"{label} has {shown}; {operator.words} {_fmt(shown_operand)}",))
        shown = _fmt_compared(value, operand, operator.check, ok)
        return Outcome(False, (f"{label} is {shown}; {operator.words} {_fmt(shown_operand)}",))

    def fact_names(self) -> set[str]:
        return {self.fact} | self._words_fact_names()


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
        extra = [k for k in data if k not in _WORDS]
        if len(extra) != 1:
            raise AssertionSyntaxError(
                path,
                f"'{branch[0]}' must stand alone in its mapping (besides explain:/unknown:)",
                "nest it in all: [...]",
            )
        key = branch[0]
        value = data[key]
        words = _compile_words(data, known_facts, params, path, leaf=False)
        if key == "not":
            child = compile_assertion(value, known_facts=known_facts, params=params, path=(*path, "not"))
            return NotNode(child, words)
        if not isinstance(value, list) or not value:
            raise AssertionSyntaxError((*path, key), f"'{key}' needs a non-empty list of assertions")
        children = tuple(
            compile_assertion(item, known_facts=known_facts, params=params, path=(*path, key, i))
            for i, item in enumerate(value)
        )
        return AllNode(children, words) if key == "all" else AnyNode(children, words)
    return _compile_leaf(data, known_facts, params, path)


_WORDS = ("explain", "unknown")


def _compile_words(
    data: dict[str, Any],
    known_facts: Collection[str] | None,
    params: Mapping[str, Any] | None,
    path: PathKey,
    leaf: bool,
) -> Words:
    texts: dict[str, str] = {}
    for key in _WORDS:
        text = data.get(key)
        if text is None:
            continue
        if not isinstance(text, str) or not text.strip():
            raise AssertionSyntaxError((*path, key), f"'{key}' must be a sentence")
        for name in sorted(placeholders(text)):
            if name.startswith("params."):
                known = params is None or name.removeprefix("params.") in params
            elif name in _LEAF_NAMES:
                known = leaf
            else:
                known = known_facts is None or name in known_facts
            if not known:
                raise AssertionSyntaxError(
                    (*path, key),
                    f"{key} refers to unknown {name!r}",
                    "use {fact.name} or {params.name}" + (", {value} or {limit}" if leaf else ""),
                )
        texts[key] = text
    return Words(texts.get("explain"), texts.get("unknown"))


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
    words = _compile_words(data, known_facts, params, path, leaf=True)
    ops = [k for k in data if k not in ("fact", "of", *_WORDS)]
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
    return Leaf(fact=fact, op=op, operand=operand, transform=transform, words=words)


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
# An optional part of a message: "[…]" is left out when a fact it names is unknown; "[…|…]" then says the second.
_SECTION = re.compile(r"\[([^\[\]|]*)(?:\|([^\[\]]*))?\]")


def placeholders(template: str) -> set[str]:
    """The names a message template refers to."""
    return set(_PLACEHOLDER.findall(template))


def render_message(
    template: str, ctx: EvalContext, reasons: Sequence[str], extra: Mapping[str, str] | None = None
) -> str:
    """Fill `{fact.name}`, `{params.name}` and `{reasons}` in a control's message; nothing else is evaluated.

    A part in square brackets is kept only when every fact it names is known: "[; smallest DH group
    {tls.min_dh_bits} bits|; no DHE suites offered]" says the second text when tls.min_dh_bits is unknown."""
    extra = extra or {}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "reasons":
            return "; ".join(reasons)
        if name in extra:
            return extra[name]
        if name.startswith("params."):
            key = name.removeprefix("params.")
            return _fmt(ctx.params[key]) if key in ctx.params else m.group(0)
        if name in ctx.facts or "." in name:  # names are checked at load: a documented fact not recorded is unknown
            return _fmt(ctx.facts.get(name))
        return m.group(0)

    def section(m: re.Match[str]) -> str:
        body, otherwise = m.group(1), m.group(2) or ""
        names = [n for n in placeholders(body) if n != "reasons" and n not in extra and not n.startswith("params.")]
        chosen = body if all(ctx.facts.get(n) is not None for n in names) else otherwise
        return _PLACEHOLDER.sub(sub, chosen)

    # One pass over the template: a filled-in value (target text) is never read as a template again.
    parts: list[str] = []
    pos = 0
    for m in _SECTION.finditer(template):
        parts.append(_PLACEHOLDER.sub(sub, template[pos : m.start()]))
        parts.append(section(m))
        pos = m.end()
    parts.append(_PLACEHOLDER.sub(sub, template[pos:]))
    return "".join(parts)

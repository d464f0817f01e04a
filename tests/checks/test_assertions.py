"""The assertion language: every operator and transform, failure explanations, and load-time errors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from scanner.checks.assertions import (
    AssertionRuntimeError,
    AssertionSyntaxError,
    EvalContext,
    compile_assertion,
    render_message,
)
from scanner.checks.versions import Version

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
FACTS = {
    "tls.protocols": ["TLSv1.0", "TLSv1.2"],
    "tls.offered": True,
    "tls.min_dh_bits": 1024,
    "tls.leaf.not_after": "2026-12-02T12:00:00Z",
    "tls.leaf.subject": "CN=epj.region.test",
    "svc.version": "8.9p1",
    "tls.none": None,
}


def ev(data: dict[str, Any], facts: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> bool:
    node = compile_assertion(data, params=params)
    return node.evaluate(EvalContext(facts or FACTS, params or {}, NOW)).ok


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"fact": "tls.offered", "equals": True}, True),
        ({"fact": "tls.offered", "not_equals": True}, False),
        ({"fact": "tls.min_dh_bits", "in": [1024, 2048]}, True),
        ({"fact": "tls.min_dh_bits", "not_in": [1024]}, False),
        ({"fact": "tls.protocols", "contains": "TLSv1.2"}, True),
        ({"fact": "tls.protocols", "any_of": ["TLSv1.3"]}, False),
        ({"fact": "tls.protocols", "all_of": ["TLSv1.0", "TLSv1.2"]}, True),
        ({"fact": "tls.protocols", "none_of": ["SSLv3", "TLSv1.0"]}, False),
        ({"fact": "tls.min_dh_bits", "lt": 2048}, True),
        ({"fact": "tls.min_dh_bits", "lte": 1024}, True),
        ({"fact": "tls.min_dh_bits", "gt": 1024}, False),
        ({"fact": "tls.min_dh_bits", "gte": 2048}, False),
        ({"fact": "tls.leaf.subject", "matches": "^CN=epj\\."}, True),
        ({"fact": "tls.protocols", "any_match": "^TLSv1\\.[01]$"}, True),
        ({"fact": "tls.protocols", "none_match": "^SSL"}, True),
        ({"fact": "tls.none", "exists": False}, True),
        ({"fact": "tls.offered", "exists": True}, True),
        ({"fact": "tls.leaf.not_after", "of": "days_until", "gte": 30}, False),
        ({"fact": "tls.leaf.not_after", "of": "days_until", "gte": 9.9}, True),
        ({"fact": "tls.leaf.not_after", "of": "days_since", "lt": 0}, True),
        ({"fact": "tls.protocols", "of": "length", "equals": 2}, True),
        ({"fact": "svc.version", "of": "version", "gte": "8.9"}, True),
        ({"fact": "svc.version", "of": "version", "lt": "9.0p1"}, True),
        ({"fact": "tls.leaf.subject", "of": "lower", "matches": "cn=epj"}, True),
        ({"all": [{"fact": "tls.offered", "equals": True}, {"fact": "tls.min_dh_bits", "gte": 2048}]}, False),
        ({"any": [{"fact": "tls.offered", "equals": False}, {"fact": "tls.min_dh_bits", "gte": 1024}]}, True),
        ({"not": {"fact": "tls.offered", "equals": True}}, False),
    ],
)
def test_operators(data: dict[str, Any], expected: bool) -> None:
    assert ev(data) is expected


def test_unknown_fact_never_satisfies_a_comparison() -> None:
    # Fail closed: a null fact is not "less than" anything, nor "none of" anything.
    assert ev({"fact": "tls.none", "lt": 10}) is False
    assert ev({"fact": "tls.none", "none_of": ["x"]}) is False
    assert ev({"fact": "tls.missing", "not_equals": 3}) is False


def test_params_are_resolved_at_evaluation() -> None:
    data = {"fact": "tls.min_dh_bits", "gte": {"param": "floor"}}
    assert ev(data, params={"floor": 1024}) is True
    assert ev(data, params={"floor": 2048}) is False


def test_failure_explains_offending_items() -> None:
    node = compile_assertion({"fact": "tls.protocols", "none_of": ["SSLv3", "TLSv1.0", "TLSv1.1"]})
    out = node.evaluate(EvalContext(FACTS, {}, NOW))
    assert not out.ok
    assert out.reasons == ("tls.protocols has [TLSv1.0]; must have none of [SSLv3, TLSv1.0, TLSv1.1]",)


def test_type_mismatch_is_a_runtime_error_not_a_pass() -> None:
    node = compile_assertion({"fact": "tls.protocols", "gte": 3})
    with pytest.raises(AssertionRuntimeError):
        node.evaluate(EvalContext(FACTS, {}, NOW))
    node = compile_assertion({"fact": "tls.leaf.subject", "of": "days_until", "gte": 3})
    with pytest.raises(AssertionRuntimeError):
        node.evaluate(EvalContext(FACTS, {}, NOW))


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        ({"fact": "tls.x", "bogus": 1}, ("bogus",), "unknown operator 'bogus'"),
        ({"fact": "tls.x", "equals": 1, "gte": 2}, (), "exactly one operator"),
        ({"fact": "tls.x", "matches": "(unclosed"}, ("matches",), "invalid regular expression"),
        ({"fact": "tls.x", "matches": "a" * 600}, ("matches",), "at most 500"),
        ({"fact": "tls.x", "of": "sqrt", "gte": 1}, ("of",), "unknown transform"),
        ({"fact": "tls.x", "none_of": "TLSv1.0"}, ("none_of",), "needs a list"),
        ({"all": []}, ("all",), "non-empty list"),
        ({"all": [{"fact": "tls.x", "equals": 1}], "any": []}, (), "must stand alone"),
        ({"any": [{"fact": "tls.x", "exists": "yes"}]}, ("any", 0, "exists"), "true or false"),
        ({"fact": "tls.x", "gte": {"param": "nope"}}, ("gte",), "unknown parameter"),
        ({"fact": 3, "equals": 1}, ("fact",), "fact name"),
        ([], (), "must be a mapping"),
    ],
)
def test_syntax_errors_name_the_path(data: Any, path: tuple[Any, ...], words: str) -> None:
    with pytest.raises(AssertionSyntaxError) as info:
        compile_assertion(data, params={})
    assert info.value.path == path
    assert words in info.value.message


def test_unknown_fact_is_refused_at_load_with_suggestions() -> None:
    with pytest.raises(AssertionSyntaxError) as info:
        compile_assertion({"fact": "tls.protocol", "equals": 1}, known_facts={"tls.protocols", "tls.offered"})
    assert "unknown fact 'tls.protocol'" in info.value.message
    assert "tls.protocols" in info.value.hint


def test_render_message_fills_facts_params_and_reasons_only() -> None:
    ctx = EvalContext(FACTS, {"floor": 2048}, NOW)
    text = render_message("{tls.protocols} / {params.floor} / {reasons} / {__class__} / {tls.nothing}", ctx, ["r1"])
    assert text == "[TLSv1.0, TLSv1.2] / 2048 / r1 / {__class__} / unknown"


@pytest.mark.parametrize(
    ("a", "b"),
    [("1.2", "1.10"), ("8.9p1", "9.0p1"), ("1.0rc1", "1.0.1"), ("2.4.57 (Debian)", "2.4.58"), ("7.4p1", "7.4p2")],
)
def test_version_order(a: str, b: str) -> None:
    assert Version(a) < Version(b)
    assert Version("1.2") == Version("1.2.0")


def test_version_rejects_non_versions() -> None:
    with pytest.raises(ValueError):
        Version("banana")


def test_all_names_the_first_failure_and_explain_replaces_the_reason() -> None:
    node = compile_assertion(
        {
            "all": [
                {"fact": "tls.offered", "equals": False, "explain": "no TLS offered"},
                {"fact": "tls.min_dh_bits", "gte": 2048},
            ]
        }
    )
    out = node.evaluate(EvalContext(FACTS, {}, NOW))
    assert out == type(out)(False, ("no TLS offered",), authored=True)
    with pytest.raises(AssertionSyntaxError):
        compile_assertion({"fact": "tls.offered", "equals": True, "explain": ["not", "text"]})


def test_explain_names_facts_and_params_and_unknown_names_are_refused_at_load() -> None:
    node = compile_assertion(
        {"fact": "tls.min_dh_bits", "gte": {"param": "min_dh"}, "explain": "DH {tls.min_dh_bits} < {params.min_dh}"},
        known_facts=set(FACTS),
        params={"min_dh": 2048},
    )
    out = node.evaluate(EvalContext(FACTS, {"min_dh": 2048}, NOW))
    assert out.reasons == ("DH 1024 < 2048",)
    assert node.fact_names() == {"tls.min_dh_bits"}
    unknown_fact = compile_assertion({"fact": "tls.none", "exists": True, "explain": "missing: {tls.protocols}"})
    assert unknown_fact.evaluate(EvalContext(FACTS, {}, NOW)).reasons == ("missing: [TLSv1.0, TLSv1.2]",)
    with pytest.raises(AssertionSyntaxError, match=r"explain refers to unknown 'tls\.typo'"):
        compile_assertion({"fact": "tls.offered", "equals": True, "explain": "{tls.typo}"}, known_facts=set(FACTS))
    with pytest.raises(AssertionSyntaxError, match=r"explain refers to unknown 'params\.nope'"):
        compile_assertion({"fact": "tls.offered", "equals": True, "explain": "{params.nope}"}, params={})


def test_unknown_stays_unknown_through_not_and_any() -> None:
    """'not (unknown)' must never become a pass; the verdict is could-not-assess."""
    from scanner.checks.verdict import Rule, judge
    from scanner.models import Status

    negated = compile_assertion({"not": {"fact": "tls.missing", "any_of": ["TLSv1.0"]}})
    out = negated.evaluate(EvalContext(FACTS, {}, NOW))
    assert not out.ok and out.unknown
    either = compile_assertion({"any": [{"fact": "tls.missing", "gte": 1}, {"fact": "tls.offered", "equals": False}]})
    assert either.evaluate(EvalContext(FACTS, {}, NOW)).unknown
    assert judge(Rule(negated, None, None, None, None), FACTS, {}, NOW).status is Status.ERROR
    when_unknown = Rule(
        compile_assertion({"fact": "tls.offered", "equals": True}),
        None,
        compile_assertion({"fact": "tls.missing", "equals": True}),
        None,
        None,
    )
    verdict = judge(when_unknown, FACTS, {}, NOW)
    assert verdict.status is Status.ERROR and "tls.missing is not known" in verdict.message
    absent_is_a_failure = compile_assertion({"fact": "tls.missing", "exists": True, "explain": "no such thing"})
    out = absent_is_a_failure.evaluate(EvalContext(FACTS, {}, NOW))
    assert (out.ok, out.unknown, out.reasons) == (False, False, ("no such thing",))


# ---- the author's words (issue 12.5) ------------------------------------------------------------


def _out(data: dict[str, Any], facts: dict[str, Any], params: dict[str, Any] | None = None) -> Any:
    return compile_assertion(data, params=params).evaluate(EvalContext(facts, params or {}, NOW))


def test_unknown_words_say_why_it_could_not_be_decided_and_explain_why_it_failed() -> None:
    leaf = {
        "fact": "http.clock_skew_seconds",
        "lte": 5,
        "explain": "the clock is {value} s ahead; the limit is {limit} s",
        "unknown": "the server sends no Date header",
    }
    missing = _out(leaf, {"http.clock_skew_seconds": None})
    assert (missing.ok, missing.unknown, missing.reasons) == (False, True, ("the server sends no Date header",))
    ahead = _out(leaf, {"http.clock_skew_seconds": 12.0})
    assert (ahead.ok, ahead.unknown, ahead.reasons) == (False, False, ("the clock is 12 s ahead; the limit is 5 s",))
    # Without unknown: words, an unknown fact is said as unknown, never with the failure's words.
    bare = _out({"fact": "x.skew", "lte": 5, "explain": "too far ahead"}, {"x.skew": None})
    assert bare.unknown and bare.reasons == ("x.skew is not known (it must be at most 5)",)


@pytest.mark.parametrize(
    ("days", "op", "limit", "shown"),
    [
        (30.0, "gte", 30, "30"),  # not "30.0"
        (29.96, "gte", 30, "29.96"),  # one decimal would read "30.0", as if it passed "at least 30"
        (30.04, "lte", 30, "30.04"),
        (45.5, "gte", 30, "46"),  # far from the limit: whole numbers are enough
        (2.25, "lte", 5, "2.2"),
    ],
)
def test_value_is_shown_as_it_was_compared(days: float, op: str, limit: int, shown: str) -> None:
    out = _out({"fact": "d", op: limit, "explain": "{value} vs {limit}"}, {"d": days})
    node = compile_assertion({"fact": "d", op: limit})
    generated = node.evaluate(EvalContext({"d": days}, {}, NOW)).reasons[0]
    assert generated.startswith(f"d is {shown}")
    if not out.ok:
        assert out.reasons == (f"{shown} vs {limit}",)


def test_offending_names_the_items_that_broke_a_list_rule() -> None:
    out = _out(
        {"fact": "tls.protocols", "none_of": ["TLSv1.0", "TLSv1.1"], "explain": "deprecated: {offending}"}, FACTS
    )
    assert out.reasons == ("deprecated: [TLSv1.0]",)


def test_explain_inside_not_is_the_failure_of_the_not() -> None:
    inner = {"not": {"fact": "tls.offered", "equals": True, "explain": "TLS is offered on a plain port"}}
    assert _out(inner, FACTS).reasons == ("TLS is offered on a plain port",)
    own = {"not": {"fact": "tls.offered", "equals": True}, "explain": "the port must not speak TLS"}
    assert _out(own, FACTS).reasons == ("the port must not speak TLS",)
    generated = _out({"not": {"fact": "tls.offered", "equals": True}}, FACTS)
    assert generated.reasons == ("it must not be that tls.offered is true",)


def test_a_failing_any_says_its_childrens_own_words_and_may_have_its_own() -> None:
    dh = {
        "any": [
            {"fact": "tls.min_dh_bits", "exists": False},
            {"fact": "tls.min_dh_bits", "gte": 2048, "explain": "DH group of {value} bits; {limit} required"},
        ]
    }
    assert _out(dh, FACTS).reasons == ("DH group of 1024 bits; 2048 required",)
    assert _out({**dh, "explain": "weak DH"}, FACTS).reasons == ("weak DH",)
    undecided = _out({**dh, "unknown": "no DH data"}, {"tls.min_dh_bits": None} | {"x": 1})
    assert undecided.ok  # exists: false holds on an unknown fact: no DHE suites is fine
    both_unknown = {"any": [{"fact": "a", "equals": 1, "unknown": "a not seen"}, {"fact": "b", "equals": 1}]}
    out = _out({**both_unknown, "unknown": "neither a nor b was seen"}, {})
    assert (out.unknown, out.reasons) == (True, ("neither a nor b was seen",))
    assert _out(both_unknown, {}).reasons == ("a not seen",)


def test_all_may_carry_words_for_its_failure_and_its_unknown() -> None:
    node = {
        "all": [{"fact": "tls.offered", "equals": True}, {"fact": "tls.min_dh_bits", "gte": 2048}],
        "explain": "weak key exchange",
        "unknown": "the handshake was not recorded",
    }
    assert _out(node, FACTS).reasons == ("weak key exchange",)
    assert _out(node, {"tls.offered": None}).reasons == ("the handshake was not recorded",)
    assert _out(node, {"tls.offered": True, "tls.min_dh_bits": 4096}).ok


def test_words_are_checked_when_the_control_loads() -> None:
    with pytest.raises(AssertionSyntaxError, match=r"unknown refers to unknown 'tls\.typo'"):
        compile_assertion({"fact": "tls.offered", "equals": True, "unknown": "{tls.typo}"}, known_facts=set(FACTS))
    with pytest.raises(AssertionSyntaxError, match=r"explain refers to unknown 'value'"):
        compile_assertion({"all": [{"fact": "tls.offered", "equals": True}], "explain": "{value}"})
    with pytest.raises(AssertionSyntaxError, match="must be a sentence"):
        compile_assertion({"any": [{"fact": "tls.offered", "equals": True}], "unknown": ""})
    with pytest.raises(AssertionSyntaxError, match="must stand alone"):
        compile_assertion({"any": [{"fact": "tls.offered", "equals": True}], "fact": "tls.offered"})


def test_optional_parts_drop_or_replace_what_is_unknown() -> None:
    ctx = EvalContext({"tls.min_dh_bits": None, "tls.min_ecdh_bits": 253, "tls.hostname": "epj"}, {}, NOW)
    template = "ok[; DH {tls.min_dh_bits} bits|; no DHE][; ECDH {tls.min_ecdh_bits} bits][ (chain {tls.chain.error})]"
    assert render_message(template, ctx, ()) == "ok; no DHE; ECDH 253 bits"
    assert render_message("[{tls.hostname}|the declared name]", ctx, ()) == "epj"
    assert render_message("[{tls.chain.error}|the declared name]", ctx, ()) == "the declared name"


def test_a_value_from_the_target_is_never_read_as_a_template() -> None:
    hostile = "[{tls.secret}|x] {reasons} {params.token}"
    ctx = EvalContext({"tls.hostname": hostile, "tls.secret": "SECRET"}, {"token": "TOKEN"}, NOW)
    text = render_message("name [{tls.hostname}|none]; {tls.hostname}", ctx, ["r"])
    assert text == f"name {hostile}; {hostile}"
    assert "SECRET" not in text and "TOKEN" not in text

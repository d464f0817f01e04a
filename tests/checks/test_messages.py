"""Every shipped control's pass, fail and error messages read as sentences a hospital engineer understands.

The recorded facts come from the catalogue's own test cases (controls/tests/*.yaml), and from each passing case
with one judged fact made unknown at a time (what a probe that could not see something would record). Every
message is rendered through the real judge and must name no raw fact identifier (``tls.min_dh_bits``), show no
"None" and no placeholder for an unknown fact (the text a null {fact} renders as is swapped for a marker while
the messages are rendered, so the sentence word "unknown" stays allowed), no "30.0" where the comparison was made
against whole numbers, and no machine-shaped "not (…)". Each control must have been seen passing, failing and
could-not-assess.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from scanner.catalog import Control, ControlCatalog, control_files, load_catalog
from scanner.checks import assertions
from scanner.checks.verdict import judge
from scanner.models import Status
from scanner.probes.registry import fact_names
from scanner.resources import builtin_controls_dir

NOW = datetime(2026, 11, 23, tzinfo=UTC)
CATALOG: ControlCatalog = load_catalog(control_files(["builtin"], Path.cwd()), probe_facts=fact_names())
ALL_FACTS: frozenset[str] = frozenset().union(*fact_names().values())
UNRECORDED = "\u27e8unrecorded\u27e9"  # stands in for assertions.UNKNOWN_VALUE while the messages are rendered


def _cases() -> dict[str, list[tuple[str, dict[str, Any], dict[str, Any], datetime]]]:
    found: dict[str, list[tuple[str, dict[str, Any], dict[str, Any], datetime]]] = defaultdict(list)
    for path in sorted((builtin_controls_dir() / "tests").glob("*.yaml")):
        for case in yaml.safe_load(path.read_text(encoding="utf-8"))["cases"]:
            if case.get("probe_error") is not None:
                continue
            now = case.get("now") or NOW
            if isinstance(now, str):
                now = datetime.fromisoformat(now.replace("Z", "+00:00"))
            if now.tzinfo is None:
                now = now.replace(tzinfo=UTC)
            found[case["control"]].append((case["name"], dict(case.get("facts") or {}), case.get("params") or {}, now))
    return found


CASES = _cases()


def _verdicts(control: Control) -> list[tuple[str, Status, str]]:
    """(what was recorded, status, message) for every case of the control and its one-fact-unknown variants."""
    out: list[tuple[str, Status, str]] = []
    for name, facts, params, now in CASES.get(control.spec.id, []):
        merged = {**control.params, **params}
        verdict = judge(control.rule, facts, merged, now)
        out.append((name, verdict.status, verdict.message))
        if verdict.status is not Status.PASS:
            continue
        for fact in sorted(control.rule.fact_names()):
            if facts.get(fact) is None:
                continue
            blind = judge(control.rule, {**facts, fact: None}, merged, now)
            out.append((f"{name}, {fact} unknown", blind.status, blind.message))
    return out


def _problems(message: str) -> list[str]:
    found: list[str] = []
    named = sorted(f for f in ALL_FACTS if re.search(rf"(?<![\w.]){re.escape(f)}(?![\w])", message))
    if named:
        found.append(f"names raw facts {named}")
    if re.search(r"\bNone\b", message):
        found.append("shows None")
    if UNRECORDED in message or re.search(r"\bunknown (s|bits|days|h|hours)\b|; unknown\)", message):
        found.append("shows a placeholder for an unknown fact")
    if re.search(r"(?<![\w.])\d+\.0\b(?!\.)", message):
        found.append("shows a whole number as N.0")
    if "not (" in message or re.search(r"\{[\w.]+\}", message):
        found.append("reads as machine output (not (…) or an unfilled {placeholder})")
    return found


@pytest.mark.parametrize(
    "control_id",
    sorted(CATALOG.controls),
)
def test_every_message_reads_as_a_sentence(control_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(assertions, "UNKNOWN_VALUE", UNRECORDED)
    control = CATALOG.controls[control_id]
    verdicts = _verdicts(control)
    statuses = {status for _, status, _ in verdicts}
    missing = {Status.PASS, Status.FAIL, Status.ERROR} - statuses
    assert not missing, f"{control_id}: no recorded facts make it {sorted(s.value for s in missing)}"
    bad = [
        f"{name} → {status.value}: {message!r}: {', '.join(problems)}"
        for name, status, message in verdicts
        if (problems := _problems(message))
    ]
    assert not bad, "\n".join(bad)


def test_the_checker_catches_what_the_issue_reported() -> None:
    """The rule above flags each message the issue quoted (so a pass of this file means something)."""
    reported = [
        "the server sent no usable Date header, so its clock cannot be compared: skew unknown s",
        "tls.min_dh_bits is known or tls.min_dh_bits is 1024; must be at least 2048",
        "No weak suites; smallest DH unknown bits",
        "tls.leaf.not_after (days_until) is 30.0; must be at least 30",
        "too few events (0 of 0 complete; 0 malformed; unknown)",
        f"Certificate covers {UNRECORDED}",
        "http.redirects_to_https is true",
        "not (tls.offered is true)",
    ]
    for message in reported:
        assert _problems(message), message
    assert not _problems("DICOM over TLS; an unknown calling AE title is refused (C-ECHO 1.2 s)")

"""Lifecycle labels: every (previous status, current status) pair, as a pure function and through the store."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text

from scanner.models import Status
from scanner.results import FindingRecord, RunMeta
from scanner.store import lifecycle, repo

T0 = datetime(2026, 11, 1, tzinfo=UTC)
P, F, E, N, W = "pass", "fail", "error", "not_applicable", "waived"
STATUSES = (P, F, E, N, W)

# The whole matrix, written out (not computed): previous status (None = first judged) → current → label.
# Where a pass or not-applicable turns into a fail, the label is `new` unless the fingerprint failed before.
EXPECTED: dict[str | None, dict[str, str]] = {
    None: {P: "new", F: "new", E: "new", N: "new", W: "new"},  # a first sighting is new, whatever its status
    P: {P: "unchanged", F: "new", E: "unassessed", N: "no_longer_applicable", W: "waived"},
    F: {P: "fixed", F: "unchanged", E: "unassessed", N: "no_longer_applicable", W: "waived"},
    E: {P: "reassessed", F: "confirmed", E: "unchanged", N: "no_longer_applicable", W: "waived"},
    N: {P: "unchanged", F: "new", E: "unassessed", N: "unchanged", W: "waived"},
    W: {P: "fixed", F: "reactivated", E: "unassessed", N: "no_longer_applicable", W: "waived"},
}
# Same pairs when an earlier run judged the fingerprint fail (or waived): only pass/n.a. → fail changes.
FAILED_BEFORE = {(P, F): "regressed", (N, F): "regressed"}


def test_every_status_is_in_the_matrix() -> None:
    assert set(STATUSES) == {s.value for s in Status}
    assert set(EXPECTED) == {None, *STATUSES}
    assert all(set(row) == set(STATUSES) for row in EXPECTED.values())


@pytest.mark.parametrize("previous", [None, *STATUSES])
@pytest.mark.parametrize("current", STATUSES)
def test_label_of_every_transition(previous: str | None, current: str) -> None:
    assert lifecycle.change_label(previous, current) == EXPECTED[previous][current]
    before = (
        FAILED_BEFORE.get((previous, current), EXPECTED[previous][current]) if previous else EXPECTED[None][current]
    )
    assert lifecycle.change_label(previous, current, failed_before=True) == before
    assert lifecycle.change_label(previous, current) in lifecycle.LABELS


def test_no_label_claims_a_fix_it_did_not_see() -> None:
    fixed = {(p, c) for p, row in EXPECTED.items() for c, label in row.items() if label == "fixed"}
    assert fixed == {(F, P), (W, P)}
    unchanged = {(p, c) for p, row in EXPECTED.items() for c, label in row.items() if label == "unchanged"}
    assert unchanged == {(P, P), (F, F), (E, E), (N, N), (N, P)}
    new = {(p, c) for p, row in EXPECTED.items() for c, label in row.items() if label == "new"}
    assert new == {(None, P), (None, F), (None, E), (None, N), (None, W), (P, F), (N, F)}


def _meta() -> RunMeta:
    return RunMeta("0.1.0", "c" * 64, "i" * 64, "f" * 64, {}, ["r1"], "scanner-host", 1)


def _rec(system: str, status: str, message: str | None = None) -> FindingRecord:
    return FindingRecord(
        "TLS-01", "tls", "high", "r1", system, f"{system}/web", "high", Status(status), message or status, {"s": status}
    )


def _run(engine: Engine, records: list[FindingRecord], n: int) -> tuple[int, dict[str, int]]:
    at = T0 + timedelta(days=n)
    run_id = repo.start_run(engine, _meta(), at)
    return run_id, repo.complete_run(engine, run_id, records, at + timedelta(minutes=1)).changes


def _labels_of_run(engine: Engine, run_id: int) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(text("select system_id, change from finding where run_id = :r"), {"r": run_id}).all()
    return {str(system): str(change) for system, change in rows}


def test_the_store_writes_every_transition_label(engine: Engine) -> None:
    """One fingerprint per pair: run 1 judges the previous status, run 2 the current one (both backends)."""
    pairs = [(p, c) for p in STATUSES for c in STATUSES]
    first = [_rec(f"s-{p}-{c}", p) for p, c in pairs]
    _, first_changes = _run(engine, first, 0)
    assert first_changes == dict(Counter(EXPECTED[None][p] for p, _ in pairs))
    run_id, changes = _run(engine, [_rec(f"s-{p}-{c}", c) for p, c in pairs], 1)
    assert changes == dict(Counter(EXPECTED[p][c] for p, c in pairs))
    # A finding row is written only when the verdict changed; each carries its transition's label.
    written = _labels_of_run(engine, run_id)
    assert written == {f"s-{p}-{c}": EXPECTED[p][c] for p, c in pairs if p != c}


def test_failing_again_needs_an_earlier_failure(engine: Engine) -> None:
    """pass/n.a. → fail is `regressed` only after a real fail (or waived) verdict; an error is not one."""
    histories = {
        "f-p-f": (F, P, F),  # fixed, then failing again
        "w-p-f": (W, P, F),  # a waived failure was fixed, then fails again
        "f-n-f": (F, N, F),  # out of scope for a while, failing again
        "e-p-f": (E, P, F),  # never confirmed failing: a first failure
        "p-n-f": (P, N, F),
    }
    for n in range(3):
        _run(engine, [_rec(system, statuses[n], f"{system} {n}") for system, statuses in histories.items()], n)
    with engine.connect() as conn:
        last = conn.execute(text("select max(id) from scan_run")).scalar_one()
        rows = conn.execute(text("select system_id, times_reopened from finding_state")).all()
    reopened = {str(system): int(n) for system, n in rows}
    assert _labels_of_run(engine, int(last)) == {
        "f-p-f": "regressed",
        "w-p-f": "regressed",
        "f-n-f": "regressed",
        "e-p-f": "new",
        "p-n-f": "new",
    }
    assert reopened == {"f-p-f": 1, "w-p-f": 1, "f-n-f": 1, "e-p-f": 0, "p-n-f": 0}


def test_resolved_only_when_turning_compliant(engine: Engine) -> None:
    """`resolved_at` is set by fixed / reassessed, never by an error or a not-applicable verdict."""
    systems = {"fixed": (F, P), "reassessed": (E, P), "unassessed": (F, E), "n-a": (F, N), "confirmed": (E, F)}
    for n in range(2):
        _run(engine, [_rec(system, statuses[n]) for system, statuses in systems.items()], n)
    with engine.connect() as conn:
        resolved = {
            str(s): r is not None for s, r in conn.execute(text("select system_id, resolved_at from finding_state"))
        }
    assert resolved == {"fixed": True, "reassessed": True, "unassessed": False, "n-a": False, "confirmed": False}


def test_a_fix_that_does_not_hold_reopens_even_with_an_unassessed_run_between(engine: Engine) -> None:
    """fail → pass (fixed) → error (unassessed) → fail (confirmed): open again, reopened once."""
    for n, status in enumerate((F, P, E, F)):
        _run(engine, [_rec("flaky", status)], n)
    with engine.connect() as conn:
        resolved, reopened = conn.execute(
            text("select resolved_at, times_reopened from finding_state where system_id = 'flaky'")
        ).one()
    assert (resolved, reopened) == (None, 1)


def test_a_first_sighting_is_new_whatever_its_status(engine: Engine) -> None:
    """Issue 12.6: run #1 said "(24 new, 26 unchanged)" and exported first-run passes as `unchanged`."""
    from scanner.store import queries

    first = [_rec(f"first-{s}", s) for s in STATUSES]
    run_id, changes = _run(engine, first, 0)
    assert changes == {"new": len(STATUSES)}
    assert _labels_of_run(engine, run_id) == {f"first-{s}": "new" for s in STATUSES}
    assert {f.system_id: f.change for f in queries.latest_findings(engine)} == {f"first-{s}": "new" for s in STATUSES}
    # The next run sees them again unchanged, and a fingerprint seen for the first time then is new in its turn.
    _, again = _run(engine, [*first, _rec("later", P)], 1)
    assert again == {"unchanged": len(STATUSES) - 1, "waived": 1, "new": 1}  # a waived verdict stays `waived`

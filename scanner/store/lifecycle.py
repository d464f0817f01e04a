"""Finding lifecycle labels: how one fingerprint's verdict changed since the run that judged it before.

The label is stored on each `finding` row (`change`) and shown by reports. Every (previous, current) pair of
statuses has exactly one label, and no label claims more than the two verdicts show:

| previous → current              | label                  | meaning                                             |
|---------------------------------|------------------------|-----------------------------------------------------|
| (none) → any status             | new                    | first judged (a first sighting, whatever its status) |
| x → x (same status)             | unchanged              |                                                     |
| any other → waived              | waived                 | a failure covered by a waiver                       |
| pass / not_applicable → fail    | regressed, or new      | failing again (it failed before), or a first failure |
| waived → fail                   | reactivated            | the waiver expired or was withdrawn                 |
| error → fail                    | confirmed              | a failure newly confirmed (could not assess before) |
| fail / waived → pass            | fixed                  |                                                     |
| error → pass                    | reassessed             | could be assessed again, and passes (not "fixed")   |
| not_applicable → pass           | unchanged              | in scope again, and compliant                       |
| pass / fail / n.a. / waived → error | unassessed         | could no longer be assessed (not "fixed")           |
| pass / fail / error / waived → not_applicable | no_longer_applicable | (not "fixed")                         |
"""

from __future__ import annotations

from scanner.models import Status

NEW, UNCHANGED, FIXED, REGRESSED, WAIVED, REACTIVATED = (
    "new",
    "unchanged",
    "fixed",
    "regressed",
    "waived",
    "reactivated",
)
CONFIRMED, REASSESSED, UNASSESSED, NO_LONGER_APPLICABLE = (
    "confirmed",
    "reassessed",
    "unassessed",
    "no_longer_applicable",
)

LABELS: tuple[str, ...] = (
    NEW,
    UNCHANGED,
    FIXED,
    REGRESSED,
    WAIVED,
    REACTIVATED,
    CONFIRMED,
    REASSESSED,
    UNASSESSED,
    NO_LONGER_APPLICABLE,
)
# Labels a report lists under "what changed since the previous scan" (everything but unchanged and waived).
NOTABLE: tuple[str, ...] = (NEW, REGRESSED, REACTIVATED, CONFIRMED, FIXED, REASSESSED, UNASSESSED, NO_LONGER_APPLICABLE)
# Statuses that show the control really failed (a waiver covers a failure): "failed before" for `regressed`.
FAILED_STATUSES: frozenset[str] = frozenset({Status.FAIL.value, Status.WAIVED.value})

_PASS, _FAIL, _ERROR = Status.PASS.value, Status.FAIL.value, Status.ERROR.value
_NA, _WAIVED = Status.NOT_APPLICABLE.value, Status.WAIVED.value


def change_label(previous: str | None, status: str, failed_before: bool = False) -> str:
    """The lifecycle label of `status` after `previous` (None: first judged).

    `failed_before`: some earlier run judged this fingerprint `fail` or `waived`; it only decides between
    `regressed` and `new` when a pass or not-applicable turns into a fail.
    """
    if previous is None:
        return NEW  # nothing was known before: a first pass is as new as a first failure
    if status == _WAIVED:
        return WAIVED
    if previous == status:
        return UNCHANGED
    if status == _ERROR:
        return UNASSESSED
    if status == _NA:
        return NO_LONGER_APPLICABLE
    if status == _FAIL:
        if previous == _WAIVED:
            return REACTIVATED
        if previous == _ERROR:
            return CONFIRMED
        return REGRESSED if failed_before else NEW  # from pass or not_applicable
    # status is pass
    if previous in (_FAIL, _WAIVED):
        return FIXED
    if previous == _ERROR:
        return REASSESSED
    return UNCHANGED  # not_applicable → pass

"""The compliance score: defined once here, printed in every report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from scanner.models import CRITICALITY_WEIGHT, SEVERITY_WEIGHT, Criticality, Severity, Status

FORMULA = (
    "Score = Σ weight × passed ÷ Σ weight × (passed + failed + could not assess), where weight = control severity "
    f"weight ({', '.join(f'{s.value} {w}' for s, w in SEVERITY_WEIGHT.items())}) × system criticality weight "
    f"({', '.join(f'{c.value} {w}' for c, w in CRITICALITY_WEIGHT.items())}); waived and not-applicable findings "
    "are left out, and 'could not assess' counts as not passed."
)
ASSESSED = {Status.PASS.value, Status.FAIL.value, Status.ERROR.value}


@dataclass(frozen=True)
class Score:
    percent: float | None  # None when nothing applicable was assessed
    counts: dict[str, int]  # unweighted counts per status

    @property
    def label(self) -> str:
        return "n/a" if self.percent is None else f"{self.percent:.1f} %"


def weight(severity: str, criticality: str) -> int:
    return SEVERITY_WEIGHT[Severity(severity)] * CRITICALITY_WEIGHT[Criticality(criticality)]


def score(findings: Iterable[tuple[str, str, str]]) -> Score:
    """findings: (status, severity, criticality) triples."""
    counts: Counter[str] = Counter()
    passed = total = 0
    for status, severity, criticality in findings:
        counts[status] += 1
        if status in ASSESSED:
            w = weight(severity, criticality)
            total += w
            if status == Status.PASS.value:
                passed += w
    percent = 100.0 * passed / total if total else None
    return Score(percent, {s.value: counts[s.value] for s in Status})


def score_from_weights(w_pass: int, w_total: int, counts: dict[str, int]) -> Score:
    """The same score from stored per-run sums (scanner.store keeps Σ weight × passed and Σ weight × assessed)."""
    percent = 100.0 * w_pass / w_total if w_total else None
    return Score(percent, {s.value: int(counts.get(s.value, 0)) for s in Status})

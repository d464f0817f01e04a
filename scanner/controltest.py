"""`hcscan controls test`: admin-written cases (sample facts → expected verdict) run against the catalogue.

An administrator proves a new or changed control on recorded facts before it meets a hospital network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from scanner.catalog import ControlCatalog
from scanner.checks.verdict import could_not_assess, judge
from scanner.config import Strict
from scanner.errors import InputError, Problem
from scanner.models import Status
from scanner.yamlio import load_yaml, validate_model


class ControlCase(Strict):
    control: str
    name: str = Field(min_length=1)
    facts: dict[str, Any] = Field(default_factory=dict)
    probe_error: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    now: datetime | None = None
    expect: Status
    message_contains: str | None = None


class CaseFile(Strict):
    cases: list[ControlCase] = Field(min_length=1)


@dataclass(frozen=True)
class CaseResult:
    file: Path
    line: int | None
    case: ControlCase
    status: Status
    message: str
    ok: bool


def case_files(dirs: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for d in dirs:
        tests = d / "tests" if (d / "tests").is_dir() else d
        if tests.is_dir():
            files.extend(sorted(p for p in tests.iterdir() if p.suffix in (".yaml", ".yml")))
        elif tests.is_file():
            files.append(tests)
    return files


def run_cases(
    files: Iterable[Path], catalog: ControlCatalog, fact_names: Mapping[str, frozenset[str]]
) -> list[CaseResult]:
    problems: list[Problem] = []
    results: list[CaseResult] = []
    for file in files:
        try:
            loaded = load_yaml(file)
            doc = validate_model(CaseFile, loaded)
        except InputError as exc:
            problems.extend(exc.problems)
            continue
        for i, case in enumerate(doc.cases):
            line, _ = loaded.where(("cases", i))
            control = catalog.controls.get(case.control)
            if control is None:
                problems.append(loaded.problem(("cases", i, "control"), f"unknown control '{case.control}'"))
                continue
            unknown = set(case.facts) - set(fact_names.get(control.spec.probe, frozenset()))
            if unknown:
                problems.append(
                    loaded.problem(
                        ("cases", i, "facts"),
                        f"facts not produced by the '{control.spec.probe}' probe: {sorted(unknown)}",
                        "`hcscan facts` lists them",
                    )
                )
                continue
            now = case.now or datetime.now(UTC)
            if now.tzinfo is None:
                now = now.replace(tzinfo=UTC)
            if case.probe_error is not None:
                verdict = could_not_assess(control.rule, case.probe_error)
            else:
                verdict = judge(control.rule, case.facts, {**control.params, **case.params}, now)
            ok = verdict.status == case.expect and (
                case.message_contains is None or case.message_contains in verdict.message
            )
            results.append(CaseResult(file, line, case, verdict.status, verdict.message, ok))
    if problems:
        raise InputError(problems)
    return results

"""The control catalogue: controls/*.yaml loaded, validated and compiled into rules."""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from scanner.checks.assertions import AssertionSyntaxError, compile_assertion, placeholders
from scanner.checks.registry import CheckType, available_check_types
from scanner.checks.verdict import Rule
from scanner.config import Strict
from scanner.errors import InputError, Problem
from scanner.inventory import EndpointRef
from scanner.models import Criticality, EndpointProtocol, Severity
from scanner.resources import builtin_controls_dir
from scanner.strictmodel import number_problem
from scanner.yamlio import LoadedYaml, load_yaml, problems_from_validation, yaml_files

CONTROL_ID = r"^[A-Z][A-Z0-9]{1,15}-[0-9A-Z][0-9A-Z_-]{0,31}$"
FAMILIES = ("tls", "patching", "exposure", "availability", "logging")


class References(Strict):
    nis2: list[str] = Field(default_factory=list, description="NIS2 Art. 21(2) letters, e.g. '21(2)(h)'.")
    iso27001: list[str] = Field(default_factory=list, description="ISO/IEC 27001:2022 Annex A, e.g. 'A.8.24'.")
    cis: list[str] = Field(default_factory=list, description="CIS Controls v8 safeguards, e.g. '3.10'.")
    hipaa: list[str] = Field(default_factory=list, description="45 CFR 164.312 paragraphs, e.g. '164.312(e)(1)'.")
    dk_strategy: list[str] = Field(default_factory=list, description="Danish health-sector strategy track/objective.")


class AppliesTo(Strict):
    """Selectors: a control applies to an endpoint (or system) when every given selector matches."""

    level: Literal["endpoint", "system"] = Field(
        "endpoint", description="endpoint: judged per declared endpoint; system: judged once per system"
    )
    protocols: list[EndpointProtocol] | None = None
    tags_any: list[str] | None = Field(None, description="system or endpoint has at least one of these tags")
    tags_all: list[str] | None = None
    criticality: list[Criticality] | None = None
    systems: list[str] | None = None
    fragile: bool | None = Field(None, description="true: only fragile systems; false: never on fragile systems")


class CheckSpec(Strict):
    type: str
    params: dict[str, Any] = Field(default_factory=dict)


class Messages(Strict):
    pass_: str | None = Field(None, alias="pass")
    fail: str | None = None


class ControlSpec(Strict):
    id: str = Field(pattern=CONTROL_ID)
    title: str = Field(min_length=3)
    family: str
    severity: Severity
    rationale: str = Field(min_length=10)
    remediation: str = Field(min_length=10)
    references: References = Field(default_factory=References)
    applies_to: AppliesTo = Field(default_factory=AppliesTo)
    probe: str
    params: dict[str, Any] = Field(default_factory=dict)
    when: dict[str, Any] | None = None
    assert_: dict[str, Any] | None = Field(None, alias="assert")
    check: CheckSpec | None = None
    message: Messages = Field(default_factory=Messages)
    enabled: bool = True

    @field_validator("family")
    @classmethod
    def _family(cls, value: str) -> str:
        if value not in FAMILIES:
            raise ValueError(f"family must be one of {', '.join(FAMILIES)}")
        return value


class ControlFile(Strict):
    controls: list[dict[str, Any]] = Field(min_length=1)


@dataclass(frozen=True)
class Control:
    spec: ControlSpec
    rule: Rule
    params: Mapping[str, Any]  # defaults merged with config overrides
    source: Path
    line: int | None

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def system_level(self) -> bool:
        return self.spec.applies_to.level == "system"

    def applies(self, ref: EndpointRef) -> bool:
        """For a system-level control, `ref` is the system's first endpoint; protocols match any endpoint."""
        sel = self.spec.applies_to
        endpoints = ref.system.endpoints if self.system_level else [ref.endpoint]
        tags = set(ref.system.tags).union(*(e.tags for e in endpoints))
        return (
            self.spec.enabled
            and (sel.protocols is None or any(e.protocol in sel.protocols for e in endpoints))
            and (sel.tags_any is None or bool(tags & set(sel.tags_any)))
            and (sel.tags_all is None or set(sel.tags_all) <= tags)
            and (sel.criticality is None or ref.system.criticality in sel.criticality)
            and (sel.systems is None or ref.system.id in sel.systems)
            and (sel.fragile is None or ref.system.fragile == sel.fragile)
        )


@dataclass(frozen=True)
class ControlCatalog:
    controls: dict[str, Control]
    digest: str

    def by_family(self, family: str) -> list[Control]:
        return [c for c in self.controls.values() if c.spec.family == family]


def control_files(entries: Iterable[str], base_dir: Path) -> list[Path]:
    """`builtin` is the shipped catalogue; anything else is a file or folder relative to the config."""
    return yaml_files((builtin_controls_dir() if e == "builtin" else base_dir / e for e in entries), "controls")


def load_catalog(
    files: Iterable[Path],
    *,
    probe_facts: Mapping[str, Collection[str]],
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    check_types: Mapping[str, CheckType] | None = None,
) -> ControlCatalog:
    """Load and compile every control; collect every problem across all files before raising.

    probe_facts: probe kind → the fact names it documents (so asserts can only use real facts).
    overrides: control id → parameter values from config.yaml.
    """
    types = available_check_types() if check_types is None else dict(check_types)
    overrides = overrides or {}
    problems: list[Problem] = []
    controls: dict[str, Control] = {}
    digest = hashlib.sha256()
    for file in files:
        try:
            loaded = load_yaml(file)
        except InputError as exc:
            problems.extend(exc.problems)
            continue
        digest.update(file.read_bytes())
        try:
            doc = ControlFile.model_validate(loaded.data)
        except ValidationError as exc:
            problems.extend(problems_from_validation(exc, loaded))
            continue
        for i, raw in enumerate(doc.controls):
            control = _compile_control(raw, ("controls", i), loaded, probe_facts, overrides, types, problems)
            if control is None:
                continue
            if control.id in controls:
                first = controls[control.id]
                problems.append(
                    loaded.problem(
                        ("controls", i, "id"),
                        f"duplicate control id '{control.id}' (first defined in {first.source}:{first.line})",
                        "control ids must be unique across all control files",
                    )
                )
                continue
            controls[control.id] = control
    for control_id in overrides:
        if control_id not in controls and not problems:
            problems.append(
                Problem(None, None, None, f"control_params names unknown control '{control_id}'", "fix config.yaml")
            )
    if problems:
        raise InputError(problems)
    return ControlCatalog(controls, digest.hexdigest())


def _compile_control(
    raw: dict[str, Any],
    path: tuple[str | int, ...],
    loaded: LoadedYaml,
    probe_facts: Mapping[str, Collection[str]],
    overrides: Mapping[str, Mapping[str, Any]],
    types: Mapping[str, CheckType],
    problems: list[Problem],
) -> Control | None:
    try:
        spec = ControlSpec.model_validate(raw)
    except ValidationError as exc:
        problems.extend(problems_from_validation(exc, loaded, path))
        return None
    if spec.probe not in probe_facts:
        problems.append(
            loaded.problem((*path, "probe"), f"unknown probe '{spec.probe}'", f"use one of: {', '.join(probe_facts)}")
        )
        return None
    if (spec.assert_ is None) == (spec.check is None):
        problems.append(loaded.problem(path, f"control {spec.id} needs exactly one of 'assert' or 'check'"))
        return None
    known = probe_facts[spec.probe]
    check_type: CheckType | None = None
    params = dict(spec.params)
    if spec.check is not None:
        check_type = types.get(spec.check.type)
        if check_type is None:
            problems.append(
                loaded.problem(
                    (*path, "check", "type"),
                    f"unknown check type '{spec.check.type}'",
                    f"available: {', '.join(sorted(types))}; sites add types via the 'hcscan.checks' entry point",
                )
            )
            return None
        if check_type.probe != spec.probe:
            problems.append(
                loaded.problem((*path, "probe"), f"check type '{check_type.name}' reads the '{check_type.probe}' probe")
            )
            return None
        unknown = set(spec.check.params) - set(check_type.params)
        if unknown:
            problems.append(
                loaded.problem(
                    (*path, "check", "params"),
                    f"unknown parameter(s) {sorted(unknown)} for check type '{check_type.name}'",
                    f"allowed: {sorted(check_type.params)}",
                )
            )
            return None
        params = {**check_type.params, **spec.check.params, **params}
    override = overrides.get(spec.id, {})
    bad = set(override) - set(params)
    if bad:
        problems.append(
            Problem(
                None,
                None,
                None,
                f"control_params.{spec.id}: unknown parameter(s) {sorted(bad)}",
                f"{spec.id} has parameters {sorted(params)}",
            )
        )
        return None
    refused = False
    for name, value in sorted(override.items()):
        # A parameter whose default is a number takes a number: `min_days_left: true` would compare as 1.
        default = params[name]
        is_number = isinstance(default, int | float) and not isinstance(default, bool)
        problem = number_problem(float, value) if is_number else None
        if problem is not None:
            refused = True
            problems.append(
                Problem(
                    None,
                    None,
                    None,
                    f"control_params.{spec.id}.{name} in config.yaml: {problem}",
                    f"{spec.id}'s {name} is a number (its default is {default})",
                )
            )
    if refused:
        return None
    params.update(override)
    try:
        assertion = (
            compile_assertion(spec.assert_, known_facts=known, params=params, path=(*path, "assert"))
            if spec.assert_ is not None
            else None
        )
        when = (
            compile_assertion(spec.when, known_facts=known, params=params, path=(*path, "when"))
            if spec.when is not None
            else None
        )
    except AssertionSyntaxError as exc:
        problems.append(loaded.problem(exc.path, exc.message, exc.hint))
        return None
    for key, template in (("pass", spec.message.pass_), ("fail", spec.message.fail)):
        for name in sorted(placeholders(template or "")):
            bad_param = name.startswith("params.") and name.removeprefix("params.") not in params
            bad_fact = not name.startswith("params.") and name != "reasons" and name not in known
            if bad_param or bad_fact:
                problems.append(
                    loaded.problem(
                        (*path, "message", key),
                        f"message refers to unknown {'parameter' if bad_param else 'fact'} '{name}'",
                        "use {fact.name}, {params.name} or {reasons}",
                    )
                )
                return None
    rule = Rule(assertion, check_type, when, spec.message.pass_, spec.message.fail)
    line, _ = loaded.where((*path, "id"))
    return Control(spec=spec, rule=rule, params=params, source=loaded.file, line=line)

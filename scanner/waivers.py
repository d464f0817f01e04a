"""Waivers: an approved, time-limited acceptance of a failing control on a system."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from pydantic import Field, model_validator

from scanner.config import Strict
from scanner.errors import InputError, Problem
from scanner.inventory import Id
from scanner.yamlio import load_yaml, validate_model

MAX_WAIVER_DAYS = 366


class Waiver(Strict):
    control: str
    system: Id
    endpoint: str | None = Field(None, description="endpoint id; omit to cover every endpoint of the system")
    reason: str = Field(min_length=10)
    approved_by: str = Field(min_length=2)
    approved_on: date
    expires: date
    compensating_control: str = ""

    @model_validator(mode="after")
    def _dates(self) -> Waiver:
        if self.expires < self.approved_on:
            raise ValueError("expires is before approved_on")
        if self.expires - self.approved_on > timedelta(days=MAX_WAIVER_DAYS):
            raise ValueError(f"a waiver may last at most {MAX_WAIVER_DAYS} days; renew it instead")
        return self

    def covers(self, control_id: str, system_id: str, endpoint_id: str) -> bool:
        return (
            self.control == control_id
            and self.system == system_id
            and (self.endpoint is None or self.endpoint == endpoint_id)
        )

    def active(self, now: datetime) -> bool:
        return now.date() <= self.expires


class WaiverFile(Strict):
    waivers: list[Waiver] = Field(default_factory=list)


@dataclass(frozen=True)
class Waivers:
    items: tuple[Waiver, ...] = ()

    def find(self, control_id: str, system_id: str, endpoint_id: str) -> Waiver | None:
        """The matching waiver with the latest expiry, active or not."""
        matches = [w for w in self.items if w.covers(control_id, system_id, endpoint_id)]
        return max(matches, key=lambda w: w.expires) if matches else None


def load_waivers(
    files: Iterable[Path], known_controls: set[str] | None = None, known_systems: set[str] | None = None
) -> Waivers:
    problems: list[Problem] = []
    items: list[Waiver] = []
    for file in files:
        try:
            loaded = load_yaml(file)
            doc = validate_model(WaiverFile, loaded, loaded.data if loaded.data is not None else {})
        except InputError as exc:
            problems.extend(exc.problems)
            continue
        for i, w in enumerate(doc.waivers):
            if known_controls is not None and w.control not in known_controls:
                problems.append(loaded.problem(("waivers", i, "control"), f"unknown control '{w.control}'"))
            if known_systems is not None and w.system not in known_systems:
                problems.append(loaded.problem(("waivers", i, "system"), f"unknown system '{w.system}'"))
            items.append(w)
    if problems:
        raise InputError(problems)
    return Waivers(tuple(items))

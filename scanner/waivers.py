"""Waivers: an approved, time-limited acceptance of a failing control on a system."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pydantic import Field, model_validator

from scanner.config import Strict
from scanner.errors import InputError, Problem
from scanner.inventory import Id
from scanner.yamlio import load_yaml, validate_model

MAX_WAIVER_DAYS = 366


class Waiver(Strict):
    """An approved, time-limited acceptance of one control failing on a system, one endpoint, or every system
    carrying a tag. An expired waiver no longer applies: the finding is `fail` again and says so."""

    control: str
    system: Id | None = Field(None, description="system id; give either system or tag")
    tag: str | None = Field(None, description="every system carrying this inventory tag (instead of system)")
    endpoint: str | None = Field(None, description="endpoint id (needs system); omit to cover every endpoint")
    reason: str = Field(min_length=10)
    approved_by: str = Field(min_length=2)
    approved_on: date = Field(description="not after the day the waivers are loaded")
    expires: date = Field(
        description="required; at most 366 days after approved_on and after the day the waivers are loaded"
    )
    compensating_control: str = Field("", description="what reduces the risk while the control fails")

    @model_validator(mode="after")
    def _dates(self) -> Waiver:
        if (self.system is None) == (self.tag is None):
            raise ValueError("give exactly one of 'system' or 'tag'")
        if self.endpoint is not None and self.system is None:
            raise ValueError("'endpoint' needs 'system'")
        if self.expires < self.approved_on:
            raise ValueError("expires is before approved_on")
        if self.expires - self.approved_on > timedelta(days=MAX_WAIVER_DAYS):
            raise ValueError(
                f"a waiver may last at most {MAX_WAIVER_DAYS} days after approved_on; shorten it and renew it instead"
            )
        return self

    def covers(self, control_id: str, system_id: str, endpoint_id: str, tags: frozenset[str] = frozenset()) -> bool:
        if self.control != control_id:
            return False
        if self.tag is not None:
            return self.tag in tags
        return self.system == system_id and (self.endpoint is None or self.endpoint == endpoint_id)

    def active(self, now: datetime) -> bool:
        return now.date() <= self.expires

    @property
    def scope(self) -> str:
        if self.tag is not None:
            return f"tag:{self.tag}"
        return f"{self.system}/{self.endpoint}" if self.endpoint else str(self.system)

    def as_evidence(self, now: datetime) -> dict[str, str | bool]:
        """What a report needs to show the waiver beside the finding it covers (stored with the finding)."""
        return {
            "scope": self.scope,
            "reason": self.reason,
            "approved_by": self.approved_by,
            "approved_on": self.approved_on.isoformat(),
            "expires": self.expires.isoformat(),
            "compensating_control": self.compensating_control,
            "active": self.active(now),
        }


class WaiverFile(Strict):
    waivers: list[Waiver] = Field(default_factory=list)


@dataclass(frozen=True)
class Waivers:
    items: tuple[Waiver, ...] = ()

    def find(
        self, control_id: str, system_id: str, endpoint_id: str, tags: frozenset[str] = frozenset()
    ) -> Waiver | None:
        """The matching waiver with the latest expiry, active or not."""
        matches = [w for w in self.items if w.covers(control_id, system_id, endpoint_id, tags)]
        return max(matches, key=lambda w: w.expires) if matches else None


def load_day() -> date:
    """The day waivers are judged against when loaded: the later of the local and the UTC date, so a waiver approved
    today is accepted in any time zone (a scan judges expiry by the UTC date)."""
    return max(datetime.now().date(), datetime.now(UTC).date())


def date_problems(waiver: Waiver, today: date) -> list[tuple[str, str, str]]:
    """(field, message, hint) for dates that make no sense on the load day. The limit counts from both ends: a waiver
    approved for a day years ahead (`approved_on: 2036-01-01, expires: 2036-12-31`) would otherwise waive a control
    for ten years from today."""
    out: list[tuple[str, str, str]] = []
    if waiver.approved_on > today:
        out.append(
            (
                "approved_on",
                f"approved_on {waiver.approved_on.isoformat()} is in the future (today is {today.isoformat()})",
                "write the day the waiver was approved; a waiver cannot be approved ahead of time",
            )
        )
    last = today + timedelta(days=MAX_WAIVER_DAYS)
    if waiver.expires > last:
        out.append(
            (
                "expires",
                f"expires {waiver.expires.isoformat()} is more than {MAX_WAIVER_DAYS} days from today "
                f"({today.isoformat()})",
                f"set expires to {last.isoformat()} or earlier and renew the waiver when it runs out",
            )
        )
    return out


def load_waivers(
    files: Iterable[Path],
    known_controls: set[str] | None = None,
    known_systems: set[str] | None = None,
    today: date | None = None,
) -> Waivers:
    """Load and check waiver files against the load day (`today`, default: load_day())."""
    day = load_day() if today is None else today
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
            if known_systems is not None and w.system is not None and w.system not in known_systems:
                problems.append(loaded.problem(("waivers", i, "system"), f"unknown system '{w.system}'"))
            for field, message, hint in date_problems(w, day):
                problems.append(loaded.problem(("waivers", i, field), message, hint))
            items.append(w)
    if problems:
        raise InputError(problems)
    return Waivers(tuple(items))

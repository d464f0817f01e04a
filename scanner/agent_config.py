"""The `agent:` and `schedules:` sections of config.yaml: who this agent is and what it runs when.

Schedules are config, not state: the agent builds its jobs from them at every start. Cron expressions are
checked here, at load time, so a typo is a file:line error (exit 2), never a job that silently never fires.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from scanner.errors import Problem
from scanner.strictmodel import StrictModel

DEFAULT_TIMEZONE = "Europe/Copenhagen"
_CRON_FIELDS_5 = ("minute", "hour", "day", "month", "day_of_week")
_CRON_FIELDS_6 = ("second", *_CRON_FIELDS_5)
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Strict(StrictModel):
    """Unknown keys are errors, values are immutable, numbers are numbers."""


def check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone '{value}' (use an IANA name such as Europe/Copenhagen)") from None
    return value


def cron_fields(expr: str) -> dict[str, str]:
    """Split a cron expression into APScheduler CronTrigger fields; ValueError with a readable reason.

    Five fields are standard crontab (minute hour day month weekday); six fields put seconds first.
    Weekdays must be names: APScheduler 3 numbers days from Monday=0, crontab from Sunday=0, so a numeric
    weekday would silently fire on the wrong day.
    """
    parts = expr.split()
    if len(parts) == 5:
        fields = dict(zip(_CRON_FIELDS_5, parts, strict=True))
    elif len(parts) == 6:
        fields = dict(zip(_CRON_FIELDS_6, parts, strict=True))
    else:
        raise ValueError(
            f"cron expression '{expr}' has {len(parts)} field(s); use 5 (minute hour day month weekday) "
            "or 6 (second minute hour day month weekday)"
        )
    if re.search(r"\d", fields["day_of_week"]):
        raise ValueError(
            f"weekday '{fields['day_of_week']}' is numeric; write day names (mon,tue,wed,thu,fri,sat,sun) — "
            "cron and APScheduler disagree on what 0 means"
        )
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger(**fields, timezone=ZoneInfo("UTC"))
    except ValueError as exc:
        raise ValueError(f"cron expression '{expr}': {exc}") from None
    return fields


class JobKind(StrEnum):
    SCAN = "scan"  # scan the job's scope, one run per region this agent serves
    SAMPLE = "sample"  # one round of availability samples, per region this agent serves
    REPORT = "report"  # render the central HTML reports from the store (all regions), one agent at a time
    DATA_UPDATE = "data-update"  # refresh the version data online (`hcscan data update`), one agent at a time


class ScheduleScope(_Strict):
    regions: list[str] | None = Field(None, description="Only these regions (default: every region the agent serves).")
    families: list[str] | None = Field(None, description="Only controls of these families.")
    controls: list[str] | None = Field(None, description="Only these control ids.")
    systems: list[str] | None = Field(None, description="Only these systems.")


class ScheduleConfig(_Strict):
    """One scheduled job: what, when (cron), and over which scope."""

    id: str = Field(pattern=_ID, description="Stable job name; slots in the store are keyed by it.")
    kind: JobKind = Field(JobKind.SCAN, description="scan | sample | report | data-update")
    cron: str = Field(description="5 fields (m h dom mon dow) or 6 with seconds first; weekdays as names.")
    timezone: str | None = Field(None, description="IANA timezone of the cron expression (default: agent.timezone).")
    scope: ScheduleScope = Field(default_factory=ScheduleScope)
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        cron_fields(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)


class AgentConfig(_Strict):
    """Who this agent is, which regions it scans, and its lifecycle bounds."""

    id: str = Field(default_factory=socket.gethostname, description="Agent name recorded on runs (default: host).")
    regions: list[str] | None = Field(None, description="Regions this agent scans (default: all in the inventory).")
    timezone: str = Field(DEFAULT_TIMEZONE, description="Default IANA timezone of cron expressions.")
    catchup_grace_s: float = Field(
        6 * 3600, ge=0, description="A slot missed by at most this much is run once (coalesced) when the agent starts."
    )
    lease_s: float = Field(
        900, gt=0, description="A claimed slot's lease; renewed while running, taken over by another agent if expired."
    )
    sweep_s: float = Field(60, gt=0, description="How often the agent looks for slots whose holder died.")
    shutdown_grace_s: float = Field(
        30, ge=0, le=3600, description="On SIGTERM/SIGINT, how long running scans may finish before being cut off."
    )

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        return check_timezone(value)


def schedule_problems(schedules: Sequence[ScheduleConfig], where: Any) -> list[Problem]:
    """Cross-entry checks pydantic cannot do per entry. `where(path, message, hint)` builds a located Problem."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, sched in enumerate(schedules):
        if sched.id in seen:
            problems.append(where(("schedules", i, "id"), f"duplicate schedule id '{sched.id}'", "ids must be unique"))
        seen.add(sched.id)
        if sched.kind is JobKind.REPORT and sched.scope != ScheduleScope():
            problems.append(
                where(("schedules", i, "scope"), "a report job has no scope", "the central report reads all regions")
            )
        if sched.kind is JobKind.DATA_UPDATE and sched.scope != ScheduleScope():
            problems.append(
                where(
                    ("schedules", i, "scope"),
                    "a data-update job has no scope",
                    "it refreshes the one version-data file",
                )
            )
        if sched.kind is JobKind.SAMPLE and (sched.scope.families is not None or sched.scope.controls is not None):
            problems.append(
                where(("schedules", i, "scope"), "a sample job is scoped by regions and systems only", "remove it")
            )
    return problems

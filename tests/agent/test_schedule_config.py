"""Schedules as config: cron checked at load time with file:line errors (exit 2), slots computed from triggers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scanner.agent import build_jobs
from scanner.cli import main
from scanner.config import load_config
from scanner.errors import InputError
from tests.helpers import make_workspace, system

CPH = "Europe/Copenhagen"


def workspace(tmp_path: Path, schedules: Any, agent: dict[str, Any] | None = None) -> Path:
    extra: dict[str, Any] = {"schedules": schedules}
    if agent is not None:
        extra["agent"] = agent
    return make_workspace(tmp_path, [system("s1", "127.0.0.1", 1)], extra_config=extra)


def line_of(config: Path, needle: str) -> int:
    for i, line in enumerate(config.read_text().splitlines(), start=1):
        if needle in line:
            return i
    raise AssertionError(needle)


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 2 * * 0", "write day names"),
        ("0 2 * *", "has 4 field(s)"),
        ("61 2 * * *", "higher than the maximum"),
        ("0 2 * * mon-fri extra junk", "has 7 field(s)"),
    ],
)
def test_a_bad_cron_expression_names_its_line(tmp_path: Path, cron: str, message: str) -> None:
    config = workspace(tmp_path, [{"id": "nightly", "cron": cron}])
    with pytest.raises(InputError) as err:
        load_config(config)
    (problem,) = err.value.problems
    assert message in problem.message
    assert problem.line == line_of(config, "cron:")


def test_unknown_timezone_duplicate_ids_and_unknown_keys_are_reported_together(tmp_path: Path) -> None:
    config = workspace(tmp_path, [{"id": "a", "cron": "0 2 * * *", "timezone": "Europe/Atlantis"}])
    with pytest.raises(InputError, match="unknown timezone 'Europe/Atlantis'"):
        load_config(config)
    config = workspace(tmp_path, [{"id": "a", "cron": "0 2 * * *"}, {"id": "a", "cron": "0 3 * * *"}])
    with pytest.raises(InputError) as err:
        load_config(config)
    assert [p.message for p in err.value.problems] == ["duplicate schedule id 'a'"]
    assert err.value.problems[0].line == line_of(config, "- id: a") + 2
    config = workspace(tmp_path, [{"id": "a", "cron": "0 2 * * *", "every": 5}])
    with pytest.raises(InputError, match="unknown field 'every'"):
        load_config(config)


def test_the_agent_refuses_names_the_inventory_does_not_have_with_exit_2(tmp_path: Path) -> None:
    config = workspace(
        tmp_path,
        [{"id": "nightly", "cron": "0 2 * * *", "scope": {"regions": ["atlantis"], "families": ["tlss"]}}],
        agent={"regions": ["testregion"]},
    )
    result = CliRunner().invoke(main, ["agent", "--once", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert f"config.yaml:{line_of(config, '- atlantis')}" in result.output
    assert "unknown region 'atlantis'" in result.output
    assert "unknown family 'tlss'" in result.output
    assert "scans no region this agent serves" in result.output


def test_an_agent_without_schedules_has_nothing_to_do_and_says_so(tmp_path: Path) -> None:
    config = workspace(tmp_path, [])
    result = CliRunner().invoke(main, ["agent", "--once", "--config", str(config)])
    assert result.exit_code == 2
    assert "no enabled schedules" in result.output


def test_five_field_cron_runs_in_the_agent_timezone(tmp_path: Path) -> None:
    config = load_config(workspace(tmp_path, [{"id": "nightly", "cron": "30 1 * * mon-fri"}]))
    (job,) = build_jobs(config)
    assert job.timezone == CPH
    # Friday 2026-11-27 01:30 in Copenhagen is 00:30 UTC; the next is Monday.
    nxt = job.next_fire(datetime(2026, 11, 27, 0, 0, tzinfo=UTC))
    assert nxt is not None and nxt.astimezone(UTC) == datetime(2026, 11, 27, 0, 30, tzinfo=UTC)
    after = job.next_fire(datetime(2026, 11, 27, 1, 0, tzinfo=UTC))
    assert after is not None and after.astimezone(UTC) == datetime(2026, 11, 30, 0, 30, tzinfo=UTC)


def test_the_latest_slot_within_the_grace_is_the_one_catch_up(tmp_path: Path) -> None:
    config = load_config(workspace(tmp_path, [{"id": "hourly", "cron": "0 * * * *", "timezone": "UTC"}]))
    (job,) = build_jobs(config)
    now = datetime(2026, 11, 23, 5, 20, tzinfo=UTC)
    # Three missed hours coalesce into the newest one.
    assert job.latest_slot(now, timedelta(hours=3)) == datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    assert job.latest_slot(now, timedelta(minutes=20)) == datetime(2026, 11, 23, 5, 0, tzinfo=UTC)
    assert job.latest_slot(now, timedelta(minutes=19)) is None  # missed by more than the grace: skipped
    assert job.latest_slot(datetime(2026, 11, 23, 5, 0, tzinfo=UTC), timedelta(0)) == now.replace(minute=0)


def test_seconds_cron_for_fast_schedules(tmp_path: Path) -> None:
    config = load_config(workspace(tmp_path, [{"id": "fast", "cron": "*/2 * * * * *"}]))
    (job,) = build_jobs(config)
    now = datetime(2026, 11, 23, 5, 20, 7, 500000, tzinfo=UTC)
    assert job.latest_slot(now, timedelta(seconds=10)) == datetime(2026, 11, 23, 5, 20, 6, tzinfo=UTC)

"""Input that used to end in a traceback or be read wrongly: huge numbers, deep nesting, true/false or text where a
number belongs, and waivers dated in the future. Each is exit 2 with file:line and the fix; the store is untouched."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from scanner.demo import demo_waivers
from scanner.errors import InputError
from scanner.strictmodel import number_problem
from scanner.waivers import load_day, load_waivers
from scanner.yamlio import dump_yaml
from tests.helpers import make_workspace, system, write_yaml
from tests.loaders.test_bad_input import assert_refused, hcscan

INVENTORY = "inventory/testregion.yaml"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    make_workspace(tmp_path, [system("sys-a", "127.0.0.1", 9)])
    return tmp_path


def _edit(ws: Path, rel: str, old: str, new: str) -> int:
    """Replace `old` by `new` in a workspace file; return the 1-based line `new` starts on."""
    path = ws / rel
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, text
    path.write_text(text.replace(old, new), encoding="utf-8")
    return text[: text.index(old)].count("\n") + 1


@pytest.mark.parametrize("command", ["validate", "scan"])
@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("true", "port: true is not a number; write a whole number"),
        ("false", "port: false is not a number"),
        ("'443'", "port: '443' is text; write a whole number without quotes"),
        ("443.0", "port: 443.0 has a fraction or decimal point"),
        ("1" * 5001, "number too long (5001 characters)"),
        ("18446744073709551616", "number out of range"),
        ("0x" + "f" * 20, "number out of range"),
    ],
)
def test_a_port_that_is_not_a_plain_number_is_refused_with_its_line(
    ws: Path, command: str, value: str, words: str
) -> None:
    line = _edit(ws, INVENTORY, "port: 9\n", f"port: {value}\n")
    err = assert_refused(ws, f"testregion.yaml:{line}:", words, command=command)
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["validate", "scan"])
@pytest.mark.parametrize("flow", [True, False])
def test_nesting_fifty_thousand_deep_is_refused_not_a_recursion_error(ws: Path, command: str, flow: bool) -> None:
    inv = ws / INVENTORY
    deep = "[" * 50_000 + "]" * 50_000 if flow else "\n" + "".join(" " * i + "- \n" for i in range(1, 200))
    inv.write_text(inv.read_text(encoding="utf-8") + f"extra: {deep}\n", encoding="utf-8")
    err = assert_refused(ws, "testregion.yaml:", "nested more than 40 levels deep", "hint: flatten", command=command)
    assert "Traceback" not in err and "RecursionError" not in err


@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("timeout_s: 3\n", "timeout_s: true\n", "politeness.timeout_s: true is not a number; write a number"),
        ("timeout_s: 3\n", "timeout_s: .inf\n", "'.inf' is not a finite number"),
        ("timeout_s: 3\n", "timeout_s: .nan\n", "'.nan' is not a finite number"),
        ("timeout_s: 3\n", "timeout_s: 3\nmax_workers: yes\n", "max_workers: true is not a number"),
        ("timeout_s: 3\n", "timeout_s: 3\nexposure: {sweep_ports: [22, on]}\n", "in item 2: true is not a number"),
        ("out_dir: reports\n", "out_dir: reports\n  sla_days: {critical: true}\n", "in 'critical': true is not a"),
    ],
)
def test_config_numbers_are_numbers(ws: Path, old: str, new: str, words: str) -> None:
    line = _edit(ws, "config.yaml", old, new)
    # the problem is on the edited line or the one after it (a key added below the edited one)
    err = assert_refused(ws, "config.yaml:", words, command="scan")
    assert f"config.yaml:{line}:" in err or f"config.yaml:{line + 1}:" in err, err


@pytest.mark.parametrize(("value", "words"), [("true", "true is not a number"), ("'45'", "'45' is text")])
def test_a_control_parameter_override_that_is_not_a_number_is_refused(ws: Path, value: str, words: str) -> None:
    """`min_days_left: true` compared as 1: TLS-04 passed a certificate with a day left."""
    cfg = ws / "config.yaml"
    cfg.write_text(cfg.read_text() + f"control_params:\n  TLS-04:\n    min_days_left: {value}\n", encoding="utf-8")
    assert_refused(ws, f"control_params.TLS-04.min_days_left in config.yaml: {words}", "its default is 30")


def test_a_number_where_a_number_belongs_still_loads(ws: Path) -> None:
    """The strict reading refuses only non-numbers: an integer for a decimal setting is fine."""
    _edit(ws, "config.yaml", "timeout_s: 3\n", "timeout_s: 3\n  max_concurrency: 2\n")
    cfg = ws / "config.yaml"
    cfg.write_text(cfg.read_text() + "control_params: {TLS-04: {min_days_left: 14.5}}\n", encoding="utf-8")
    result = hcscan("validate", "--config", "config.yaml", cwd=ws)
    assert result.returncode == 0, result.stderr
    assert "1 system(s)" in result.stdout


def _waiver(approved_on: dt.date, expires: dt.date) -> dict[str, object]:
    return {
        "control": "TLS-01",
        "system": "sys-a",
        "reason": "Vendor appliance cannot be upgraded this quarter.",
        "approved_by": "CISO",
        "approved_on": approved_on.isoformat(),
        "expires": expires.isoformat(),
    }


def _with_waivers(ws: Path, *waivers: dict[str, object]) -> Path:
    path = write_yaml(ws / "waivers.yaml", {"waivers": list(waivers)})
    cfg = ws / "config.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8") + "waivers: [waivers.yaml]\n", encoding="utf-8")
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, text in enumerate(path.read_text().splitlines(), 1) if needle in text)


@pytest.mark.parametrize("command", ["validate", "scan"])
def test_a_waiver_approved_years_ahead_is_refused(ws: Path, command: str) -> None:
    """Issue 16.6: the 366 days counted from approved_on alone let `2036-01-01 … 2036-12-31` waive today."""
    path = _with_waivers(ws, _waiver(dt.date(2036, 1, 1), dt.date(2036, 12, 31)))
    err = assert_refused(
        ws,
        f"waivers.yaml:{_line_of(path, 'approved_on:')}:",
        "approved_on 2036-01-01 is in the future",
        "a waiver cannot be approved ahead of time",
        f"waivers.yaml:{_line_of(path, 'expires:')}:",
        "expires 2036-12-31 is more than 366 days from today",
        command=command,
    )
    assert "2 problem(s)" in err


def test_a_waiver_approved_tomorrow_is_refused_and_one_approved_today_loads(tmp_path: Path) -> None:
    today = dt.date(2026, 12, 2)
    tomorrow = write_yaml(
        tmp_path / "a.yaml", {"waivers": [_waiver(today + dt.timedelta(days=1), today + dt.timedelta(days=30))]}
    )
    with pytest.raises(InputError) as caught:
        load_waivers([tomorrow], today=today)
    assert [p.message for p in caught.value.problems] == [
        "approved_on 2026-12-03 is in the future (today is 2026-12-02)"
    ]
    ok = write_yaml(tmp_path / "b.yaml", {"waivers": [_waiver(today, today + dt.timedelta(days=366))]})
    assert [w.expires for w in load_waivers([ok], today=today).items] == [dt.date(2027, 12, 3)]
    expired = write_yaml(tmp_path / "c.yaml", {"waivers": [_waiver(dt.date(2025, 1, 1), dt.date(2025, 6, 1))]})
    assert len(load_waivers([expired], today=today).items) == 1  # an expired waiver loads (and no longer applies)


@pytest.mark.parametrize("years_ahead", [0, 1, 5, 30])
def test_the_shipped_and_demo_waivers_load_on_any_later_day(years_ahead: int) -> None:
    """inventory/waivers.yaml has fixed dates in the past (it only ever expires); the demo dates its own from today."""
    root = Path(__file__).resolve().parents[2]
    day = load_day() + dt.timedelta(days=365 * years_ahead)
    shipped = load_waivers([root / "inventory" / "waivers.yaml"], today=day)
    assert [w.control for w in shipped.items] == ["TLS-07"]


def test_the_demo_waivers_written_on_a_day_load_on_that_day(tmp_path: Path) -> None:
    for day in (load_day(), dt.date(2031, 2, 28), dt.date(2040, 12, 31)):
        path = tmp_path / f"{day.isoformat()}.yaml"
        path.write_text(dump_yaml(demo_waivers(day)), encoding="utf-8")
        assert len(load_waivers([path], today=day).items) >= 3


@pytest.mark.parametrize(
    ("tp", "value", "refused"),
    [
        (int, True, True),
        (int, 3, False),
        (int, 3.0, True),
        (float, 3, False),
        (float, False, True),
        (int | None, True, True),
        (int | None, None, False),
        (int | str, True, True),  # pydantic would read it as 1
        (int | str, "x", False),  # text another member takes
        (bool, True, False),
        (bool | int, True, False),
        (list[int], [1, True], True),
        (dict[str, float], {"a": 1.5, "b": "2"}, True),
        (dict[str, Any], {"a": True}, False),
        (list[int] | None, [1, 2], False),
    ],
)
def test_which_values_a_number_field_refuses(tp: Any, value: Any, refused: bool) -> None:
    assert (number_problem(tp, value) is not None) == refused

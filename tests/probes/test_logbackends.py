"""Log backends on files and parsers: syslog formats, bounded reads from both ends, fail-closed errors."""

from __future__ import annotations

import datetime as dt
import gzip
import os
import time
from pathlib import Path
from typing import Any

import pytest

from scanner.probes.auditlog import AuditLogProbe, snapshot_facts
from scanner.probes.base import SYSTEM_LEVEL, ProbeContext, ProbeError, ProbeErrorReason, ProbeFacts, Target
from scanner.probes.logbackends.base import LogEvent, LogSnapshot, dig, parse_time
from scanner.probes.logbackends.spec import SyslogFieldNames
from scanner.probes.logbackends.syslog_files import parse_line, parse_structured_data, to_event

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
REF = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)


def system_target(audit_log: dict[str, Any] | None, sid: str = "epj") -> Target:
    system: dict[str, Any] = {"id": sid, "audit_log": audit_log}
    return Target(
        key=f"{sid}/*", system_id=sid, address="127.0.0.1", port=0, protocol=SYSTEM_LEVEL, declared={"system": system}
    )


def gather(audit_log: dict[str, Any] | None) -> ProbeFacts | ProbeError:
    t = system_target(audit_log)
    return AuditLogProbe().gather([t], ProbeContext())[t.key]


def line5424(when: dt.datetime, host: str = "epj01", msg: str = "user=u1 patient=0101 action=read") -> str:
    return f"<86>1 {when.isoformat()} {host} epj-audit 42 - - {msg}"


# -- parsing ----------------------------------------------------------------------------------------


def test_rfc5424_with_structured_data_gives_fields_from_sd() -> None:
    rec = parse_line(
        b'<13>1 2026-11-22T10:00:00.123+01:00 vm epj - - [timeQuality tzKnown="1"][audit@32473 user="u1" '
        b'patient="0101" action="read"] lookup',
        REF,
    )
    assert rec is not None and rec.time == dt.datetime(2026, 11, 22, 9, 0, 0, 123000, tzinfo=dt.UTC)
    assert rec.fields["user"] == "u1" and rec.fields["patient"] == "0101" and not rec.year_inferred
    assert to_event(rec, SyslogFieldNames()).missing() == []


def test_structured_data_escapes_and_nil() -> None:
    assert parse_structured_data('[a@1 x="q\\"u\\]o"] msg') == ({"x": 'q"u]o'}, "msg")
    assert parse_structured_data("- hello") == ({}, "hello")
    assert parse_structured_data('[a@1 x="unterminated') is None


def test_rfc3164_year_is_inferred_never_in_the_future() -> None:
    rec = parse_line(b"Dec 31 23:00:00 epj01 epj[1]: user=u1 patient=0101 action=read", REF)
    assert rec is not None and rec.year_inferred
    assert rec.time is not None and rec.time.year == 2025  # 31 Dec 2026 would be after the reference
    assert to_event(rec, SyslogFieldNames()).missing() == []


def test_rfc3339_file_format_and_json_message() -> None:
    rec = parse_line(b'2026-11-22T10:00:00Z epj01 epj: @cee:{"user": "u1", "patient": "p", "action": "R"}', REF)
    assert rec is not None and rec.time == dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)
    assert to_event(rec, SyslogFieldNames()).missing() == []


@pytest.mark.parametrize(
    "line",
    [
        b"garbage",
        b"<13>1 notatime host app - - - x",
        b"Foo 12 10:00:00 host x",
        b"<13>1 2026-11-22T10:00:00Z h a p m [broken",
    ],
)
def test_malformed_lines_are_rejected(line: bytes) -> None:
    assert parse_line(line, REF) is None


def test_incomplete_event_names_what_is_missing() -> None:
    rec = parse_line(line5424(REF, msg="user=u1 action=read").encode(), REF)
    assert rec is not None and to_event(rec, SyslogFieldNames()).missing() == ["subject"]


def test_parse_time_and_dig() -> None:
    assert parse_time(1_800_000_000_000) == parse_time(1_800_000_000) == parse_time("2027-01-15T08:00:00Z")
    assert parse_time("yesterday") is None and parse_time(True) is None and parse_time(float("nan")) is None
    assert dig({"a": [{"b": 1}]}, "a.0.b") == 1 and dig({"a": 1}, "a.b") is None


def test_snapshot_facts_carry_no_personal_values() -> None:
    snap = LogSnapshot("/x", NOW, NOW - dt.timedelta(days=200), (LogEvent(NOW, True, False, True),))
    facts = snapshot_facts("syslog-files", snap, NOW)
    assert facts["log.sample.missing_fields"] == ["subject"] and facts["log.oldest_event_age_days"] == 200.0
    assert "lacks subject" in str(facts["log.sample.first_incomplete"])


# -- files ------------------------------------------------------------------------------------------


def spec(path: Path, **extra: Any) -> dict[str, Any]:
    return {"backend": "syslog-files", "path": str(path), **extra}


def test_fresh_file_with_rotated_gzip_archive(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    current = tmp_path / "audit.log"
    current.write_text("\n".join(line5424(now - dt.timedelta(minutes=m)) for m in range(30, 0, -1)) + "\n")
    with gzip.open(tmp_path / "audit.log.2.gz", "wt") as gz:
        gz.write(line5424(now - dt.timedelta(days=400)) + "\n" + line5424(now - dt.timedelta(days=390)) + "\n")
    outcome = gather(spec(current, archives=str(tmp_path / "audit.log.*")))
    assert isinstance(outcome, ProbeFacts), outcome
    f = outcome.facts
    assert 0.0 < f["log.latest_event_age_hours"] < 0.1
    assert 399.9 < f["log.oldest_event_age_days"] < 400.1
    assert f["log.sample.size"] == 20 and f["log.sample.complete"] == 20 and f["log.sample.malformed"] == 0


def test_partial_last_line_and_some_garbage_are_counted_not_fatal(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    current = tmp_path / "audit.log"
    lines = [line5424(now - dt.timedelta(minutes=5)), "\x00\x01 not syslog", line5424(now - dt.timedelta(minutes=1))]
    current.write_text("\n".join(lines) + "\n")
    outcome = gather(spec(current))
    assert isinstance(outcome, ProbeFacts)
    assert outcome.facts["log.sample.malformed"] == 1 and outcome.facts["log.sample.size"] == 2


@pytest.mark.parametrize(
    ("content", "reason", "words"),
    [
        (b"", ProbeErrorReason.PROTOCOL, "log file is empty"),
        (b"this is not syslog\n" * 100, ProbeErrorReason.PROTOCOL, "no readable syslog line"),
        (b"x" * 300_000, ProbeErrorReason.PROTOCOL, "no readable syslog line"),
    ],
)
def test_unusable_files_are_errors(tmp_path: Path, content: bytes, reason: ProbeErrorReason, words: str) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(content)
    outcome = gather(spec(path))
    assert isinstance(outcome, ProbeError) and outcome.reason is reason and words in outcome.detail


def test_missing_file_and_directory_are_errors(tmp_path: Path) -> None:
    missing = gather(spec(tmp_path / "nope.log"))
    assert isinstance(missing, ProbeError) and "not found" in missing.detail
    directory = gather(spec(tmp_path))
    assert isinstance(directory, ProbeError) and "not a file" in directory.detail


def test_huge_sparse_file_is_read_from_both_ends_only(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    path = tmp_path / "huge.log"
    with path.open("wb") as f:
        f.write((line5424(now - dt.timedelta(days=300)) + "\n").encode())
        f.truncate(4 * 1024**3)  # 4 GiB, sparse: reading the middle would take far longer than this test
        f.seek(0, os.SEEK_END)
        f.write(("\n".join(line5424(now - dt.timedelta(seconds=s)) for s in range(40, 0, -1)) + "\n").encode())
    started = time.monotonic()
    outcome = gather(spec(path))
    elapsed = time.monotonic() - started
    path.unlink()
    assert isinstance(outcome, ProbeFacts), outcome
    assert outcome.facts["log.oldest_event"] == (now - dt.timedelta(days=300)).isoformat().replace("+00:00", "Z")
    assert outcome.facts["log.latest_event"] == (now - dt.timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    assert elapsed < 1.0


def test_undeclared_system_gets_facts_that_fail_not_pass() -> None:
    outcome = gather(None)
    assert isinstance(outcome, ProbeFacts) and outcome.facts["log.declared"] is False
    assert outcome.facts["log.latest_event"] is None

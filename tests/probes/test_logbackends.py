"""Log backends on files and parsers: syslog formats, bounded reads from both ends, fail-closed errors."""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import lzma
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from scanner.probes.auditlog import AuditLogProbe, snapshot_facts
from scanner.probes.base import SYSTEM_LEVEL, ProbeContext, ProbeError, ProbeErrorReason, ProbeFacts, Target
from scanner.probes.logbackends import syslog_files
from scanner.probes.logbackends.base import LogBackendError, LogEvent, LogSnapshot, dig, parse_time
from scanner.probes.logbackends.spec import SyslogFieldNames, SyslogFilesSpec
from scanner.probes.logbackends.syslog_files import (
    Budget,
    SyslogFilesBackend,
    parse_line,
    parse_structured_data,
    rotated_siblings,
    to_event,
)

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


def iso(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


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
    assert 389.9 < f["log.oldest_event_age_days"] < 390.1  # the newer of the archive's first events (400, 390 days)
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


def test_missing_file_is_named_as_such_not_as_a_network_state(tmp_path: Path) -> None:
    missing = gather(spec(tmp_path / "nope.log"))
    assert isinstance(missing, ProbeError) and missing.reason is ProbeErrorReason.FILE
    assert missing.message() == f"file: syslog-files: log file not found: {tmp_path / 'nope.log'}"


def test_fifo_directory_and_device_are_not_regular_files_and_never_block(tmp_path: Path) -> None:
    fifo = tmp_path / "audit.log"
    os.mkfifo(fifo)  # no writer: a blocking open would wait forever
    cases = {fifo: "a FIFO", tmp_path: "a directory", Path("/dev/zero"): "a character device"}
    for path, kind in cases.items():
        started = time.monotonic()
        outcome = gather(spec(path))
        assert time.monotonic() - started < 30, path  # in fact milliseconds; generous for a loaded machine
        assert isinstance(outcome, ProbeError) and outcome.reason is ProbeErrorReason.FILE, outcome
        assert outcome.detail == f"syslog-files: not a regular file: {path} ({kind})"


def test_declared_path_may_be_a_link_to_a_regular_file(tmp_path: Path) -> None:
    """The administrator declared it: a link at `path` is followed (only rotated files must not be links)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    real = tmp_path / "2026-12-02.log"
    real.write_text(line5424(now - dt.timedelta(minutes=1)) + "\n")
    (tmp_path / "current.log").symlink_to(real)
    outcome = gather(spec(tmp_path / "current.log"))
    assert isinstance(outcome, ProbeFacts), outcome
    assert outcome.facts["log.latest_event_in"] == str(tmp_path / "current.log")
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "pipe")
    (tmp_path / "linked.log").symlink_to(tmp_path / "fifo" / "pipe")  # a link to a FIFO is still a FIFO
    linked = gather(spec(tmp_path / "linked.log"))
    assert isinstance(linked, ProbeError) and "(a FIFO)" in linked.detail


def _gz(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt") as gz:
        gz.write("".join(f"{line}\n" for line in lines))


def test_just_rotated_file_is_judged_from_its_siblings(tmp_path: Path) -> None:
    """logrotate with delaycompress: an empty current file, `.1` plain, older ones compressed."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    current = tmp_path / "audit.log"
    current.write_bytes(b"")
    (tmp_path / "audit.log.1").write_text("".join(line5424(now - dt.timedelta(minutes=m)) + "\n" for m in (9, 7, 5)))
    _gz(tmp_path / "audit.log.2.gz", [line5424(now - dt.timedelta(days=d)) for d in (200, 190)])
    _gz(tmp_path / "audit.log.3.gz", [line5424(now - dt.timedelta(days=d)) for d in (300, 250)])
    (tmp_path / "audit.log.bak").write_text(line5424(now - dt.timedelta(days=999)) + "\n")  # not logrotate's
    outcome = gather(spec(current))
    assert isinstance(outcome, ProbeFacts), outcome
    f = outcome.facts
    assert f["log.latest_event"] == iso(now - dt.timedelta(minutes=5))
    assert f["log.latest_event_in"] == str(tmp_path / "audit.log.1")
    assert f["log.oldest_event"] == iso(now - dt.timedelta(days=250))  # the later of its first events (300, 250)
    assert f["log.oldest_event_in"] == str(tmp_path / "audit.log.3.gz")
    # the sample (20 by default) runs on into older files until it is full: here it takes all 7 events
    assert f["log.sample.size"] == 7 and f["log.sample.complete"] == 7 and f["log.files_unread"] == []


def test_dateext_and_compress_without_delaycompress(tmp_path: Path) -> None:
    """`dateext` + `compress`: only .gz archives beside an empty file; the latest date is the newest."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    current = tmp_path / "audit.log"
    current.write_bytes(b"")
    _gz(tmp_path / "audit.log-20261130.gz", [line5424(now - dt.timedelta(days=2, minutes=m)) for m in (5, 1)])
    _gz(tmp_path / "audit.log-20261201.gz", [line5424(now - dt.timedelta(minutes=m)) for m in (30, 3)])
    (tmp_path / "audit.log-20261129.bz2").write_bytes(
        bz2.compress((line5424(now - dt.timedelta(days=3)) + "\n").encode())
    )
    (tmp_path / "audit.log-20261128.xz").write_bytes(
        lzma.compress((line5424(now - dt.timedelta(days=4)) + "\n").encode())
    )
    outcome = gather(spec(current, sample_size=2))
    assert isinstance(outcome, ProbeFacts), outcome
    f = outcome.facts
    assert f["log.latest_event"] == iso(now - dt.timedelta(minutes=3))
    assert f["log.latest_event_in"] == str(tmp_path / "audit.log-20261201.gz")
    assert f["log.oldest_event_in"] == str(tmp_path / "audit.log-20261128.xz")
    assert f["log.sample.size"] == 2


def test_rotated_siblings_are_what_logrotate_names_newest_first(tmp_path: Path) -> None:
    names = [
        "audit.log.10.gz", "audit.log.2.gz", "audit.log.1", "audit.log-20261130.gz", "audit.log-20261201",
        "audit.log.20261129.xz", "audit.log-2026-11-28-1764288000.bz2", "audit.log.3.zst",
        # not logrotate's rotations of audit.log:
        "audit.log.bak", "audit.log.1.gz.tmp", "audit.log-old", "audit.logx.1", "audit-bsd.log.1", "audit.log",
    ]  # fmt: skip
    for name in names:
        (tmp_path / name).write_bytes(b"")
    found = [Path(f.path).name for f in rotated_siblings(str(tmp_path / "audit.log"), Budget(30))]
    assert found == [
        "audit.log.1", "audit.log.2.gz", "audit.log.3.zst", "audit.log.10.gz", "audit.log-20261201",
        "audit.log-20261130.gz", "audit.log.20261129.xz", "audit.log-2026-11-28-1764288000.bz2",
    ]  # fmt: skip


def test_declared_archives_elsewhere_add_to_the_siblings(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    current = tmp_path / "logs" / "audit.log"
    current.parent.mkdir()
    current.write_text(line5424(now - dt.timedelta(minutes=2)) + "\n")
    _gz(current.parent / "audit.log.1.gz", [line5424(now - dt.timedelta(days=30))])
    moved = tmp_path / "archive"
    moved.mkdir()
    _gz(moved / "audit-2025.log.gz", [line5424(now - dt.timedelta(days=400))])
    outcome = gather(spec(current, archives=str(moved / "audit-*.log.gz")))
    assert isinstance(outcome, ProbeFacts), outcome
    assert outcome.facts["log.oldest_event_in"] == str(moved / "audit-2025.log.gz")
    assert outcome.facts["log.oldest_event"] == iso(now - dt.timedelta(days=400))
    assert outcome.facts["log.sample.size"] == 3  # the current file, then .1.gz, then the declared archive


def test_nothing_anywhere_is_still_empty(tmp_path: Path) -> None:
    current = tmp_path / "audit.log"
    current.write_bytes(b"")
    (tmp_path / "audit.log.1").write_bytes(b"")
    outcome = gather(spec(current))
    assert isinstance(outcome, ProbeError) and outcome.reason is ProbeErrorReason.PROTOCOL
    assert "log file is empty" in outcome.detail and "1 rotated file(s) hold none either" in outcome.detail


def test_unreadable_sibling_is_named_and_skipped_when_the_newest_event_does_not_need_it(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    current = tmp_path / "audit.log"
    current.write_text("".join(line5424(now - dt.timedelta(minutes=m)) + "\n" for m in range(25, 0, -1)))
    os.mkfifo(tmp_path / "audit.log.1")
    (tmp_path / "audit.log.2.gz").write_bytes(b"\x1f\x8b this is not gzip")
    os.symlink("/dev/zero", tmp_path / "audit.log.3")
    outcome = gather(spec(current))
    assert isinstance(outcome, ProbeFacts), outcome
    unread = outcome.facts["log.files_unread"]
    assert isinstance(unread, list) and len(unread) == 3, unread
    assert f"not a regular file: {tmp_path / 'audit.log.1'} (a FIFO)" in unread
    assert f"not a regular file: {tmp_path / 'audit.log.3'} (a symbolic link)" in unread
    assert any(str(tmp_path / "audit.log.2.gz") in u and "gzip" in u for u in unread), unread
    assert outcome.facts["log.oldest_event_in"] == str(current)


def test_unreadable_sibling_the_newest_event_needs_is_an_error(tmp_path: Path) -> None:
    current = tmp_path / "audit.log"
    current.write_bytes(b"")
    os.mkfifo(tmp_path / "audit.log.1")
    outcome = gather(spec(current))
    assert isinstance(outcome, ProbeError) and outcome.reason is ProbeErrorReason.FILE
    assert "not a regular file" in outcome.detail and "(a FIFO)" in outcome.detail


def _gzip_bomb(path: Path, gib: int) -> None:
    """`gib` GiB of zeros in about a megabyte per GiB: one 16 MiB member, repeated (gzip allows many members)."""
    member = gzip.compress(bytes(16 * 1024 * 1024), compresslevel=9)
    with path.open("wb") as f:
        for _ in range(64 * gib):
            f.write(member)


def test_gzip_bomb_is_bounded_in_time_and_memory(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    current = tmp_path / "audit.log"
    current.write_bytes(b"")
    _gzip_bomb(tmp_path / "audit.log.1.gz", 2)
    _gz(tmp_path / "audit.log.2.gz", [line5424(now - dt.timedelta(days=1))])
    tracemalloc.start()
    started = time.monotonic()
    try:
        outcome = gather(spec(current))
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(outcome, ProbeError) and outcome.reason is ProbeErrorReason.FILE, outcome
    assert "only the first 268435456 bytes decompressed (max_archive_bytes), and no event before that" in outcome.detail
    assert elapsed < 60 and peak < 64 * 1024 * 1024, (elapsed, peak)
    print(f"gzip bomb (2 GiB of zeros): error after {elapsed:.2f} s, peak {peak / 2**20:.1f} MiB traced")
    # the same bomb as an old archive while the current file is fresh: read only as far as its head is sought
    current.write_text(line5424(now - dt.timedelta(minutes=1)) + "\n")
    started = time.monotonic()
    fresh = gather(spec(current, sample_size=1))
    assert isinstance(fresh, ProbeFacts), fresh
    assert fresh.facts["log.latest_event_in"] == str(current) and time.monotonic() - started < 60
    assert fresh.facts["log.oldest_event_in"] == str(tmp_path / "audit.log.2.gz")


def test_archive_over_the_cap_is_read_in_part_and_named(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    current = tmp_path / "audit.log"
    current.write_text(line5424(now - dt.timedelta(minutes=1)) + "\n")
    _gz(tmp_path / "audit.log.1.gz", [line5424(now - dt.timedelta(days=1, seconds=s)) for s in range(5000, 0, -1)])
    outcome = gather(spec(current, max_archive_bytes=65536))
    assert isinstance(outcome, ProbeFacts), outcome
    f = outcome.facts
    assert f["log.latest_event_in"] == str(current) and f["log.sample.size"] == 20
    assert f["log.files_unread"] == [
        f"{tmp_path / 'audit.log.1.gz'}: only the first 65536 bytes decompressed (max_archive_bytes): "
        "its last events were not read"
    ]
    # its head was read all the same: the latest of its first 10 events
    assert f["log.oldest_event"] == iso(now - dt.timedelta(days=1, seconds=4991))


def test_slow_read_is_cut_at_the_time_budget(tmp_path: Path) -> None:
    """Decompressing a GiB takes far longer than a 50 ms budget: the read stops there, as a timeout error."""
    current = tmp_path / "audit.log"
    current.write_bytes(b"")
    _gzip_bomb(tmp_path / "audit.log.1.gz", 1)
    declared = SyslogFilesSpec.model_validate(spec(current, max_archive_bytes=4 * 1024**3))
    started = time.monotonic()
    with pytest.raises(LogBackendError) as info:
        SyslogFilesBackend().snapshot(declared, timeout_s=0.05, ctx=ProbeContext())
    assert time.monotonic() - started < 30
    assert info.value.reason is ProbeErrorReason.TIMEOUT
    assert info.value.detail == f"reading {tmp_path / 'audit.log.1.gz'} took longer than 0.05 s"


def test_a_read_stuck_in_the_kernel_is_given_up_by_the_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read on a hung network mount never returns and checks no budget: stood in for by a reader that waits
    until the test ends (no file system here can hang on purpose)."""
    release = threading.Event()

    def stuck(spec: SyslogFilesSpec, budget: Budget) -> LogSnapshot:
        release.wait(60)
        raise AssertionError("released")

    monkeypatch.setattr(syslog_files, "read_snapshot", stuck)
    monkeypatch.setattr(syslog_files, "WATCHDOG_GRACE_S", 0.2)
    declared = SyslogFilesSpec.model_validate(spec(tmp_path / "audit.log"))
    started = time.monotonic()
    threads = threading.active_count()
    try:
        with pytest.raises(LogBackendError) as info:
            SyslogFilesBackend().snapshot(declared, timeout_s=0.3, ctx=ProbeContext())
        # The agent scans again while the kernel still holds the first reader: answered at once, no second thread.
        with pytest.raises(LogBackendError) as again:
            SyslogFilesBackend().snapshot(declared, timeout_s=0.3, ctx=ProbeContext())
        assert threading.active_count() == threads + 1
    finally:
        release.set()
    assert time.monotonic() - started < 30
    assert info.value.reason is ProbeErrorReason.TIMEOUT
    assert info.value.detail == f"reading {tmp_path / 'audit.log'} did not finish within 0.5 s (a hung mount?)"
    assert again.value.reason is ProbeErrorReason.TIMEOUT and "has not returned yet" in again.value.detail
    deadline = time.monotonic() + 30  # once the kernel lets the reader go, the path is read again
    while str(tmp_path / "audit.log") in syslog_files._STUCK and time.monotonic() < deadline:
        time.sleep(0.05)
    assert str(tmp_path / "audit.log") not in syslog_files._STUCK


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


def test_one_old_line_does_not_make_hours_of_log_read_as_decades(tmp_path: Path) -> None:
    """A device whose clock reset to 2000-01-01 (or a spoofed syslog line) heads a file of 20 hours: the retention
    age is read from the file's first events together, never from that one line (LOG-02 must not pass on it)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    current = tmp_path / "audit.log"
    reset = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    lines = [line5424(reset)] + [line5424(now - dt.timedelta(minutes=24 * m)) for m in range(50, 0, -1)]
    current.write_text("\n".join(lines) + "\n")
    outcome = gather(spec(current))
    assert isinstance(outcome, ProbeFacts), outcome
    assert outcome.facts["log.oldest_event_age_days"] < 1, outcome.facts["log.oldest_event"]


def test_a_line_nested_deeper_than_the_json_parser_is_an_ordinary_event(tmp_path: Path) -> None:
    """A syslog line with JSON nested 5,000 levels raised RecursionError: the whole system's LOG-01..03 read as a bug
    in hcscan ('internal') until the line left the sample (found in review). Now the line is an event without fields."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    deep = '{"a":' + "[" * 5000 + "]" * 5000 + "}"
    current = tmp_path / "audit.log"
    current.write_text(line5424(now - dt.timedelta(minutes=2)) + "\n" + line5424(now, msg=deep) + "\n")
    outcome = gather(spec(current))
    assert isinstance(outcome, ProbeFacts), outcome
    assert outcome.facts["log.latest_event_age_hours"] < 0.1 and outcome.facts["log.sample.size"] == 2

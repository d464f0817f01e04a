"""The `syslog-files` backend: a collector's per-host file and the files logrotate made of it, read from both
ends only.

The newest events are read backwards from the end of the current file and, when it holds too few (it was just
rotated), from the end of its rotated files, newest first: `path.1`, `path.2.gz` … (numbered) or
`path-20261201`, `path-20261201.gz` … (`dateext`), plain or compressed (gzip, bzip2, xz), plus any files matched
by `archives`. The oldest event is the earliest first event of all of them. Plain files cost at most
`max_scan_bytes` from either end, so a file of many gigabytes costs a few block reads; a compressed archive
whose newest events are needed is decompressed to its end, but never beyond `max_archive_bytes` (a gzip bomb
stops there). Files are opened without blocking and must be regular files (a FIFO, device, directory or, among
the rotated files, a symbolic link is refused), and every block read checks the snapshot's time budget.

Lines are RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`), rsyslog's RFC 3339 file format
(`TIMESTAMP HOST MSG`) or RFC 3164 (`Mmm dd hh:mm:ss HOST MSG`, optionally after `<PRI>`). RFC 3164 has neither
year nor zone: times are read in the scan machine's zone and the year is the latest that does not put the event
after the file's last write, which can make an event look younger than it is but never older (retention is never
overstated).
"""

from __future__ import annotations

import bz2
import datetime as dt
import errno
import glob
import gzip
import io
import json
import lzma
import os
import re
import stat
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, ClassVar, cast

from scanner.probes.base import ProbeContext, ProbeErrorReason
from scanner.probes.logbackends.base import LogBackendError, LogEvent, LogSnapshot, has_value, parse_time
from scanner.probes.logbackends.spec import SyslogFieldNames, SyslogFilesSpec

BLOCK = 64 * 1024
MAX_LINE = 64 * 1024  # a longer line is not a syslog record we can trust
MAX_ARCHIVES = 1000
_MONTHS = {
    m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)
}

_RFC5424 = re.compile(
    r"^(?:<\d{1,3}>)?1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) ?(?P<rest>.*)$"
)
_RFC3339_FILE = re.compile(r"^(?:<\d{1,3}>)?(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S*) (?P<host>\S+) (?P<rest>.*)$")
_RFC3164 = re.compile(
    r"^(?:<\d{1,3}>)?(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (?P<day>[ \d]\d) "
    r"(?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)(?:\.\d+)? (?P<host>\S+) (?P<rest>.*)$"
)
_KV = re.compile(r"""(?:^|[\s,;])([A-Za-z_][A-Za-z0-9_.\-]*)=("(?:[^"\\]|\\.)*"|[^\s,;]*)""")


@dataclass(frozen=True)
class SyslogRecord:
    """One parsed line: its time (None for RFC 5424's nil timestamp), whether the year was inferred, its fields."""

    time: dt.datetime | None
    year_inferred: bool
    fields: Mapping[str, Any]


# -- parsing (pure) --------------------------------------------------------------------------------


def parse_structured_data(text: str) -> tuple[dict[str, str], str] | None:
    """RFC 5424 STRUCTURED-DATA at the start of `text` → (params of all elements, the MSG after it); None if broken."""
    if text.startswith("-"):
        if len(text) > 1 and text[1] != " ":
            return None
        return {}, text[2:]
    params: dict[str, str] = {}
    i, n = 0, len(text)
    if not text.startswith("["):
        return None
    while i < n and text[i] == "[":
        i += 1
        while i < n and text[i] not in " ]":
            i += 1
        while True:
            while i < n and text[i] == " ":
                i += 1
            if i >= n:
                return None
            if text[i] == "]":
                i += 1
                break
            eq = text.find("=", i)
            if eq < 0 or eq + 1 >= n or text[eq + 1] != '"':
                return None
            name = text[i:eq]
            i = eq + 2
            value: list[str] = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n and text[i + 1] in '"\\]':
                    i += 1
                value.append(text[i])
                i += 1
            if i >= n:
                return None
            i += 1
            params.setdefault(name, "".join(value))
    return params, text[i + 1 :] if i < n and text[i] == " " else text[i:]


def message_fields(msg: str) -> dict[str, Any]:
    """Fields of a free-text message: a JSON object (`@cee:` or bare) or `key=value` pairs."""
    body = msg.strip()
    if "@cee:" in body[:200]:
        body = body[body.index("@cee:") + 5 :].strip()
    brace = body.find("{")
    if 0 <= brace < 200 and body.endswith("}"):
        try:
            data = json.loads(body[brace:])
        except (ValueError, RecursionError):  # a hostile line may nest deeper than the parser's stack
            data = None
        if isinstance(data, dict):
            return data
    fields: dict[str, Any] = {}
    for key, raw in _KV.findall(msg):
        value = raw[1:-1].replace('\\"', '"') if raw.startswith('"') and len(raw) >= 2 else raw
        fields.setdefault(key, value)
    return fields


def _bsd_time(mon: str, day: int, h: int, m: int, s: int, reference: dt.datetime) -> dt.datetime | None:
    """The latest year that puts the timestamp no later than a day after `reference`, in the local zone."""
    limit = reference + dt.timedelta(days=1)
    for year in range(reference.year + 1, reference.year - 5, -1):
        try:
            when = dt.datetime(year, _MONTHS[mon], day, h, m, s).astimezone(dt.UTC)
        except ValueError:  # 29 February of a common year
            continue
        if when <= limit:
            return when
    return None


def parse_line(raw: bytes, reference: dt.datetime) -> SyslogRecord | None:
    """One log line → record, or None when it is not syslog we can read."""
    if len(raw) > MAX_LINE:
        return None
    line = raw.decode("utf-8", errors="replace").rstrip("\r")
    m = _RFC5424.match(line)
    if m:
        ts = m["ts"]
        when = None if ts == "-" else parse_time(ts)
        if when is None and ts != "-":
            return None
        sd = parse_structured_data(m["rest"])
        if sd is None:
            return None
        params, msg = sd
        return SyslogRecord(when, False, {**message_fields(msg), **params})
    m = _RFC3339_FILE.match(line)
    if m:
        when = parse_time(m["ts"])
        return None if when is None else SyslogRecord(when, False, message_fields(m["rest"]))
    m = _RFC3164.match(line)
    if m:
        when = _bsd_time(m["mon"], int(m["day"]), int(m["h"]), int(m["m"]), int(m["s"]), reference)
        if when is None or not (0 <= int(m["h"]) < 24 and 0 <= int(m["m"]) < 60 and 0 <= int(m["s"]) < 61):
            return None
        return SyslogRecord(when, True, message_fields(m["rest"]))
    return None


def to_event(record: SyslogRecord, names: SyslogFieldNames) -> LogEvent:
    def present(keys: list[str]) -> bool:
        return any(has_value(record.fields.get(k)) for k in keys)

    return LogEvent(record.time, present(names.user), present(names.subject), present(names.action))


# -- reading (I/O, bounded) ------------------------------------------------------------------------


class Unreadable(Exception):
    """One file could not be read (missing, not a regular file, corrupt, over a cap or the time budget)."""

    def __init__(self, reason: ProbeErrorReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Budget:
    """The time a snapshot may take; every block read checks it, so no file can keep the scan waiting."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def check(self, path: str) -> None:
        if self.expired():
            raise Unreadable(ProbeErrorReason.TIMEOUT, f"reading {path} took longer than {self.seconds:g} s")


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular(path: str, *, follow_link: bool) -> tuple[int, os.stat_result]:
    """Open `path` without ever blocking (a FIFO with no writer would wait forever) → (fd, stat) of a regular file.

    `follow_link=False` refuses a symbolic link as the last component: rotation never makes one.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
    if not follow_link:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise Unreadable(ProbeErrorReason.FILE, f"log file not found: {path}") from None
    except PermissionError:
        raise Unreadable(ProbeErrorReason.FILE, f"permission denied: {path}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_link:
            raise Unreadable(ProbeErrorReason.FILE, f"not a regular file: {path} (a symbolic link)") from None
        raise Unreadable(ProbeErrorReason.FILE, f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        raise Unreadable(ProbeErrorReason.FILE, f"cannot stat {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
        raise Unreadable(ProbeErrorReason.FILE, f"not a regular file: {path} ({kind})")
    return fd, info


class _CappedRaw(io.RawIOBase):
    """The compressed bytes of an archive, read under a byte cap and the time budget (a decompressor that
    loops over empty gzip members still reads through here)."""

    def __init__(self, fd: int, path: str, cap: int, budget: Budget) -> None:
        super().__init__()
        self._fd, self._path, self._cap, self._budget, self.consumed = fd, path, cap, budget, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._budget.check(self._path)
        if self.consumed >= self._cap:
            raise Unreadable(ProbeErrorReason.FILE, f"{self._path}: more than {self._cap} compressed bytes")
        view = memoryview(buffer).cast("B")
        data = os.read(self._fd, min(len(view), BLOCK, self._cap - self.consumed))
        view[: len(data)] = data
        self.consumed += len(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


_DECOMPRESSED = (".gz", ".bz2", ".xz")


def decompressing(suffix: str, raw: io.RawIOBase) -> IO[bytes]:
    """The decompressed stream of an archive (closed by the caller, with `raw`)."""
    compressed = cast(IO[bytes], raw)
    if suffix == ".gz":
        return cast(IO[bytes], gzip.GzipFile(fileobj=compressed, mode="rb"))
    if suffix == ".bz2":
        return cast(IO[bytes], bz2.BZ2File(compressed, "rb"))
    return cast(IO[bytes], lzma.LZMAFile(compressed, "rb"))


_FORMATS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd", ".lz4": "lz4", ".Z": "compress"}
_UNSUPPORTED = (".zst", ".lz4", ".Z")
_CORRUPT = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


@dataclass(frozen=True)
class LogFile:
    """One file of the log: the current file or a rotated sibling. `rank` orders siblings newest first."""

    path: str
    rank: tuple[int, int, int] = (0, 0, 0)

    @property
    def compression(self) -> str | None:
        suffix = os.path.splitext(self.path)[1]
        return suffix if suffix in _DECOMPRESSED or suffix in _UNSUPPORTED else None


@dataclass
class Opened:
    """An open log file: its decompressed stream (compressed archives) or the file itself, and its last write."""

    stream: IO[bytes]
    size: int | None  # bytes of a plain file; None for a compressed stream (read forwards only)
    mtime: dt.datetime
    raw: _CappedRaw | None = None

    def close(self) -> None:
        self.stream.close()
        if self.raw is not None:
            self.raw.close()


def open_log(log: LogFile, *, current: bool, cap: int, budget: Budget) -> Opened:
    """Open a log file for reading: regular files only, never blocking, compressed ones through a capped reader."""
    if log.compression in _UNSUPPORTED:
        raise Unreadable(
            ProbeErrorReason.FILE,
            f"{log.path}: {_FORMATS[log.compression]} archives cannot be read (use gzip, bzip2 or xz)",
        )
    fd, info = open_regular(log.path, follow_link=current)
    mtime = dt.datetime.fromtimestamp(info.st_mtime, dt.UTC)
    if log.compression is None:
        return Opened(open(fd, "rb", closefd=True), info.st_size, mtime)  # closed by the caller
    raw = _CappedRaw(fd, log.path, cap, budget)
    try:
        stream = decompressing(log.compression, raw)
    except _CORRUPT as exc:
        raw.close()
        raise Unreadable(
            ProbeErrorReason.FILE, f"{log.path}: not a readable {_FORMATS[log.compression]} archive ({exc})"
        ) from None
    return Opened(stream, None, mtime, raw)


def lines_backwards(
    f: IO[bytes], size: int, max_bytes: int, budget: Budget | None = None, path: str = ""
) -> Iterator[bytes]:
    """Complete lines from the end of the file towards its start, reading at most `max_bytes`."""
    pos, read, rest, at_end = size, 0, b"", True
    while pos > 0 and read < max_bytes:
        if budget is not None:
            budget.check(path)
        step = min(BLOCK, pos, max_bytes - read)
        pos -= step
        f.seek(pos)
        chunk = f.read(step)
        read += len(chunk)
        parts = (chunk + rest).split(b"\n")
        rest = parts[0]
        for line in reversed(parts[1:]):
            if at_end and line == b"":  # the file's final newline
                at_end = False
                continue
            at_end = False
            if line.strip():
                yield line
        if len(rest) > MAX_LINE:  # one huge line: report it once as a malformed record, then give up on it
            yield rest[-MAX_LINE - 1 :]
            return
    if pos == 0 and rest.strip():
        yield rest


def lines_forwards(f: IO[bytes], max_bytes: int, budget: Budget | None = None, path: str = "") -> Iterator[bytes]:
    read = 0
    while read < max_bytes:
        if budget is not None:
            budget.check(path)
        line = f.readline(MAX_LINE + 1)
        if not line:
            return
        read += len(line)
        if line.strip():
            yield line.rstrip(b"\n")


def stream_tail(stream: IO[bytes], path: str, keep: int, cap: int, budget: Budget) -> tuple[bytes, bool]:
    """The last `keep` bytes of a stream read to its end (or to `cap` bytes) → (tail, whether the end was reached).

    A trimmed tail starts at a line boundary."""
    chunks: deque[bytes] = deque()
    held = total = 0
    trimmed = complete = False
    while total < cap:
        budget.check(path)
        chunk = stream.read(min(BLOCK, cap - total))
        if not chunk:
            complete = True
            break
        total += len(chunk)
        chunks.append(chunk)
        held += len(chunk)
        while chunks and held - len(chunks[0]) >= keep:
            held -= len(chunks.popleft())
            trimmed = True
    tail = b"".join(chunks)
    if len(tail) > keep:
        tail, trimmed = tail[-keep:], True
    if trimmed:
        tail = tail[tail.find(b"\n") + 1 :] if b"\n" in tail else b""
    return tail, complete


def newest_lines(opened: Opened, log: LogFile, spec: SyslogFilesSpec, budget: Budget) -> tuple[Iterator[bytes], bool]:
    """Lines from the end of a file backwards → (lines, whether the whole file was seen to its end)."""
    if opened.size is not None:
        return lines_backwards(opened.stream, opened.size, spec.max_scan_bytes, budget, log.path), True
    try:
        tail, complete = stream_tail(opened.stream, log.path, spec.max_scan_bytes, spec.max_archive_bytes, budget)
    except _CORRUPT as exc:
        raise Unreadable(
            ProbeErrorReason.FILE,
            f"{log.path}: corrupt {_FORMATS.get(log.compression or '', 'compressed')} archive ({exc})",
        ) from None
    return lines_backwards(io.BytesIO(tail), len(tail), len(tail)), complete


HEAD_EVENTS = 10  # a file's age is read from its first events, and one of them alone is never believed


def first_event_time(opened: Opened, log: LogFile, max_bytes: int, budget: Budget) -> tuple[dt.datetime | None, bool]:
    """When the file's log begins, read conservatively: the newest of its first HEAD_EVENTS timestamps.

    A retention verdict must not rest on one line: a device whose clock reset to 2000-01-01 after a power loss, or
    anyone who can send the collector a syslog line, would otherwise make hours of log read as decades. Taking the
    latest of the first events costs at most the minutes between them and never claims more than the file shows.
    """
    times: list[tuple[dt.datetime, bool]] = []
    try:
        for line in lines_forwards(opened.stream, max_bytes, budget, log.path):
            record = parse_line(line, opened.mtime)
            if record is not None and record.time is not None:
                times.append((record.time, record.year_inferred))
                if len(times) >= HEAD_EVENTS:
                    break
    except _CORRUPT as exc:
        raise Unreadable(
            ProbeErrorReason.FILE,
            f"{log.path}: corrupt {_FORMATS.get(log.compression or '', 'compressed')} archive ({exc})",
        ) from None
    if not times:
        return None, False
    return max(times, key=lambda t: t[0])


# -- finding the rotated files ---------------------------------------------------------------------

_COMPRESSED_SUFFIX = r"(?:\.gz|\.bz2|\.xz|\.zst|\.lz4|\.Z)?"


def _rank(m: re.Match[str]) -> tuple[int, int, int]:
    """.1 is newer than .2; a later date is newer than an earlier one (its first eight digits, then the rest, so
    -20261201 is newer than -20261128-1764288000)."""
    if m["n"] is not None:
        return (1, int(m["n"]), 0)
    digits = m["date"].replace("-", "")[:30]
    return (2, -int(digits[:8]), -int(digits[8:] or 0))


def rotated_siblings(path: str, budget: Budget) -> list[LogFile]:
    """The files logrotate (numbered or `dateext`, with or without `compress`/`delaycompress`) leaves beside
    `path`: `path.1`, `path.2.gz`, `path-20261201`, `path-20261201.gz`, `path-2026-12-01-1764633600.xz` …"""
    directory, base = os.path.split(path)
    pattern = re.compile(
        rf"^{re.escape(base)}(?:\.(?P<n>\d{{1,6}})|[-.](?P<date>\d[\d-]{{5,40}}\d)){_COMPRESSED_SUFFIX}$"
    )
    found: list[LogFile] = []
    try:
        with os.scandir(directory or ".") as entries:
            for i, entry in enumerate(entries):
                if i % 1024 == 0:
                    budget.check(directory)
                m = pattern.match(entry.name)
                if m is None:
                    continue
                found.append(LogFile(os.path.join(directory, entry.name), _rank(m)))
    except OSError:
        return []  # the directory itself is unreadable: the current file's own error says so
    return sorted(found, key=lambda f: f.rank)


def declared_archives(spec: SyslogFilesSpec, known: set[str], budget: Budget) -> list[LogFile]:
    """Files matched by `audit_log.archives` that are not the current file or one of its siblings, newest last
    write first (at most MAX_ARCHIVES of them are looked at)."""
    if spec.archives is None:
        return []
    extra: list[tuple[float, str]] = []
    for i, p in enumerate(glob.iglob(spec.archives)):
        if i % 256 == 0:
            budget.check(spec.archives)
        if i >= MAX_ARCHIVES:
            break
        if os.path.normpath(p) in known:
            continue
        try:
            extra.append((os.lstat(p).st_mtime, p))
        except OSError:
            continue
    extra.sort(key=lambda t: (-t[0], t[1]))
    return [LogFile(p, (3, i, 0)) for i, (_, p) in enumerate(extra)]


def log_files(spec: SyslogFilesSpec, budget: Budget) -> list[LogFile]:
    """The current file first, then its rotated files newest first (at most MAX_ARCHIVES of them)."""
    siblings = rotated_siblings(spec.path, budget)
    known = {os.path.normpath(spec.path), *(os.path.normpath(f.path) for f in siblings)}
    return [LogFile(spec.path), *(siblings + declared_archives(spec, known, budget))[:MAX_ARCHIVES]]


# -- the snapshot ----------------------------------------------------------------------------------


@dataclass
class _Newest:
    """What reading newest-first found so far."""

    events: list[LogEvent]
    window: int = 0
    malformed: int = 0
    latest: dt.datetime | None = None
    latest_in: str | None = None
    inferred: bool = False
    first_bad: bytes | None = None

    def full(self, sample_size: int) -> bool:
        return self.window >= sample_size and self.latest is not None


def read_snapshot(spec: SyslogFilesSpec, budget: Budget) -> LogSnapshot:
    """Newest events (and the sample) newest-first across the current file and its rotated files; the oldest
    event from the start of every one of them. Raises Unreadable only for what the newest event needs."""
    files = log_files(spec, budget)
    found = _Newest([])
    unread: list[str] = []
    oldest: tuple[dt.datetime, str] | None = None
    inferred = False
    current_size = 0
    for index, log in enumerate(files):
        if index > 0 and budget.expired():
            if found.latest is None:
                budget.check(log.path)  # the newest event is still unknown: a timeout, not an empty log
            unread.append(f"{log.path} and {len(files) - index - 1} older file(s): time budget spent")
            break
        needed = not found.full(spec.sample_size)
        try:
            opened = open_log(log, current=index == 0, cap=spec.max_archive_bytes, budget=budget)
            if index == 0:
                current_size = opened.size or 0
            try:
                if needed:
                    note = _read_newest(opened, log, spec, budget, found)
                    if note is not None:
                        unread.append(note)
                    if opened.size is None:  # a compressed stream read to its tail: open it again for its head
                        opened.close()
                        opened = open_log(log, current=False, cap=spec.max_archive_bytes, budget=budget)
                    else:
                        opened.stream.seek(0)
                when, head_inferred = first_event_time(opened, log, spec.max_scan_bytes, budget)
            finally:
                opened.close()
        except Unreadable as exc:
            if found.latest is None:
                raise  # the newest event depends on this file: could not assess
            unread.append(exc.detail)
            continue
        if when is not None and (oldest is None or when < oldest[0]):
            oldest, inferred = (when, log.path), inferred or head_inferred
    if found.latest is None:
        raise _nothing_found(spec, files, found, current_size)
    return LogSnapshot(
        source=spec.path,
        latest=found.latest,
        oldest=None if oldest is None else oldest[0],
        sample=tuple(found.events),
        malformed=found.malformed,
        year_inferred=found.inferred or inferred,
        latest_in=found.latest_in,
        oldest_in=None if oldest is None else oldest[1],
        unread=tuple(unread),
    )


def _read_newest(opened: Opened, log: LogFile, spec: SyslogFilesSpec, budget: Budget, found: _Newest) -> str | None:
    """Add a file's lines, newest first, to what was found → a note when the file could be read only in part."""
    lines, complete = newest_lines(opened, log, spec, budget)
    for line in lines:
        record = parse_line(line, opened.mtime)
        in_window = found.window < spec.sample_size
        found.window += 1
        if record is None:
            found.malformed += in_window
            found.first_bad = found.first_bad or line
        elif in_window:
            found.events.append(to_event(record, spec.fields))
        if record is not None and record.time is not None and (found.latest is None or record.time > found.latest):
            found.latest, found.latest_in = record.time, log.path
            found.inferred = found.inferred or record.year_inferred
        if found.full(spec.sample_size):
            break
    if not complete:
        detail = f"{log.path}: only the first {spec.max_archive_bytes} bytes decompressed (max_archive_bytes)"
        if found.latest is None:
            raise Unreadable(ProbeErrorReason.FILE, f"{detail}, and no event before that")
        return f"{detail}: its last events were not read"
    return None


def _nothing_found(spec: SyslogFilesSpec, files: list[LogFile], found: _Newest, current_size: int) -> LogBackendError:
    rotated = len(files) - 1
    also = f"; its {rotated} rotated file(s) hold none either" if rotated else ""
    if current_size == 0 and found.window == 0:
        return LogBackendError(ProbeErrorReason.PROTOCOL, f"log file is empty: {spec.path} (no events at all{also})")
    shown = (found.first_bad or b"")[:120].decode("utf-8", errors="replace")
    return LogBackendError(
        ProbeErrorReason.PROTOCOL,
        f"no readable syslog line with a timestamp in the last {min(current_size, spec.max_scan_bytes)} "
        f"bytes of {spec.path}{also} ({found.window} line(s) read; e.g. {shown!r})",
    )


WATCHDOG_GRACE_S = 5.0  # beyond the budget, for a read stuck in the kernel (a hung network mount)


# Paths whose read the watchdog gave up on while the kernel still holds the reading thread (a hard NFS mount): the
# agent scans again and again, so a later scan of such a path answers at once instead of starting another thread.
_STUCK: set[str] = set()
_STUCK_LOCK = threading.Lock()


class SyslogFilesBackend:
    """Reads a per-host file written by rsyslog/syslog-ng and the files logrotate made of it."""

    name: ClassVar[str] = "syslog-files"

    def snapshot(self, spec: Any, *, timeout_s: float, ctx: ProbeContext) -> LogSnapshot:
        """Read within `timeout_s` (checked at every block); a read the kernel never returns from is given up
        after a grace period on a watchdog, so no file can hold the scan."""
        assert isinstance(spec, SyslogFilesSpec)
        budget = Budget(timeout_s)
        result: list[LogSnapshot | BaseException] = []
        with _STUCK_LOCK:
            if spec.path in _STUCK:  # an earlier read of this path is still held by the kernel: don't pile up
                raise LogBackendError(
                    ProbeErrorReason.TIMEOUT,
                    f"an earlier read of {spec.path} has not returned yet (a hung mount?): not read again",
                )

        def run() -> None:
            try:
                result.append(read_snapshot(spec, budget))
            except BaseException as exc:  # handed to the caller's thread
                result.append(exc)
            finally:
                with _STUCK_LOCK:
                    _STUCK.discard(spec.path)

        worker = threading.Thread(target=run, name="hcscan-syslog-files", daemon=True)
        worker.start()
        worker.join(timeout_s + WATCHDOG_GRACE_S)
        with _STUCK_LOCK:  # the reader appends its result before it clears the mark: checked under the same lock
            if not result:  # given up, not killed: one stuck thread per path, never one per scan
                _STUCK.add(spec.path)
        if not result:
            raise LogBackendError(
                ProbeErrorReason.TIMEOUT,
                f"reading {spec.path} did not finish within {timeout_s + WATCHDOG_GRACE_S:g} s (a hung mount?)",
            )
        outcome = result[0]
        if isinstance(outcome, LogSnapshot):
            return outcome
        if isinstance(outcome, Unreadable):
            raise LogBackendError(outcome.reason, outcome.detail) from None
        if isinstance(outcome, LogBackendError):
            raise outcome
        if isinstance(outcome, _CORRUPT):
            raise LogBackendError(ProbeErrorReason.FILE, f"cannot read {spec.path}: {outcome}") from None
        raise outcome

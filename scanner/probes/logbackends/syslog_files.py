"""The `syslog-files` backend: a collector's per-host file, read from both ends only.

The newest events are read backwards from the end of the file and the oldest from the start (and
from the start of rotated archives, gzip included), each within `max_scan_bytes`, so a file of many
gigabytes costs a few block reads. Lines are RFC 5424 (`<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG`),
rsyslog's RFC 3339 file format (`TIMESTAMP HOST MSG`) or RFC 3164 (`Mmm dd hh:mm:ss HOST MSG`,
optionally after `<PRI>`). RFC 3164 has neither year nor zone: times are read in the scan machine's
zone and the year is the latest that does not put the event after the file's last write, which can
make an event look younger than it is but never older (retention is never overstated).
"""

from __future__ import annotations

import datetime as dt
import glob
import gzip
import json
import os
import re
import zlib
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
        except ValueError:
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


def lines_backwards(f: IO[bytes], size: int, max_bytes: int) -> Iterator[bytes]:
    """Complete lines from the end of the file towards its start, reading at most `max_bytes`."""
    pos, read, rest, at_end = size, 0, b"", True
    while pos > 0 and read < max_bytes:
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


def lines_forwards(f: IO[bytes], max_bytes: int) -> Iterator[bytes]:
    read = 0
    while read < max_bytes:
        line = f.readline(MAX_LINE + 1)
        if not line:
            return
        read += len(line)
        if line.strip():
            yield line.rstrip(b"\n")


def _mtime(stat: os.stat_result) -> dt.datetime:
    return dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC)


def _open_archive(path: str) -> IO[bytes]:
    """A rotated file; gzip archives are decompressed only as far as they are read."""
    return cast(IO[bytes], gzip.open(path, "rb")) if path.endswith(".gz") else open(path, "rb")


def _first_event_time(f: IO[bytes], max_bytes: int, reference: dt.datetime) -> tuple[dt.datetime | None, bool]:
    for line in lines_forwards(f, max_bytes):
        record = parse_line(line, reference)
        if record is not None and record.time is not None:
            return record.time, record.year_inferred
    return None, False


class SyslogFilesBackend:
    """Reads a per-host file written by rsyslog/syslog-ng (and its rotated archives for retention)."""

    name: ClassVar[str] = "syslog-files"

    def snapshot(self, spec: Any, *, timeout_s: float, ctx: ProbeContext) -> LogSnapshot:
        assert isinstance(spec, SyslogFilesSpec)
        try:
            return self._snapshot(spec)
        except LogBackendError:
            raise
        except FileNotFoundError:
            raise LogBackendError(ProbeErrorReason.UNREACHABLE, f"log file not found: {spec.path}") from None
        except IsADirectoryError:
            raise LogBackendError(ProbeErrorReason.PROTOCOL, f"not a file: {spec.path}") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise LogBackendError(ProbeErrorReason.UNREACHABLE, f"cannot read {spec.path}: {exc}") from None

    def _snapshot(self, spec: SyslogFilesSpec) -> LogSnapshot:
        with open(spec.path, "rb") as f:
            stat = os.fstat(f.fileno())
            if stat.st_size == 0:
                raise LogBackendError(ProbeErrorReason.PROTOCOL, f"log file is empty: {spec.path} (no events at all)")
            reference = _mtime(stat)
            events: list[LogEvent] = []
            malformed, window, inferred = 0, 0, False
            latest: dt.datetime | None = None
            first_bad: bytes | None = None
            for line in lines_backwards(f, stat.st_size, spec.max_scan_bytes):
                record = parse_line(line, reference)
                in_window = window < spec.sample_size
                window += 1
                if record is None:
                    malformed += in_window
                    first_bad = first_bad or line
                elif in_window:
                    events.append(to_event(record, spec.fields))
                if record is not None and record.time is not None:
                    latest = record.time if latest is None else max(latest, record.time)
                    inferred = inferred or record.year_inferred
                if window >= spec.sample_size and latest is not None:
                    break
            if latest is None:
                shown = (first_bad or b"")[:120].decode("utf-8", errors="replace")
                raise LogBackendError(
                    ProbeErrorReason.PROTOCOL,
                    f"no readable syslog line with a timestamp in the last {min(stat.st_size, spec.max_scan_bytes)} "
                    f"bytes of {spec.path} ({window} line(s) read; e.g. {shown!r})",
                )
            f.seek(0)
            oldest, head_inferred = _first_event_time(f, spec.max_scan_bytes, reference)
        inferred = inferred or head_inferred
        for archive in self._archives(spec):
            with _open_archive(archive) as af:
                when, arch_inferred = _first_event_time(af, spec.max_scan_bytes, _mtime(os.stat(archive)))
            if when is not None and (oldest is None or when < oldest):
                oldest, inferred = when, inferred or arch_inferred
        return LogSnapshot(
            source=spec.path,
            latest=latest,
            oldest=oldest,
            sample=tuple(events),
            malformed=malformed,
            year_inferred=inferred,
        )

    @staticmethod
    def _archives(spec: SyslogFilesSpec) -> list[str]:
        if spec.archives is None:
            return []
        found = sorted(p for p in glob.glob(spec.archives) if os.path.isfile(p) and p != spec.path)
        return found[:MAX_ARCHIVES]

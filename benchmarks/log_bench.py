"""Freshness and retention of a 2 GB per-host syslog file: how long the syslog-files backend takes.

Writes a real (dense) file of RFC 5424 lines — oldest events first, newest last — evicts it from the
page cache (posix_fadvise DONTNEED on this file only), then times the audit-log probe cold and warm.
The backend reads blocks from both ends only, so the time does not grow with the file.

    python benchmarks/log_bench.py [--size-gb 2] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

from scanner.probes.auditlog import AuditLogProbe
from scanner.probes.base import SYSTEM_LEVEL, ProbeContext, ProbeFacts, Target


def line(when: dt.datetime, i: int) -> bytes:
    return f"<86>1 {when.isoformat()} epj01 epj-audit 42 - - user=u{i % 97} patient=0101{i % 9973:06d} action=read\n".encode()


def write_file(path: Path, size: int, now: dt.datetime) -> None:
    oldest = now - dt.timedelta(days=365)
    middle = now - dt.timedelta(days=100)
    block = b"".join(line(middle, i) for i in range(8000))  # ~1 MB of plausible lines
    with path.open("wb") as f:
        f.write(b"".join(line(oldest + dt.timedelta(seconds=i), i) for i in range(1000)))
        while f.tell() < size:
            f.write(block)
        f.write(b"".join(line(now - dt.timedelta(seconds=1000 - i), i) for i in range(1000)))
        f.flush()
        os.fsync(f.fileno())


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def measure(path: Path) -> tuple[float, ProbeFacts]:
    target = Target(
        "epj/*",
        "epj",
        "127.0.0.1",
        0,
        SYSTEM_LEVEL,
        declared={"system": {"audit_log": {"backend": "syslog-files", "path": str(path)}}},
    )
    started = time.perf_counter()
    outcome = AuditLogProbe().gather([target], ProbeContext())[target.key]
    elapsed = time.perf_counter() - started
    assert isinstance(outcome, ProbeFacts), outcome
    return elapsed, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "audit.log"
        t0 = time.perf_counter()
        write_file(path, int(args.size_gb * 1024**3), now)
        print(f"wrote {path.stat().st_size / 1024**3:.2f} GiB in {time.perf_counter() - t0:.1f} s")
        evict(path)
        cold, facts = measure(path)
        warm, _ = measure(path)
        f = facts.facts
        print(f"latest event {f['log.latest_event']} ({f['log.latest_event_age_hours']} h old)")
        print(f"oldest event {f['log.oldest_event']} ({f['log.oldest_event_age_days']} days old)")
        print(f"sample: {f['log.sample.complete']}/{f['log.sample.size']} complete")
        print(
            f"freshness + retention + sample of a {args.size_gb:g} GB file: cold {cold * 1000:.1f} ms, warm {warm * 1000:.1f} ms"
        )
        assert cold < 1.0, "must take under 1 s"


if __name__ == "__main__":
    main()

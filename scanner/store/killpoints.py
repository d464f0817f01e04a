"""TEST-ONLY kill points: deterministic crashes for the crash tests (tests/crash/test_kill_points.py).

With the environment variable ``HCSCAN_TEST_KILL_AT=<point>`` set, the process SIGKILLs itself when the store
reaches that named point (no cleanup, no exception handler, no atexit: as if the machine's OOM killer struck).
The variable is read once, at import; when it is unset (always, outside the tests) `kill_point` is a single
comparison with None and does nothing else. Points:

- ``run_created``   — `start_run` committed the run row (nothing probed yet)
- ``mid_findings``  — `complete_run` inside its transaction, after the first batch of finding rows
- ``before_commit`` — `complete_run` inside its transaction, everything written and flushed, just before COMMIT
- ``after_commit``  — `complete_run` just after COMMIT, before it returns
"""

from __future__ import annotations

import os
import signal

ENV = "HCSCAN_TEST_KILL_AT"
POINTS: tuple[str, ...] = ("run_created", "mid_findings", "before_commit", "after_commit")

_KILL_AT: str | None = os.environ.get(ENV) or None


def kill_point(name: str) -> None:
    """SIGKILL this process if the tests asked to die at `name`; otherwise nothing."""
    if _KILL_AT is not None and name == _KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)

"""Agent test helpers: a real `hcscan agent` process, and a loopback endpoint that hangs or refuses on demand."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.helpers import make_workspace, system

REPO = Path(__file__).resolve().parents[2]


class SwitchableEndpoint:
    """A TCP listener on 127.0.0.1: in `hang` mode it accepts and never answers (a scan stalls until its
    timeout), in `close` mode it closes every connection at once (a scan ends fast with `error` findings)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.hang = True
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.hang:
                self._held.append(conn)
            else:
                conn.close()

    def release(self) -> None:
        """Stop hanging: close what is held and close new connections at once."""
        self.hang = False
        for conn in self._held:
            conn.close()
        self._held.clear()

    def close(self) -> None:
        self._stop.set()
        self.release()
        self.sock.close()
        self._thread.join(timeout=2)


@pytest.fixture
def endpoint() -> Iterator[SwitchableEndpoint]:
    ep = SwitchableEndpoint()
    yield ep
    ep.close()


class AgentProcess:
    """`python -m scanner agent --log-format json` as a child process; its log lines read back as events."""

    def __init__(self, config: Path, *args: str, name: str = "agent") -> None:
        self.log_path = config.parent / f"{name}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "scanner", "agent", "--config", str(config), "--log-format", "json", *args]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=config.parent, env=env)
        self.pid = self.proc.pid

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"event": "raw", "line": line})
        return out

    def wait_event(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self.events():
                if ev.get("event") == name:
                    return ev
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no '{name}' event within {timeout}s; log:\n{self.log_path.read_text()}")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def agents() -> Iterator[Callable[..., AgentProcess]]:
    """Start agent processes; any still running at the end of the test is killed."""
    started: list[AgentProcess] = []

    def start(config: Path, *args: str, name: str = "agent") -> AgentProcess:
        proc = AgentProcess(config, *args, name=name)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def agent_workspace(
    root: Path,
    port: int,
    schedules: list[dict[str, Any]],
    *,
    store_url: str | None = None,
    agent: dict[str, Any] | None = None,
    timeout_s: float = 3,
) -> Path:
    """A one-system inventory on a loopback port and an agent config with the given schedules."""
    config: dict[str, Any] = {
        "agent": {"id": "agent-1", "catchup_grace_s": 30, "lease_s": 30, "sweep_s": 1, "shutdown_grace_s": 5}
        | (agent or {}),
        "schedules": schedules,
        "politeness": {"timeout_s": timeout_s},
    }
    if store_url is not None:
        config["store_url"] = store_url
    return make_workspace(root, [system("s1", "127.0.0.1", port)], extra_config=config)


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql)).all()]
    finally:
        engine.dispose()


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except OperationalError:  # the agent has not created the store yet
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")

"""A fragile system (max_concurrency 1) sees one connection at a time during a whole scan, across probe kinds: a
loopback HTTP server that answers slowly counts the connections open at once while `hcscan scan` runs every
family against it (real nmap for the service probe, the HTTP probe for TLS-07 and LOG-05)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import make_workspace, system

pytestmark = [
    pytest.mark.needs_nmap,
    pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed"),
]


class CountingServer:
    """Answers HTTP after 1.5 s (so probes that ran side by side would overlap) and counts open connections."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self._lock = threading.Lock()
        self.open = self.most = self.total = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.open += 1
                self.total += 1
                self.most = max(self.most, self.open)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            if conn.recv(4096):
                time.sleep(1.5)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except OSError:
            pass  # nmap's connect scan resets at once
        finally:
            with self._lock:
                self.open -= 1  # before close: the client may only connect again once it saw the close
            conn.close()

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def server() -> Iterator[CountingServer]:
    s = CountingServer()
    yield s
    s.close()


def test_a_fragile_system_sees_one_connection_at_a_time_across_probe_kinds(
    tmp_path: Path, server: CountingServer
) -> None:
    make_workspace(tmp_path, [system("pump", "127.0.0.1", server.port, "http", fragile=True)])
    run = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", "--config", "config.yaml", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode in (0, 1), run.stderr  # findings, no input error
    assert server.total >= 2, server.total  # at least the service probe (nmap) and the HTTP probe connected
    assert server.most == 1, f"{server.most} connections open at once to a system that allows 1"

"""hcscan's loopback lab: real TLS/HTTP servers with known-good and known-bad configurations.

Used by tests, the benchmark and ``make demo``::

    with Lab(tmp_dir) as lab:
        lab.ca_bundle          # PEM with the lab root CA
        lab.endpoints["expired"].port

The servers run in a child process (``python -m scanner.lab serve``) so that scanning from this
process is not slowed down by the GIL. Only loopback addresses are ever bound.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import IO, Literal

from scanner.lab.cases import CASES, CASES_BY_NAME, DEMO_LAYOUT, Case, LabEndpoint
from scanner.lab.procs import stop_process

__all__ = ["CASES", "DEMO_LAYOUT", "Case", "Lab", "LabEndpoint", "LabError"]


class LabError(RuntimeError):
    """The lab could not be started (port in use, child crashed, ...)."""


class Lab:
    """Start the lab servers in a child process; stop them on exit."""

    def __init__(
        self,
        workdir: Path,
        layout: Literal["ephemeral", "demo"] = "ephemeral",
        replicas: int = 0,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.layout = layout
        self.replicas = replicas
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._ca_bundle: Path | None = None
        self._rogue_bundle: Path | None = None
        self._endpoints: dict[str, LabEndpoint] = {}

    # -- public API ---------------------------------------------------------------------------

    @property
    def ca_bundle(self) -> Path:
        """PEM file with the lab root CA (the trust anchor for every case but untrusted_root)."""
        if self._ca_bundle is None:
            raise LabError("lab not started")
        return self._ca_bundle

    @property
    def rogue_bundle(self) -> Path:
        """PEM file with the rogue root (not trusted by default; for tests that want to trust it)."""
        if self._rogue_bundle is None:
            raise LabError("lab not started")
        return self._rogue_bundle

    @property
    def endpoints(self) -> dict[str, LabEndpoint]:
        if self._proc is None:
            raise LabError("lab not started")
        return self._endpoints

    @staticmethod
    def case_of(endpoint_name: str) -> Case:
        """The case an endpoint serves (replicas ``good-N`` serve the ``good`` case)."""
        return CASES_BY_NAME[endpoint_name.split("-", 1)[0] if endpoint_name.startswith("good-") else endpoint_name]

    def start(self) -> Lab:
        if self._proc is not None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        manifest = self.workdir / "lab-manifest.json"
        manifest.unlink(missing_ok=True)
        log_path = self.workdir / "lab.log"
        self._log = log_path.open("wb")
        cmd = [
            sys.executable,
            "-m",
            "scanner.lab",
            "serve",
            "--layout",
            self.layout,
            "--workdir",
            str(self.workdir),
            "--replicas",
            str(self.replicas),
            "--manifest",
            str(manifest),
            "--quiet",
            "--parent-pid",
            str(os.getpid()),
        ]
        self._proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self._wait_for_manifest(manifest, log_path)
            self._wait_until_accepting()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------

    def _wait_for_manifest(self, manifest: Path, log_path: Path) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while not manifest.exists():
            if self._proc.poll() is not None:
                raise LabError(f"lab exited with {self._proc.returncode}: {_tail(log_path)}")
            if time.monotonic() > deadline:
                raise LabError(f"lab did not start within {self.startup_timeout_s:.0f}s: {_tail(log_path)}")
            time.sleep(0.05)
        data = json.loads(manifest.read_text())
        self._ca_bundle = Path(data["ca_bundle"])
        self._rogue_bundle = Path(data["rogue_bundle"])
        self._endpoints = {
            e["name"]: LabEndpoint(
                name=e["name"],
                address=e["address"],
                port=int(e["port"]),
                protocol=e["protocol"],
                server_name=e["server_name"],
                expect=MappingProxyType(dict(e["expect"])),
                description=e["description"],
            )
            for e in data["endpoints"]
        }

    def _wait_until_accepting(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        for ep in self._endpoints.values():
            if self.case_of(ep.name).kind == "refused":
                continue
            while True:
                try:
                    with socket.create_connection((ep.address, ep.port), timeout=1.0):
                        break
                except OSError as exc:
                    if time.monotonic() > deadline:
                        raise LabError(f"{ep.name} at {ep.address}:{ep.port} does not accept: {exc}") from exc
                    time.sleep(0.05)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return "(no log)"

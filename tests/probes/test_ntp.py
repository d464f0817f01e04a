"""The NTP probe against a live SNTP server on loopback, and LOG-05-NTP end to end."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.lab.ntp import NtpResponder
from scanner.probes.base import Politeness, ProbeContext, ProbeError, ProbeErrorReason, ProbeFacts, Target
from scanner.probes.ntp import NtpProbe
from tests.helpers import make_workspace, system


def target(port: int, key: str = "s/ntp") -> Target:
    return Target(
        key=key, system_id="s", address="127.0.0.1", port=port, protocol="ntp", politeness=Politeness(timeout_s=1.0)
    )


def gather_one(port: int) -> ProbeFacts | ProbeError:
    return NtpProbe().gather([target(port)], ProbeContext())["s/ntp"]


def test_offset_stratum_and_refid_from_a_live_server() -> None:
    with NtpResponder(offset_s=42.0, stratum=2) as server:
        out = gather_one(server.port)
    assert isinstance(out, ProbeFacts)
    assert out.facts["ntp.offset_seconds"] == pytest.approx(42.0, abs=0.5)
    assert out.facts["ntp.stratum"] == 2 and out.facts["ntp.synchronized"] is True
    assert out.facts["ntp.reference_id"] == "127.0.0.53"
    assert 0 <= out.facts["ntp.delay_seconds"] < 1


def test_unsynchronised_server_is_a_fact_not_an_error() -> None:
    with NtpResponder(leap=3, stratum=16) as server:
        out = gather_one(server.port)
    assert isinstance(out, ProbeFacts) and out.facts["ntp.synchronized"] is False


def test_spoofed_reply_silent_server_and_closed_port_are_errors() -> None:
    with NtpResponder(echo_origin=False) as server:
        spoofed = gather_one(server.port)
    assert isinstance(spoofed, ProbeError) and spoofed.reason is ProbeErrorReason.PROTOCOL
    assert "echo our transmit timestamp" in spoofed.detail
    with NtpResponder(silent=True) as server:
        silent = gather_one(server.port)
    assert isinstance(silent, ProbeError) and silent.reason is ProbeErrorReason.TIMEOUT
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    closed_port = probe.getsockname()[1]
    probe.close()
    closed = gather_one(closed_port)
    assert isinstance(closed, ProbeError) and closed.reason is ProbeErrorReason.REFUSED


def test_log05_ntp_end_to_end(tmp_path: Path) -> None:
    with NtpResponder(offset_s=0.0) as good, NtpResponder(offset_s=-30.0) as behind:
        make_workspace(
            tmp_path,
            [
                system("ntp-good", "127.0.0.1", good.port, "ntp"),
                system("ntp-behind", "127.0.0.1", behind.port, "ntp"),
            ],
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "scanner",
                "scan",
                "--config",
                "config.yaml",
                "--control",
                "LOG-05-NTP",
                "--format",
                "json",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
    verdicts = {f["system"]: (f["status"], f["message"]) for f in json.loads(result.stdout)}
    assert verdicts["ntp-good"][0] == "pass"
    assert verdicts["ntp-behind"][0] == "fail" and "behind" in verdicts["ntp-behind"][1]

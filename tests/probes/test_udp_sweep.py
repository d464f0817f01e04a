"""EXP-01's UDP sweep against Debian's real `snmpd` on loopback (issue 12.8: UDP was invisible).

snmpd is started by the test on 127.0.0.x:161/udp with a config the test writes (a community string nothing guesses,
so an answer proves the SNMPv3 discovery datagram, not a community guess). EXP-01 must fail naming 161/udp; the
same system without snmpd passes, and its message lists the ports with their transport.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scanner.catalog import control_files, load_catalog
from scanner.checks.verdict import judge
from scanner.lab.procs import stop_process
from scanner.models import Status
from scanner.probes import service as service_mod
from scanner.probes.base import SYSTEM_LEVEL, Politeness, ProbeContext, ProbeFacts, Target
from scanner.probes.nmap import UDP_PAYLOADS, NmapArgumentError, build_arguments, run_nmap, udp_scan_possible
from scanner.probes.registry import fact_names
from scanner.probes.service import UDP_NEEDS_ROOT, ServiceProbe, ServiceSettings, default_settings, plan_jobs
from tests.helpers import make_workspace, system

SNMPD = shutil.which("snmpd") or ("/usr/sbin/snmpd" if Path("/usr/sbin/snmpd").exists() else None)
_reason = None
if shutil.which("nmap") is None:
    _reason = "nmap is not installed"
elif SNMPD is None:
    _reason = "Debian package snmpd is not installed"
elif not udp_scan_possible():
    _reason = "nmap's UDP scan needs root (the not-root case is tested below)"
if _reason is not None:
    print(f"skipping live UDP sweep tests: {_reason}")

pytestmark = [pytest.mark.needs_nmap, pytest.mark.slow]
live = pytest.mark.skipif(_reason is not None, reason=f"{_reason} (make test installs it)")

SNMP_HOST = "127.0.0.161"
QUIET_HOST = "127.0.0.162"
COMMUNITY = "hcscan-never-guessed-7f3a"


def _tcp_listener(host: str) -> socket.socket:
    """The system's declared TCP endpoint: accepts connections, says nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(16)
    return sock


def _snmp_answers(host: str, timeout_s: float) -> bool:
    """Is snmpd up? An SNMPv3 discovery datagram gets a Report back (the same datagram the sweep sends)."""
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.5)
        while time.monotonic() < deadline:
            probe.sendto(UDP_PAYLOADS[161], (host, 161))
            try:
                data, _ = probe.recvfrom(4096)
            except TimeoutError:
                continue
            if data:
                return True
    return False


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if _reason is not None:
        pytest.skip(_reason)
    assert SNMPD is not None
    work = tmp_path_factory.mktemp("snmpd")
    conf = work / "snmpd.conf"
    conf.write_text(f"agentAddress udp:{SNMP_HOST}:161\nrocommunity {COMMUNITY} 127.0.0.1/32\n", encoding="utf-8")
    env = {**os.environ, "MIBDIRS": "/dev/null", "SNMP_PERSISTENT_DIR": str(work / "persist")}
    log = (work / "snmpd.log").open("wb")
    proc = subprocess.Popen(
        [SNMPD, "-f", "-Lo", "-C", "-c", str(conf), "-M", "/dev/null", f"--persistentDir={work / 'persist'}",
         "-p", str(work / "snmpd.pid")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )  # fmt: skip
    try:
        if not _snmp_answers(SNMP_HOST, 30.0):
            pytest.fail(f"snmpd did not come up on {SNMP_HOST}:161/udp: {(work / 'snmpd.log').read_text()[-2000:]}")
        yield SNMP_HOST
    finally:
        stop_process(proc)
        log.close()


def _scan_exp01(root: Path, host: str, port: int) -> dict[str, Any]:
    make_workspace(
        root,
        [system("snmp-host", host, port, "other")],
        extra_config={"exposure": {"sweep_ports": [21, 23]}, "politeness": {"timeout_s": 5}},
    )
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", "--config", "config.yaml", "--format", "json",
         "--control", "EXP-01"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=180,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    (finding,) = [f for f in json.loads(result.stdout) if f["control"] == "EXP-01"]
    return dict(finding)


@live
def test_snmp_on_161_udp_fails_exp01_naming_the_udp_port(snmpd: str, tmp_path: Path) -> None:
    with _tcp_listener(snmpd) as listener:
        finding = _scan_exp01(tmp_path, snmpd, listener.getsockname()[1])
    assert finding["status"] == "fail", finding
    assert "161/udp" in finding["message"]
    evidence = finding["evidence"]
    assert evidence["exposure.unexpected_ports"] == ["161/udp"]
    assert evidence["exposure.udp_swept_ports"] == ["123/udp", "161/udp", "514/udp"]


@live
def test_without_snmp_exp01_passes_and_lists_tcp_and_udp(tmp_path: Path) -> None:
    with _tcp_listener(QUIET_HOST) as listener:
        port = listener.getsockname()[1]
        finding = _scan_exp01(tmp_path, QUIET_HOST, port)
    assert finding["status"] == "pass", finding
    for label in ("21/tcp", "23/tcp", "123/udp", "161/udp", "514/udp"):
        assert label in finding["message"], finding["message"]
    assert finding["evidence"]["exposure.unexpected_ports"] == []


def test_not_root_withholds_udp_and_exp01_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root nmap cannot scan UDP: the sweep says so, and EXP-01 is `error`, never a TCP-only pass."""
    if shutil.which("nmap") is None:
        pytest.skip("nmap is not installed")
    monkeypatch.setattr(service_mod, "udp_scan_possible", lambda: False)
    with _tcp_listener(QUIET_HOST) as listener:
        port = listener.getsockname()[1]
        declared = {"endpoints": [{"id": "ep", "host": QUIET_HOST, "port": port, "protocol": "other"}]}
        target = Target("s/*", "s", QUIET_HOST, 0, SYSTEM_LEVEL, politeness=Politeness(), declared=declared)
        settings = ServiceSettings(default_settings().version_data, (21, 23))
        outcome = ServiceProbe(settings).gather([target], ProbeContext())["s/*"]
    assert isinstance(outcome, ProbeFacts), outcome
    facts = outcome.facts
    assert facts["exposure.udp_swept_ports"] is None and facts["exposure.udp_not_swept"] == UDP_NEEDS_ROOT
    assert facts["exposure.swept_ports"] == ["21/tcp", "23/tcp"]
    assert f"{port}/tcp" in facts["exposure.declared_ports"]
    catalog = load_catalog(control_files(["builtin"], Path.cwd()), probe_facts=fact_names())
    control = catalog.controls["EXP-01"]
    verdict = judge(control.rule, dict(facts), control.params, dt.datetime.now(dt.UTC))
    assert verdict.status is Status.ERROR and "needs root" in verdict.message, verdict


def test_udp_arguments_carry_the_reviewed_datagram_and_refuse_anything_else() -> None:
    args = build_arguments([161], scripts=(), script_args={}, politeness=Politeness(), extra=(), timeout_s=10, udp=True)
    assert args[0] == "-sU" and "-sT" not in args
    payload = bytes.fromhex(args[args.index("--data") + 1])
    assert payload == UDP_PAYLOADS[161] and b"public" not in payload
    assert payload[2:5] == b"\x02\x01\x03"  # msgVersion 3: SNMPv3, which has no community string at all
    syslog = build_arguments(
        [514], scripts=(), script_args={}, politeness=Politeness(), extra=(), timeout_s=10, udp=True
    )
    assert syslog[syslog.index("--data-length") + 1] == "0" and "--data" not in syslog
    for ports, scripts in (([22], ()), ([161, 123], ()), ([161], ("banner",))):
        with pytest.raises(NmapArgumentError):
            build_arguments(
                ports, scripts=scripts, script_args={}, politeness=Politeness(), extra=(), timeout_s=10, udp=True
            )


def test_fragile_systems_get_no_udp_sweep_and_endpoints_alone_none_either() -> None:
    declared = {"endpoints": [{"id": "ep", "port": 22, "protocol": "ssh"}]}
    fragile = Politeness(timing=2, fragile=True)
    jobs = plan_jobs(
        [
            Target("f/*", "f", "127.0.31.7", 0, SYSTEM_LEVEL, politeness=fragile, declared=declared),
            Target("e/ep", "e", "127.0.31.8", 22, "ssh", politeness=Politeness(), declared=declared),
            Target("s/*", "s", "127.0.31.9", 0, SYSTEM_LEVEL, politeness=Politeness(), declared=declared),
        ],
        [21, 23],
    )
    assert {h for j in jobs for h in j.udp_hosts} == {"127.0.31.9"}


@live
def test_the_only_datagram_nmap_sends_to_161_is_the_snmpv3_discovery(tmp_path: Path) -> None:
    """nmap 7.93's own payload list would also send an SNMPv1 walk with community 'public': we never let it."""
    host = "127.0.0.163"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind((host, 161))  # receives and never answers: nmap retries, which is when 'public' would go out
        silent.settimeout(0.2)
        run = run_nmap([host], [161], politeness=Politeness(), timeout_s=10, udp=True)
        got: list[bytes] = []
        with contextlib.suppress(TimeoutError):
            while True:
                got.append(silent.recvfrom(4096)[0])
    assert got and set(got) == {UDP_PAYLOADS[161]}, got
    assert "-sU" in run.command

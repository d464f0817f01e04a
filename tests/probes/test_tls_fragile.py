"""Fragile systems and nmap ssl-enum-ciphers: both settings of politeness.fragile_cipher_enumeration, live.

Every connection goes to the loopback lab through a counting relay on 127.0.0.1, so the tests also see how
many TCP connections (and how many at once) the endpoint receives.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scanner.catalog import builtin_controls_dir, load_catalog
from scanner.checks.verdict import judge
from scanner.lab import Lab
from scanner.models import Status
from scanner.probes.base import Politeness, ProbeContext, ProbeFacts, Target, TrustSettings
from scanner.probes.registry import fact_names
from scanner.probes.tls import ENUMERATION_FACTS, ENUMERATION_OFF, TlsProbe
from tests.helpers import make_workspace, system

pytestmark = [
    pytest.mark.needs_nmap,
    pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed"),
]

CATALOG = load_catalog([builtin_controls_dir() / "tls.yaml"], probe_facts=fact_names())
FRAGILE_ON = Politeness(timing=2, max_concurrency=1, timeout_s=5.0, fragile=True)
FRAGILE_OFF = Politeness(timing=2, max_concurrency=1, timeout_s=5.0, fragile=True, cipher_enumeration=False)


@dataclass
class Relay:
    """A loopback TCP relay to one lab port that counts the connections it accepts (total and at once)."""

    port: int
    total: int = 0
    peak: int = 0
    _open: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)


@contextlib.contextmanager
def counting_relay(upstream_port: int) -> Iterator[Relay]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    relay = Relay(listener.getsockname()[1])
    stop = threading.Event()

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def handle(client: socket.socket) -> None:
        with relay._lock:
            relay.total += 1
            relay._open += 1
            relay.peak = max(relay.peak, relay._open)
        try:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", upstream_port), 5) as up:
                back = threading.Thread(target=pipe, args=(up, client), daemon=True)
                back.start()
                pipe(client, up)  # until the scanner closes its side
                with relay._lock:
                    relay._open -= 1
                back.join(5)
                return
            with relay._lock:
                relay._open -= 1
        finally:
            client.close()

    def accept_loop() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(30)
            threading.Thread(target=handle, args=(client,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield relay
    finally:
        stop.set()
        thread.join(2)
        listener.close()


def _gather(lab: Lab, case: str, politeness: Politeness) -> tuple[ProbeFacts, Relay]:
    ep = lab.endpoints[case]
    with counting_relay(ep.port) as relay:
        target = Target(f"dev/{case}", "dev", "127.0.0.1", relay.port, "https", ep.server_name, politeness=politeness)
        ctx = ProbeContext(trust=TrustSettings(use_system_store=False, ca_bundles=(lab.ca_bundle,)))
        outcome = TlsProbe().gather([target], ctx)[target.key]
    assert isinstance(outcome, ProbeFacts), outcome
    return outcome, relay


def _status(control_id: str, facts: ProbeFacts) -> tuple[Status, str]:
    control = CATALOG.controls[control_id]
    verdict = judge(control.rule, facts.facts, control.params, dt.datetime.now(dt.UTC))
    return verdict.status, verdict.message


def test_fragile_with_enumeration_sees_legacy_protocols(lab: Lab) -> None:
    facts, relay = _gather(lab, "legacy_protocols", FRAGILE_ON)
    assert facts.facts["tls.protocols"] == ["TLSv1.0", "TLSv1.1", "TLSv1.2"]
    assert facts.facts["tls.withheld"] == {}
    assert _status("TLS-01", facts)[0] is Status.FAIL
    assert _status("TLS-03", facts)[0] is Status.PASS
    # our handshake + nmap's connect + ssl-enum-ciphers' handshakes + ssl-cert (docs/controls.md has the count)
    assert relay.total >= 30


def test_fragile_without_enumeration_makes_one_connection_and_never_passes_tls01_02(lab: Lab) -> None:
    facts, relay = _gather(lab, "legacy_protocols", FRAGILE_OFF)
    assert relay.total == 1  # only hcscan's own handshake: nmap never ran
    assert all(facts.facts[name] is None for name in ENUMERATION_FACTS)
    assert set(facts.facts["tls.withheld"]) == set(ENUMERATION_FACTS)
    assert facts.facts["tls.offered"] is True and facts.facts["tls.negotiated_protocol"] == "TLSv1.2"
    for control_id in ("TLS-01", "TLS-02"):
        status, message = _status(control_id, facts)
        assert status is Status.ERROR, (control_id, message)
        assert message == f"could not assess: {ENUMERATION_OFF}"
    for control_id in ("TLS-03", "TLS-04", "TLS-05", "TLS-06"):  # the one handshake still judges the certificate
        assert _status(control_id, facts)[0] is Status.PASS, control_id


def test_fragile_without_enumeration_on_a_good_server_is_still_not_a_pass(lab: Lab) -> None:
    facts, relay = _gather(lab, "good", FRAGILE_OFF)
    assert relay.total == 1
    assert _status("TLS-01", facts)[0] is Status.ERROR
    assert _status("TLS-02", facts)[0] is Status.ERROR


@pytest.mark.slow
@pytest.mark.parametrize("enumerate_ciphers", [True, False])
def test_scan_of_a_fragile_system_follows_the_config(lab: Lab, tmp_path: Path, enumerate_ciphers: bool) -> None:
    ep = lab.endpoints["legacy_protocols"]
    make_workspace(
        tmp_path,
        [system("dev", ep.address, ep.port, ep.protocol, ep.server_name, fragile=True)],
        ca_bundles=[str(lab.ca_bundle)],
        extra_config={"politeness": {"timeout_s": 5, "fragile_cipher_enumeration": enumerate_ciphers}},
    )
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", "--config", "config.yaml", "--family", "tls", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    findings = {f["control"]: f for f in json.loads(result.stdout)}
    assert findings["TLS-03"]["status"] == "pass"
    if enumerate_ciphers:
        assert findings["TLS-01"]["status"] == "fail"
    else:
        for control_id in ("TLS-01", "TLS-02"):
            assert findings[control_id]["status"] == "error"
            assert "cipher enumeration is switched off for fragile systems" in findings[control_id]["message"]

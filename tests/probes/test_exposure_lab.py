"""EXP-02 and EXP-04 probes against the live service lab: dicom-ping forced on a non-standard port, the AE-title
check over TLS (pynetdicom), and FHIR servers under a base path. Loopback only (127.0.20.x)."""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from scanner.catalog import control_files, load_catalog
from scanner.checks.verdict import judge
from scanner.lab.services import SERVICE_CASES_BY_NAME, ServiceEndpoint, ServiceLab
from scanner.models import Status
from scanner.probes.availability import AvailabilitySampler, SamplerSettings
from scanner.probes.base import Politeness, ProbeContext, ProbeError, ProbeErrorReason, ProbeFacts, Target
from scanner.probes.exposure import DICOM_PING_PORTS, PROBE_CALLING_AET, DicomProbe, FhirProbe, tls_handshake
from scanner.probes.nmap import parse_nmap_xml, run_nmap
from scanner.probes.registry import fact_names

pytestmark = [pytest.mark.needs_nmap, pytest.mark.slow]

CASES = (
    "dicom_open",
    "dicom_nonstd",
    "dicom_tls_open",
    "dicom_tls_strict",
    "dicom_tls_called_only",
    "dicom_tls_down",
    "fhir_good_base",
    "fhir_bad_base",
)
TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceLab]:
    with ServiceLab(
        tmp_path_factory.mktemp("exposurelab"), cases=tuple(SERVICE_CASES_BY_NAME[n] for n in CASES)
    ) as lab:
        yield lab


def target(ep: ServiceEndpoint, *, declare: bool = True, fragile: bool = False, aet: str | None = None) -> Target:
    """The Target the engine would build for the case, with what the lab's inventory entry declares (`aet`: declare
    this AE title for the node instead)."""
    endpoint: dict[str, Any] = {"id": "ep", "host": ep.address, "port": ep.port, "protocol": ep.protocol}
    system: dict[str, Any] = {"id": ep.case.name}
    if declare and ep.case.fhir_base:
        endpoint["path"] = ep.case.fhir_base
    declared_aet = aet or (ep.case.dicom_declared_aet if declare else "")
    if declared_aet:
        system["availability"] = {"checks": {"ep": {"ae_title": declared_aet}}}
    return Target(
        key=f"{ep.case.name}/ep",
        system_id=ep.case.name,
        address=ep.address,
        port=ep.port,
        protocol=ep.protocol,
        server_name=ep.server_name if ep.protocol == "fhir" else None,
        politeness=Politeness(timeout_s=TIMEOUT_S, fragile=fragile),
        declared={"system": system, "endpoint": endpoint, "endpoints": [endpoint]},
    )


def facts_of(outcome: ProbeFacts | ProbeError) -> dict[str, Any]:
    assert isinstance(outcome, ProbeFacts), outcome
    return dict(outcome.facts)


def dicom(lab: ServiceLab, name: str, **kwargs: Any) -> dict[str, Any]:
    t = target(lab.cases[name], **kwargs)
    return facts_of(DicomProbe().gather([t], ProbeContext())[t.key])


def exp02(facts: dict[str, Any]) -> tuple[Status, str]:
    """EXP-02's verdict on the facts, as the engine judges them."""
    catalog = load_catalog(control_files(["builtin"], Path.cwd()), probe_facts=fact_names())
    control = catalog.controls["EXP-02"]
    verdict = judge(control.rule, facts, control.params, datetime.now(UTC))
    return verdict.status, verdict.message


# --- DICOM in the clear on a port outside dicom-ping's portrule ----------------------------------------------------


def test_the_non_standard_port_is_outside_dicom_pings_portrule(lab: ServiceLab) -> None:
    """The premise: unforced, nmap does not run dicom-ping there at all (nothing would be assessed)."""
    ep = lab.cases["dicom_nonstd"]
    assert ep.port not in DICOM_PING_PORTS
    run = run_nmap([ep.address], [ep.port], scripts=["dicom-ping"], politeness=Politeness(), timeout_s=10)
    port = parse_nmap_xml(run.xml).ports[(ep.address, ep.port)]
    assert port.state == "open" and "dicom-ping" not in port.scripts


def test_dicom_ping_is_forced_on_a_non_standard_port(lab: ServiceLab) -> None:
    facts = dicom(lab, "dicom_nonstd")
    assert facts["dicom.tls"] is False
    assert facts["dicom.aet_check_method"] == "nmap +dicom-ping (non-standard port)"
    assert facts["dicom.service"] is True
    assert facts["dicom.aet_check"] == "accepted" and facts["dicom.any_aet_accepted"] is True
    assert facts["dicom.calling_aet"] == PROBE_CALLING_AET
    assert "Any AET is accepted" in facts["dicom.ping_output"]


def test_dicom_ping_is_not_forced_on_a_standard_port(lab: ServiceLab) -> None:
    facts = dicom(lab, "dicom_open")
    assert lab.cases["dicom_open"].port in DICOM_PING_PORTS
    assert facts["dicom.aet_check_method"] == "nmap dicom-ping"
    assert facts["dicom.aet_check"] == "accepted"


# --- the AE-title check over TLS ----------------------------------------------------------------------------------


def test_tls_node_accepting_any_calling_aet_is_seen_and_released_cleanly(lab: ServiceLab) -> None:
    events = lab.dicom_events["dicom_tls_open"]
    before = len(events)
    facts = dicom(lab, "dicom_tls_open")
    assert facts["dicom.tls"] is True and facts["dicom.aet_check_method"].startswith("A-ASSOCIATE over TLS")
    assert facts["dicom.aet_check"] == "accepted" and facts["dicom.any_aet_accepted"] is True
    assert facts["dicom.echo_status"] == 0
    _settle(events, before + 3)
    assert events[before:] == [f"established:{PROBE_CALLING_AET}", f"c_echo:{PROBE_CALLING_AET}",
                               f"released:{PROBE_CALLING_AET}"]  # fmt: skip


def test_fragile_tls_node_gets_no_c_echo(lab: ServiceLab) -> None:
    events = lab.dicom_events["dicom_tls_open"]
    before = len(events)
    facts = dicom(lab, "dicom_tls_open", fragile=True)
    assert facts["dicom.aet_check"] == "accepted" and facts["dicom.echo_status"] is None
    assert "no C-ECHO sent (fragile system)" in facts["dicom.aet_check_detail"]
    _settle(events, before + 2)
    assert events[before:] == [f"established:{PROBE_CALLING_AET}", f"released:{PROBE_CALLING_AET}"]


def test_tls_node_checking_calling_aet_rejects_the_unknown_one(lab: ServiceLab) -> None:
    facts = dicom(lab, "dicom_tls_strict")
    assert facts["dicom.called_aet"] == "LABPACS"  # the declared AE title, so the calling one is what is tested
    assert facts["dicom.aet_check"] == "rejected" and facts["dicom.any_aet_accepted"] is False
    assert facts["dicom.reject_reason"] == "Calling AE title not recognised"
    status, message = exp02(facts)  # the right called AE title declared + a calling AE-title check: pass
    assert status is Status.PASS and "Calling AE title not recognised" in message


def test_tls_node_checking_only_the_called_aet_accepts_an_unknown_caller(lab: ServiceLab) -> None:
    facts = dicom(lab, "dicom_tls_called_only")
    assert facts["dicom.called_aet"] == "LABPACS"
    assert facts["dicom.aet_check"] == "accepted"
    assert exp02(facts)[0] is Status.FAIL


def test_rejection_of_the_called_aet_any_scp_is_not_a_pass(lab: ServiceLab) -> None:
    """The false pass this guards against: an archive that checks only called AE titles rejects ANY-SCP ("called AE
    title not recognised") although it would let any calling AE title in. Not assessed, with what to declare."""
    facts = dicom(lab, "dicom_tls_called_only", declare=False)
    assert facts["dicom.called_aet"] == "ANY-SCP"
    assert facts["dicom.aet_check"] is None and facts["dicom.any_aet_accepted"] is None
    assert facts["dicom.reject_reason"] == "Called AE title not recognised"
    detail = facts["dicom.aet_check_detail"]
    assert "called AE title ANY-SCP (the default: the node's own is not declared) is not the node's" in detail
    assert "declare the node's right AE title (availability.checks.<endpoint>.ae_title)" in detail
    status, message = exp02(facts)
    assert status is Status.ERROR and message.startswith("could not assess"), message


def test_rejection_of_a_wrong_declared_called_aet_is_not_a_pass(lab: ServiceLab) -> None:
    facts = dicom(lab, "dicom_tls_strict", aet="NOTLABPACS")  # checks calling AE titles too: pynetdicom says 7
    assert facts["dicom.called_aet"] == "NOTLABPACS"
    assert facts["dicom.aet_check"] is None and facts["dicom.reject_reason"] == "Called AE title not recognised"
    assert "NOTLABPACS (the declared one) is not the node's" in facts["dicom.aet_check_detail"]
    assert exp02(facts)[0] is Status.ERROR


def test_tls_front_without_a_dicom_answer_is_not_assessed(lab: ServiceLab) -> None:
    started = time.monotonic()
    facts = dicom(lab, "dicom_tls_down")
    assert time.monotonic() - started < 3 * TIMEOUT_S
    assert facts["dicom.tls"] is True
    assert facts["dicom.aet_check"] is None and facts["dicom.any_aet_accepted"] is None
    assert "no A-ASSOCIATE answer" in facts["dicom.aet_check_detail"]


def test_tls_peer_that_holds_the_connection_silently_cannot_stall_the_probe(lab: ServiceLab) -> None:
    """After the handshake a TLS 1.3 server sends session tickets, then says nothing and never closes: pynetdicom's
    reader would block for good (it clears the socket timeout); the probe hangs up after connect + one timeout."""
    import socket
    import ssl
    import threading

    from scanner.lab.certs import CertSpec

    assert lab.pki is not None
    issued = lab.pki.issue(CertSpec(), "silent.lab.hcscan.test", "silent")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(issued.chain_pem), str(issued.key_pem))
    held: list[socket.socket] = []
    with socket.create_server(("127.0.20.200", 0)) as server:

        def hold() -> None:
            for _ in range(2):  # the probe's TLS handshake test, then the association
                conn, _ = server.accept()
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

        def serve(conn: socket.socket) -> None:
            with contextlib.suppress(OSError):
                tls = ctx.wrap_socket(conn, server_side=True)
                held.append(tls)
                while tls.recv(4096):
                    pass

        threading.Thread(target=hold, daemon=True).start()
        ep = Target("silent/ep", "silent", "127.0.20.200", server.getsockname()[1], "dicom-tls",
                    politeness=Politeness(timeout_s=TIMEOUT_S))  # fmt: skip
        started = time.monotonic()
        facts = facts_of(DicomProbe().gather([ep], ProbeContext())[ep.key])
        elapsed = time.monotonic() - started
        for sock in held:
            sock.close()
    assert elapsed < 3 * TIMEOUT_S, elapsed
    assert facts["dicom.tls"] is True and facts["dicom.aet_check"] is None


def test_tls_handshake_of_a_byte_dripping_peer_ends_at_the_overall_limit() -> None:
    """A peer that answers the ClientHello one byte at a time: the handshake test ends at its limit and says
    `timeout` (not "not TLS", which a hang-up by the overall timer must never turn into)."""
    import socket
    import threading

    stop = threading.Event()
    with socket.create_server(("127.0.20.201", 0)) as server:

        def drip() -> None:
            conn, _ = server.accept()
            give_up = time.monotonic() + 6  # a regression fails on time, it does not hang
            with conn:
                conn.recv(4096)
                with contextlib.suppress(OSError):
                    conn.sendall(b"\x16\x03\x03\x40\x00")  # a 16 KiB TLS handshake record ...
                    while not stop.is_set() and time.monotonic() < give_up:
                        conn.sendall(b"\x00")  # ... that arrives one byte at a time
                        time.sleep(0.2)

        thread = threading.Thread(target=drip, daemon=True)
        thread.start()
        started = time.monotonic()
        try:
            outcome = tls_handshake("127.0.20.201", server.getsockname()[1], 1.0, None)
        finally:
            stop.set()
            thread.join(timeout=5)
        elapsed = time.monotonic() - started
    assert isinstance(outcome, ProbeError) and outcome.reason is ProbeErrorReason.TIMEOUT, outcome
    assert elapsed < 3, elapsed


def _settle(events: list[str], count: int) -> None:
    """The lab's server records release/abort in its own thread: wait briefly for it."""
    deadline = time.monotonic() + 3
    while len(events) < count and time.monotonic() < deadline:
        time.sleep(0.05)


# --- FHIR under a base path ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "smart", "search"), [("fhir_good_base", True, 401), ("fhir_bad_base", False, 200)])
def test_fhir_requests_go_under_the_declared_base(lab: ServiceLab, name: str, smart: bool, search: int) -> None:
    t = target(lab.cases[name])
    facts = facts_of(FhirProbe().gather([t], ProbeContext())[t.key])
    assert facts["fhir.base_path"] == "/fhir"
    assert facts["fhir.metadata_status"] == 200 and facts["fhir.capability"] is True
    assert facts["fhir.smart_oauth"] is smart
    assert facts["fhir.unauth_search_path"] == "/fhir/Patient?_summary=count"
    assert facts["fhir.unauth_search_status"] == search


def test_fhir_base_not_declared_finds_no_capability_statement(lab: ServiceLab) -> None:
    t = target(lab.cases["fhir_good_base"], declare=False)
    facts = facts_of(FhirProbe().gather([t], ProbeContext())[t.key])
    assert facts["fhir.base_path"] == "/" and facts["fhir.metadata_status"] == 404
    assert facts["fhir.capability"] is False


def test_availability_sample_of_a_fhir_endpoint_asks_under_its_base(lab: ServiceLab) -> None:
    declared, undeclared = target(lab.cases["fhir_good_base"]), target(lab.cases["fhir_good_base"], declare=False)
    undeclared = Target(**{**undeclared.__dict__, "key": "undeclared/ep"})
    samples = AvailabilitySampler(SamplerSettings(timeout_s=TIMEOUT_S, retry_delay_s=0.1)).sample(
        [declared, undeclared]
    )
    assert samples[declared.key].up is True, samples[declared.key]
    assert samples[undeclared.key].up is False and samples[undeclared.key].reason == "status"


def test_lab_fhir_server_answers_only_under_its_base(lab: ServiceLab) -> None:
    """The lab's own contract, so that the tests above prove the probe, not a lenient server."""
    ep = lab.cases["fhir_good_base"]
    url = f"https://{ep.address}:{ep.port}"
    with warnings.catch_warnings(), requests.Session() as s:
        warnings.simplefilter("ignore")  # the lab certificate names the case, not the address
        s.trust_env = False
        assert s.get(url + "/metadata", verify=False, timeout=TIMEOUT_S).status_code == 404
        assert s.get(url + "/fhir/metadata", verify=False, timeout=TIMEOUT_S).status_code == 200

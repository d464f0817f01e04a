"""The availability sampler against real loopback servers: the lab's TLS/HTTP servers, a closed port, a tarpit,
and a DICOM verification SCP (when pynetdicom is installed)."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from scanner.lab import Lab
from scanner.probes.availability import AvailabilitySampler, Sample, SamplerSettings
from scanner.probes.base import Politeness, Target

FAST = SamplerSettings(timeout_s=2.0, retry_delay_s=0.05)


def target(lab: Lab, name: str, protocol: str | None = None, check: dict[str, Any] | None = None) -> Target:
    ep = lab.endpoints[name]
    system: dict[str, Any] = {"id": name, "criticality": "high"}
    if check is not None:
        system["availability"] = {"checks": {"ep": check}}
    return Target(
        key=f"{name}/ep",
        system_id=name,
        address=ep.address,
        port=ep.port,
        protocol=protocol or ep.protocol,
        server_name=ep.server_name,
        declared={"system": system, "endpoint": {"id": "ep"}},
    )


def sample_one(t: Target, settings: SamplerSettings = FAST) -> Sample:
    return AvailabilitySampler(settings).sample([t])[t.key]


def test_https_endpoint_answering_200_is_up_with_latency(lab: Lab) -> None:
    s = sample_one(target(lab, "good"))
    assert (s.method, s.up, s.attempts, s.reason) == ("http", True, 1, None)
    assert s.latency_ms is not None and 0 < s.latency_ms < 2000


def test_tls_handshake_and_tcp_connect(lab: Lab) -> None:
    assert sample_one(target(lab, "good", protocol="tls")).method == "tls"
    assert sample_one(target(lab, "good", protocol="tls")).up is True
    tcp = sample_one(target(lab, "good", protocol="ssh"))
    assert (tcp.method, tcp.up) == ("tcp", True)


def test_closed_port_is_down_after_a_confirming_retry(lab: Lab) -> None:
    s = sample_one(target(lab, "refused"))
    assert (s.up, s.reason, s.attempts, s.latency_ms) == (False, "refused", 2, None)


def test_tls_declared_but_plaintext_is_down(lab: Lab) -> None:
    s = sample_one(target(lab, "plaintext", protocol="tls"))
    assert (s.up, s.reason) == (False, "protocol")


def test_tarpit_times_out(lab: Lab) -> None:
    started = time.monotonic()
    s = sample_one(target(lab, "tarpit"), SamplerSettings(timeout_s=0.5, retry_delay_s=0.05))
    assert (s.up, s.reason, s.attempts) == (False, "timeout", 2)
    assert time.monotonic() - started < 3


def test_body_keyword_and_expected_status(lab: Lab) -> None:
    assert sample_one(target(lab, "good", check={"keyword": "hcscan lab: good"})).up is True
    missing = sample_one(target(lab, "good", check={"keyword": "all systems go"}))
    assert (missing.up, missing.reason) == (False, "keyword")
    wrong = sample_one(target(lab, "good", check={"expect_status": [204]}))
    assert (wrong.up, wrong.reason) == (False, "status")
    assert "HTTP 200" in (wrong.detail or "")


def test_plain_http_redirect_counts_as_answering(lab: Lab) -> None:
    s = sample_one(target(lab, "http_redirect"))
    assert (s.method, s.up) == ("http", True)


def test_fhir_without_a_capability_statement_is_down(lab: Lab) -> None:
    # The lab's HTTPS server answers 200 with a plain-text body to /metadata: not a FHIR server.
    s = sample_one(target(lab, "good", protocol="fhir"))
    assert (s.method, s.up, s.reason) == ("fhir", False, "keyword")


def test_one_round_samples_every_target_and_respects_fragile(lab: Lab) -> None:
    names = ["good", "good_ec", "refused", "http_redirect"]
    targets = [target(lab, n) for n in names]
    fragile = Target(**{**target(lab, "good").__dict__, "key": "fragile/ep", "politeness": Politeness(fragile=True)})
    result = AvailabilitySampler(FAST).sample([*targets, fragile])
    assert {k: s.up for k, s in result.items()} == {
        "good/ep": True,
        "good_ec/ep": True,
        "refused/ep": False,
        "http_redirect/ep": True,
        "fragile/ep": True,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dicom_echo_against_a_verification_scp() -> None:
    pynetdicom = pytest.importorskip("pynetdicom", reason="pynetdicom not installed: DICOM falls back to TCP connect")
    from pynetdicom.sop_class import Verification

    port = _free_port()
    ae = pynetdicom.AE(ae_title="LABSCP")
    ae.add_supported_context(Verification)
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        t = Target(key="pacs/dicom", system_id="pacs", address="127.0.0.1", port=port, protocol="dicom")
        s = sample_one(t)
        assert (s.method, s.up) == ("dicom", True)
    finally:
        server.shutdown()
    down = sample_one(Target(key="pacs/dicom", system_id="pacs", address="127.0.0.1", port=port, protocol="dicom"))
    assert (down.up, down.reason) == (False, "refused")  # no association: classified as any sample is

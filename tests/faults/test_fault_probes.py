"""Every network probe against every fault kind: an outcome for each target, within its time limit, no crash.

The scan test (test_fault_scan.py) judges TLS verdicts end to end; this one points the other probes
(HTTP, DICOM, MLLP, FHIR) at the same hostile endpoints, declared as their protocol.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from scanner.probes.base import Politeness, Probe, ProbeContext, ProbeError, ProbeErrorReason, Target, TrustSettings
from scanner.probes.exposure import DicomProbe, FhirProbe, MllpProbe
from scanner.probes.http import HttpProbe
from scanner.probes.tls import TlsProbe
from tests.faults.servers import FaultLab

pytestmark = [pytest.mark.needs_nmap, pytest.mark.slow]

TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultLab]:
    with FaultLab(tmp_path_factory.mktemp("faults"), copies=1) as lab:
        yield lab


def _targets(faults: FaultLab, protocol: str) -> list[Target]:
    return [
        Target(
            key=f"{e.name}/ep",
            system_id=e.name,
            address=e.host,
            port=e.port,
            protocol=protocol,
            server_name=e.server_name,
            politeness=Politeness(timeout_s=TIMEOUT_S),
        )
        for e in faults.endpoints
    ]


PROBES: list[tuple[str, Probe, str, float]] = [
    # (name, probe, declared protocol, wall-time bound for all 11 fault kinds at once)
    ("http", HttpProbe(), "https", 3 * TIMEOUT_S + 2),
    ("dicom", DicomProbe(), "dicom", 3 * TIMEOUT_S + 4),
    ("mllp", MllpProbe(), "mllp", 3 * TIMEOUT_S + 4),
    ("fhir", FhirProbe(), "fhir", 4 * TIMEOUT_S + 4),
]
# The service probe (nmap -sV) is left out here: against 11 hostile ports it runs into nmap's own host timeout
# (~35 s), which the budget of `make test` cannot afford; its timeouts are nmap's and are tested in tests/probes.


@pytest.mark.parametrize(("name", "probe", "protocol", "bound"), PROBES, ids=[p[0] for p in PROBES])
def test_probe_survives_every_fault(faults: FaultLab, name: str, probe: Probe, protocol: str, bound: float) -> None:
    targets = _targets(faults, protocol)
    ctx = ProbeContext(trust=TrustSettings(use_system_store=False))
    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = probe.gather(targets, ctx)
    elapsed = time.monotonic() - started
    assert set(out) == {t.key for t in targets}
    internal = {
        k: o.detail for k, o in out.items() if isinstance(o, ProbeError) and o.reason is ProbeErrorReason.INTERNAL
    }
    assert not internal, f"{name}: crashed on {internal}"
    for key in ("tarpit-0/ep", "slow_tls-0/ep"):
        assert isinstance(out[key], ProbeError), f"{name} {key}: {out[key]}"
    assert elapsed < bound, f"{name} took {elapsed:.1f}s over 11 fault kinds (bound {bound:.0f}s)"


def test_tls_probe_on_odd_certificates_gives_facts_not_a_crash(faults: FaultLab) -> None:
    targets = [
        t for t in _targets(faults, "https") if t.system_id.split("-")[0] in ("non_utf8_subject", "negative_serial")
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = TlsProbe().gather(targets, ProbeContext(trust=TrustSettings(use_system_store=False)))
    odd = out["non_utf8_subject-0/ep"]
    neg = out["negative_serial-0/ep"]
    assert not isinstance(odd, ProbeError) and not isinstance(neg, ProbeError), (odd, neg)
    assert odd.facts["tls.leaf.subject"] is None  # cannot be decoded: unknown, never invented
    assert odd.facts["tls.chain.error"] == "self_signed"
    assert neg.facts["tls.leaf.serial"] == "-80"
    assert neg.facts["tls.hostname_matches"] is True


def test_fault_lab_covers_every_named_fault(faults: FaultLab, tmp_path: Path) -> None:
    kinds = {e.kind for e in faults.endpoints}
    assert kinds >= {
        "tarpit",
        "reset",
        "garbage",
        "http_on_tls",
        "huge_header",
        "endless_body",
        "slow_tls",
        "slow_http",
        "non_utf8_subject",
        "huge_san",
        "negative_serial",
    }

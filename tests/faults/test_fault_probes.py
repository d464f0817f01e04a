"""Every network probe against every fault kind: an outcome for each target, within its time limit, no crash.

The scan test (test_fault_scan.py) judges TLS verdicts end to end; this one points the other probes
(HTTP, DICOM, MLLP, FHIR, and the nmap -sV service probe) at the same hostile endpoints, declared as their
protocol. The service probe batches many hosts into one nmap run, so well-behaved neighbours ride in the same
runs as the faults and must come out with their real facts; its verdicts (PAT-01/02/05) are judged too.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scanner.catalog import Control, control_files, load_catalog
from scanner.checks.verdict import Verdict, could_not_assess, judge
from scanner.models import Status
from scanner.probes.base import (
    Politeness,
    Probe,
    ProbeContext,
    ProbeError,
    ProbeErrorReason,
    ProbeFacts,
    ProbeOutcome,
    Target,
    TrustSettings,
)
from scanner.probes.exposure import DicomProbe, FhirProbe, MllpProbe
from scanner.probes.http import HttpProbe
from scanner.probes.registry import fact_names
from scanner.probes.service import ServiceProbe, default_settings
from scanner.probes.tls import TlsProbe
from tests.faults.servers import PORTS, FaultLab

pytestmark = [pytest.mark.needs_nmap, pytest.mark.slow]

TIMEOUT_S = 2.0
# scanner/probes/service.py gives each nmap -sV run a host timeout of max(30 s, 6 × the system's timeout): a tarpit
# or a byte-dripping port keeps -sV probing until then. Bound: that, plus nmap's start-up and its last round.
SERVICE_HOST_TIMEOUT_S = max(30.0, 6 * TIMEOUT_S)
NEIGHBOURS = {"127.0.67.1": PORTS["https"], "127.0.67.2": PORTS["http"]}  # one per nmap run (runs group by port)
NEIGHBOUR_SERVER = "Apache/2.4.62"


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultLab]:
    with FaultLab(tmp_path_factory.mktemp("faults"), copies=1) as lab:
        yield lab


class _Neighbour(BaseHTTPRequestHandler):
    """A plain, well-behaved web server (bare upstream banner) that shares the fault ports' nmap runs."""

    def version_string(self) -> str:
        return NEIGHBOUR_SERVER

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_HEAD = do_GET

    def log_message(self, *args: Any) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # nmap's probes hang up mid-request on purpose


@pytest.fixture(scope="module")
def neighbours() -> Iterator[list[Target]]:
    servers = [_QuietServer((address, port), _Neighbour) for address, port in NEIGHBOURS.items()]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [
        Target(
            key=f"neighbour-{i}/ep",
            system_id=f"neighbour-{i}",
            address=address,
            port=port,
            protocol="https",
            politeness=Politeness(timeout_s=TIMEOUT_S),
        )
        for i, (address, port) in enumerate(NEIGHBOURS.items())
    ]
    for server in servers:
        server.shutdown()
        server.server_close()


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


@dataclass(frozen=True)
class ProbeCase:
    name: str
    make: Callable[[], Probe]
    protocol: str  # how every fault endpoint is declared
    bound: float  # wall-time bound for all 11 fault kinds at once
    neighbours: bool = False  # also probe well-behaved endpoints in the same batch (probes that batch hosts)


PROBES: list[ProbeCase] = [
    ProbeCase("http", HttpProbe, "https", 3 * TIMEOUT_S + 2),
    ProbeCase("dicom", DicomProbe, "dicom", 3 * TIMEOUT_S + 4),
    ProbeCase("mllp", MllpProbe, "mllp", 3 * TIMEOUT_S + 4),
    ProbeCase("fhir", FhirProbe, "fhir", 4 * TIMEOUT_S + 4),
    ProbeCase("service", lambda: ServiceProbe(default_settings()), "https", SERVICE_HOST_TIMEOUT_S + 20, True),
]


@dataclass(frozen=True)
class Gathered:
    targets: list[Target]
    outcomes: dict[str, ProbeOutcome]
    elapsed: float


@pytest.fixture(scope="module")
def gathered(faults: FaultLab, neighbours: list[Target]) -> Callable[[ProbeCase], Gathered]:
    """Each probe runs once per module over all fault kinds (the service probe's run is shared by two tests)."""
    done: dict[str, Gathered] = {}

    def run(case: ProbeCase) -> Gathered:
        if case.name not in done:
            targets = _targets(faults, case.protocol) + (neighbours if case.neighbours else [])
            ctx = ProbeContext(trust=TrustSettings(use_system_store=False))
            started = time.monotonic()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = case.make().gather(targets, ctx)
            done[case.name] = Gathered(targets, out, time.monotonic() - started)
        return done[case.name]

    return run


@pytest.mark.parametrize("case", PROBES, ids=[p.name for p in PROBES])
def test_probe_survives_every_fault(gathered: Callable[[ProbeCase], Gathered], case: ProbeCase) -> None:
    run = gathered(case)
    name, out, elapsed, bound = case.name, run.outcomes, run.elapsed, case.bound
    assert set(out) == {t.key for t in run.targets}
    internal = {
        k: o.detail for k, o in out.items() if isinstance(o, ProbeError) and o.reason is ProbeErrorReason.INTERNAL
    }
    assert not internal, f"{name}: crashed on {internal}"
    for key in ("tarpit-0/ep", "slow_tls-0/ep"):
        assert isinstance(out[key], ProbeError), f"{name} {key}: {out[key]}"
    assert elapsed < bound, f"{name} took {elapsed:.1f}s over 11 fault kinds (bound {bound:.0f}s)"


# What the service probe makes of each fault kind. No fault server ever presents a version, except the
# "Server: nginx/1.28.2" header that endless_body sends in full before its endless body, and the TLS servers with
# odd certificates send once a request arrives: a PAT verdict on *that* is about what the server really presented.
TIMES_OUT = ("tarpit", "slow_tls", "slow_http")  # nmap's host timeout: could not assess, saying so
PRESENTS_A_VERSION = ("endless_body", "non_utf8_subject", "huge_san", "negative_serial")
PRESENTED = ("nginx", "1.28.2")


def _service_controls() -> list[Control]:
    catalog = load_catalog(control_files(["builtin"], Path.cwd()), probe_facts=fact_names())
    return sorted(
        (c for c in catalog.controls.values() if c.spec.probe == "service" and not c.system_level),
        key=lambda c: c.id,
    )


def _verdict(control: Control, outcome: ProbeOutcome) -> Verdict:
    """As the engine judges: a probe error is `error` (could not assess), facts go to the control's check."""
    if isinstance(outcome, ProbeError):
        return could_not_assess(control.rule, outcome.message())
    return judge(control.rule, dict(outcome.facts), control.params, datetime.now(UTC))


def test_service_probe_never_passes_a_fault_and_leaves_its_neighbours_alone(
    gathered: Callable[[ProbeCase], Gathered], faults: FaultLab, neighbours: list[Target]
) -> None:
    run = gathered(next(p for p in PROBES if p.name == "service"))
    controls = _service_controls()
    assert {c.id for c in controls} >= {"PAT-01", "PAT-02", "PAT-05"}
    kinds = {f"{e.name}/ep": e for e in faults.endpoints}
    seen: dict[str, str] = {}
    for key, endpoint in kinds.items():
        outcome = run.outcomes[key]
        if endpoint.kind in TIMES_OUT:
            assert isinstance(outcome, ProbeError) and outcome.reason is ProbeErrorReason.TIMEOUT, (key, outcome)
            assert endpoint.host in outcome.detail and "host timeout" in outcome.detail, outcome.detail
        verdicts = [_verdict(c, outcome) for c in controls]
        seen[endpoint.kind] = "".join(v.status.value[0].upper() for v in verdicts)
        for control, verdict in zip(controls, verdicts, strict=True):
            where = f"{control.id} on {endpoint.kind}: {verdict.status.value}: {verdict.message}"
            assert verdict.message and "Traceback" not in verdict.message, where
            if verdict.status is Status.ERROR:
                assert verdict.message.startswith("could not assess: "), where
            if verdict.status is Status.NOT_APPLICABLE:
                assert verdict.message.startswith("not applicable: "), where
            if verdict.status is Status.PASS:
                assert endpoint.kind in PRESENTS_A_VERSION, f"false pass: {where}"
                assert isinstance(outcome, ProbeFacts), where
                presented = (outcome.facts["patch.product_id"], outcome.facts["patch.version"])
                assert presented == PRESENTED, f"pass on something the server never sent: {where} {presented}"
    # A plain-HTTP port declared TLS says "nginx" without a version: could not assess, not a pass.
    assert seen["http_on_tls"] == "E" * len(controls), seen
    # The well-behaved neighbours shared the nmap runs (one per port) with the faults and kept their real facts.
    for target in neighbours:
        outcome = run.outcomes[target.key]
        assert isinstance(outcome, ProbeFacts), (target.key, outcome)
        facts = outcome.facts
        assert (facts["service.port_state"], facts["service.method"]) == ("open", "probed"), facts
        assert (facts["service.product"], facts["service.version"]) == ("Apache httpd", "2.4.62"), facts
        assert facts["patch.product_id"] == "apache-httpd"
    print(f"\nservice probe over 11 fault kinds + {len(neighbours)} neighbours: {run.elapsed:.1f}s; verdicts {seen}")


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

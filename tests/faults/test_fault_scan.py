"""A whole scan over 200 good endpoints with 55 hostile ones mixed in: every verdict and the wall time.

The good endpoints are replicas of the lab's `good` case; the faulty ones come from the fault lab
(11 kinds x 5 copies) plus 5 names under the reserved `.invalid` TLD. Nothing a faulty endpoint does
may turn into `pass`, stall the run, or change a single verdict of a good endpoint.
"""

from __future__ import annotations

import socket
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scanner.app import load_workspace, plan_scan, run_scan
from scanner.engine import Selection
from scanner.lab import Lab
from scanner.probes.registry import fact_names, make_probes, probe_protocols
from tests.faults.servers import KINDS, FaultLab
from tests.helpers import make_workspace

pytestmark = [pytest.mark.needs_nmap, pytest.mark.slow]

GOOD = 200
COPIES = 5  # of every fault kind: 55 faulty endpoints
UNRESOLVABLE = 5
FAMILIES = frozenset({"tls"})  # TLS-01..06 (tls probe: handshake + nmap) and TLS-07 (http probe)
WALL_BOUND_S = 75.0
TIMEOUT_S = 2.0

# Expected verdict of every TLS control per fault kind, TLS-01 … TLS-07 (P pass, F fail, E error).
# E: could not assess (timeout, no HTTP answer …). A port declared TLS that answers but completes no TLS
# handshake, neither ours nor nmap's (reset mid-handshake, garbage, plain HTTP), is an assessed failure
# of TLS-01…06 ("no TLS handshake succeeded on an endpoint declared as TLS"), as designed. A `pass` is
# only ever about what the server really presented.
EXPECTED: dict[str, str] = {
    "tarpit": "EEEEEEE",
    "slow_tls": "EEEEEEE",
    "reset": "FFFFFFE",
    "garbage": "FFFFFFE",
    "http_on_tls": "FFFFFFE",
    # Odd certificates: self-signed (TLS-03 fail); a subject that cannot be decoded is unknown, not a crash.
    "non_utf8_subject": "PPFPPPP",
    "negative_serial": "PPFPPPP",
    # ssl-enum-ciphers needs over a minute on a 59 KB certificate: the TLS probe could not assess; HSTS can.
    "huge_san": "EEEEEEP",
    # Plain http endpoints: only TLS-07 (redirect to https) applies.
    "huge_header": "E",
    "slow_http": "E",
    "endless_body": "F",  # judged on its headers (no redirect to https); the body is read up to 64 KiB only
}
TLS_CONTROLS = [f"TLS-0{i}" for i in range(1, 8)]
LETTER = {"P": "pass", "F": "fail", "E": "error"}


def _expected(kind: str) -> dict[str, str]:
    letters = EXPECTED[kind]
    controls = ["TLS-07"] if len(letters) == 1 else TLS_CONTROLS
    return {c: LETTER[x] for c, x in zip(controls, letters, strict=True)}


@pytest.fixture
def no_dns_for_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 6761: `.invalid` never resolves. Answer so locally, so no query leaves the machine."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.rstrip(".").endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, FaultLab]]:
    with (
        Lab(tmp_path_factory.mktemp("goodlab"), layout="demo", replicas=GOOD) as lab,
        FaultLab(tmp_path_factory.mktemp("faultlab"), copies=COPIES) as faults,
    ):
        yield lab, faults


def _system(sid: str, host: str, port: int, protocol: str, server_name: str | None) -> dict[str, Any]:
    ep: dict[str, Any] = {"id": "ep", "host": host, "port": port, "protocol": protocol}
    if server_name:
        ep["server_name"] = server_name
    return {"id": sid, "name": sid, "owner": "faults", "criticality": "high", "endpoints": [ep]}


def test_fifty_five_faulty_among_two_hundred_good(
    labs: tuple[Lab, FaultLab], tmp_path: Path, no_dns_for_invalid: None
) -> None:
    lab, faults = labs
    good = [ep for name, ep in lab.endpoints.items() if name.startswith("good-")]
    assert len(good) == GOOD
    systems = [_system(ep.name, ep.address, ep.port, ep.protocol, ep.server_name) for ep in good]
    kind_of: dict[str, str] = {}
    for f in faults.endpoints:
        sid = "fault-" + f.name.replace("_", "-")
        kind_of[sid] = f.kind
        systems.append(_system(sid, f.host, f.port, f.protocol, f.server_name))
    for i in range(UNRESOLVABLE):
        sid = f"fault-unresolvable-{i}"
        kind_of[sid] = "unresolvable"
        systems.append(_system(sid, f"ward-{i}.hospital.invalid", 443, "https", None))
    # Shuffle the faulty ones in among the good ones (deterministically).
    systems.sort(key=lambda s: hash(s["id"]) % 1000)
    config = make_workspace(
        tmp_path,
        systems,
        ca_bundles=[str(lab.ca_bundle)],
        extra_config={"politeness": {"timeout_s": TIMEOUT_S}, "store_url": f"sqlite:///{tmp_path / 'hcscan.db'}"},
    )
    ws = load_workspace(config, fact_names())
    selection = Selection(families=FAMILIES)
    plan, _ = plan_scan(ws, selection, probe_protocols())

    started = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography warns about the negative serial: that is the point
        result = run_scan(ws, plan, make_probes(ws.config), selection)
    elapsed = time.monotonic() - started

    got = {(r.system_id, r.control_id): r for r in result.records}
    wrong: list[str] = []
    n_good = n_fault = 0
    for (sid, control), rec in got.items():
        if sid.startswith("good-"):
            n_good += 1
            if rec.status.value != "pass":
                wrong.append(f"{sid} {control}: expected pass, got {rec.status.value}: {rec.message}")
            continue
        n_fault += 1
        kind = kind_of[sid]
        expected = "error" if kind == "unresolvable" else _expected(kind)[control]
        if rec.status.value != expected:
            wrong.append(f"{sid} ({kind}) {control}: expected {expected}, got {rec.status.value}: {rec.message}")
        if rec.status.value == "error":
            assert rec.message.startswith("could not assess"), rec.message
            assert "Traceback" not in rec.message and "internal" not in rec.message, rec.message
    assert not wrong, f"{len(wrong)} wrong verdicts:\n" + "\n".join(wrong[:40])
    assert n_good == GOOD * 7
    http_kinds = sum(1 for k in KINDS if k.protocol == "http")
    assert n_fault == (len(KINDS) - http_kinds) * COPIES * 7 + http_kinds * COPIES + UNRESOLVABLE * 7
    assert result.summary.status == "complete"
    assert sum(result.summary.counts.values()) == len(result.records) == len(got)
    print(
        f"\n{len(systems)} endpoints, {len(result.records)} findings in {elapsed:.1f}s: {Counter(result.summary.counts)}"
    )
    assert elapsed < WALL_BOUND_S, f"the scan took {elapsed:.1f}s (bound {WALL_BOUND_S:.0f}s)"

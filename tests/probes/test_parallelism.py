"""--max-parallelism of every nmap run: max_concurrency × the systems a run covers; strict systems alone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from scanner.config import Config, PolitenessConfig
from scanner.engine import politeness_for
from scanner.inventory import System
from scanner.probes import service as service_mod
from scanner.probes import tls as tls_mod
from scanner.probes.base import SYSTEM_LEVEL, Politeness, ProbeContext, Target
from scanner.probes.nmap import (
    UDP_PAYLOADS,
    NmapArgumentError,
    NmapRun,
    build_arguments,
    run_parallelism,
    udp_scan_possible,
)
from scanner.probes.service import ServiceProbe, default_settings, plan_jobs
from scanner.probes.tls import TlsProbe, plan_nmap_groups

SHARED = Politeness(timing=3, max_concurrency=4)
OWN = Politeness(timing=3, max_concurrency=2, own_concurrency=True)
FRAGILE = Politeness(timing=2, max_concurrency=1, fragile=True)


def _parallelism(args: Sequence[str]) -> int:
    return int(args[list(args).index("--max-parallelism") + 1])


@pytest.mark.parametrize(
    ("politeness", "systems", "cap"),
    [(SHARED, 1, 4), (SHARED, 3, 12), (SHARED, 64, 256), (OWN, 1, 2), (FRAGILE, 1, 1)],
)
def test_a_run_gets_max_concurrency_times_its_systems(politeness: Politeness, systems: int, cap: int) -> None:
    assert run_parallelism(politeness, systems) == cap
    args = build_arguments(
        [443], scripts=(), script_args={}, politeness=politeness, extra=(), timeout_s=10, systems=systems
    )
    assert _parallelism(args) == cap
    assert args.count("--max-parallelism") == 1


@pytest.mark.parametrize("politeness", [OWN, FRAGILE])
def test_a_strict_system_never_shares_a_run(politeness: Politeness) -> None:
    with pytest.raises(NmapArgumentError, match="its own run"):
        run_parallelism(politeness, 2)


@pytest.mark.parametrize("systems", [0, -1, True])
def test_a_run_covers_at_least_one_system(systems: Any) -> None:
    with pytest.raises(NmapArgumentError):
        build_arguments([443], scripts=(), script_args={}, politeness=SHARED, extra=(), timeout_s=10, systems=systems)


# --- which systems share a run -----------------------------------------------------------------------


def _target(system: str, address: str, port: int, politeness: Politeness, protocol: str = "ssh") -> Target:
    return Target(f"{system}/{port}", system, address, port, protocol, politeness=politeness)


def test_service_runs_count_their_systems_and_keep_strict_systems_alone() -> None:
    targets = [
        _target("a", "127.0.40.1", 22, SHARED),
        _target("b", "127.0.40.2", 22, SHARED),
        _target("c", "127.0.40.3", 22, SHARED),
        _target("own", "127.0.40.4", 22, OWN),
        _target("own2", "127.0.40.5", 22, OWN),  # same politeness values as "own": still not merged
        _target("dev", "127.0.40.6", 22, FRAGILE),
    ]
    jobs = plan_jobs(targets, ())
    shapes = sorted((sorted(j.systems), sorted(j.hosts)) for j in jobs)
    assert shapes == [
        (["a", "b", "c"], ["127.0.40.1", "127.0.40.2", "127.0.40.3"]),
        (["dev"], ["127.0.40.6"]),
        (["own"], ["127.0.40.4"]),
        (["own2"], ["127.0.40.5"]),
    ]


def test_tls_groups_count_systems_behind_shared_addresses() -> None:
    targets = [
        _target("a", "127.0.0.1", 443, SHARED, "https"),
        _target("b", "127.0.0.1", 443, SHARED, "https"),  # two systems on one address: the run covers both
        _target("c", "127.0.41.3", 443, SHARED, "https"),
        _target("own", "127.0.41.4", 443, OWN, "https"),
        _target("own2", "127.0.41.5", 443, OWN, "https"),
        _target("dev", "127.0.41.6", 443, FRAGILE, "https"),
    ]
    shapes = sorted((g.hosts, g.systems, g.politeness.strict) for g in plan_nmap_groups(targets))
    assert shapes == [
        (("127.0.0.1", "127.0.41.3"), 3, False),
        (("127.0.41.4",), 1, True),
        (("127.0.41.5",), 1, True),
        (("127.0.41.6",), 1, True),
    ]
    for g in plan_nmap_groups(targets):  # every planned group builds valid arguments
        run_parallelism(g.politeness, g.systems)


# --- the count reaches nmap in every probe --------------------------------------------------------------

_EMPTY_XML = '<?xml version="1.0"?><nmaprun><runstats><finished exit="success"/></runstats></nmaprun>'


def _recorder(calls: list[dict[str, Any]], order: list[str] | None = None) -> Any:
    def fake_run_nmap(hosts: Sequence[str], ports: Sequence[int], **kw: Any) -> NmapRun:
        args = build_arguments(
            ports,
            scripts=kw.get("scripts", ()),
            script_args=kw.get("script_args") or {},
            politeness=kw["politeness"],
            extra=kw.get("extra", ()),
            timeout_s=kw["timeout_s"],
            systems=kw.get("systems", 1),
            udp=kw.get("udp", False),
        )
        calls.append({"hosts": sorted(hosts), "parallelism": _parallelism(args), "udp": kw.get("udp", False)})
        if order is not None:
            order.append("nmap " + ",".join(sorted(hosts)))
        return NmapRun(_EMPTY_XML, "0" * 64, ["nmap", *args], 0.0)

    return fake_run_nmap


def test_service_probe_passes_the_system_count(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(service_mod, "run_nmap", _recorder(calls))
    targets = [_target(s, f"127.0.42.{i}", 22, SHARED) for i, s in enumerate("abcde", start=1)]
    targets += [_target("own", "127.0.42.9", 22, OWN), _target("own", "127.0.42.9", 2222, OWN)]
    system = Target("own/*", "own", "127.0.42.9", 0, SYSTEM_LEVEL, politeness=OWN)
    ServiceProbe(default_settings()).gather([*targets, system], ProbeContext())
    got = sorted((c["hosts"], c["parallelism"]) for c in calls if not c["udp"])
    assert got == [([f"127.0.42.{i}" for i in range(1, 6)], 20), (["127.0.42.9"], 2)]
    # The UDP sweep (as root: one run per UDP port) covers only the system that is swept, with its own cap.
    udp = [(c["hosts"], c["parallelism"]) for c in calls if c["udp"]]
    assert udp == ([(["127.0.42.9"], 2)] * len(UDP_PAYLOADS) if udp_scan_possible() else [])


def test_tls_probe_runs_a_strict_system_alone_and_after_its_handshakes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    order: list[str] = []
    monkeypatch.setattr(tls_mod, "run_nmap", _recorder(calls, order))

    def fake_handshake(address: str, port: int, server_name: str | None, timeout_s: float) -> Any:
        order.append(f"hs {address}:{port}")
        return tls_mod.Handshake("TLSv1.3", "TLS_AES_128_GCM_SHA256", ())

    monkeypatch.setattr(tls_mod, "tls_handshake", fake_handshake)
    targets = [_target(s, f"127.0.43.{i}", 443, SHARED, "https") for i, s in enumerate("abc", start=1)]
    targets += [_target("own", "127.0.43.9", p, OWN, "https") for p in (443, 8443, 9443)]
    TlsProbe().gather(targets, ProbeContext())
    got = sorted((c["hosts"], c["parallelism"]) for c in calls)
    assert got == [(["127.0.43.1", "127.0.43.2", "127.0.43.3"], 12), (["127.0.43.9"], 2)]
    strict_handshakes = [i for i, e in enumerate(order) if e.startswith("hs 127.0.43.9:")]
    assert len(strict_handshakes) == 3 and order.index("nmap 127.0.43.9") > max(strict_handshakes)


# --- where the strictness comes from ------------------------------------------------------------------


def _system(**extra: Any) -> System:
    return System.model_validate(
        {"id": "s", "name": "S", "owner": "o", "criticality": "high", "endpoints": [{"host": "127.0.0.1",
         "port": 443, "protocol": "https"}], **extra}
    )  # fmt: skip


def test_politeness_knows_an_inventory_declared_limit() -> None:
    config = Config()
    assert politeness_for(_system(), config) == Politeness(3, 4, 10.0)
    declared = politeness_for(_system(politeness={"max_concurrency": 2}), config)
    assert (declared.max_concurrency, declared.own_concurrency, declared.strict) == (2, True, True)
    timing_only = politeness_for(_system(politeness={"timing": 2}), config)
    assert not timing_only.strict and timing_only.max_concurrency == 4


def test_fragile_cipher_enumeration_follows_the_config() -> None:
    on = politeness_for(_system(fragile=True), Config())
    off = politeness_for(_system(fragile=True), Config(politeness=PolitenessConfig(fragile_cipher_enumeration=False)))
    ordinary = politeness_for(_system(), Config(politeness=PolitenessConfig(fragile_cipher_enumeration=False)))
    assert (on.cipher_enumeration, off.cipher_enumeration, ordinary.cipher_enumeration) == (True, False, True)
    assert off.strict and off.max_concurrency == 1

"""The service probe at region size: nmap runs in chunks of whole systems, each with its own politeness cap and time
limit; a chunk stopped at its limit keeps the hosts nmap had finished. Live, against loopback banner servers."""

from __future__ import annotations

import contextlib
import selectors
import shutil
import socket
import threading
from collections.abc import Iterator, Sequence

import pytest

from scanner.probes.base import SYSTEM_LEVEL, Politeness, ProbeContext, ProbeError, ProbeErrorReason, ProbeFacts, Target
from scanner.probes.nmap import MAX_RUN_PARALLELISM, run_parallelism
from scanner.probes.service import ServiceProbe, ServiceSettings, chunk_capacity, plan_jobs
from scanner.versiondata import load_version_data

pytestmark = [
    pytest.mark.needs_nmap,
    pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed (apt-get install nmap)"),
]

PORT = 2222
CLOSED_PORT = 2223  # swept, nothing listens: a reset
BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
POLITE = Politeness(timing=4, timeout_s=5.0)  # host timeout 30 s


@contextlib.contextmanager
def banner_hosts(addresses: Sequence[str], silent: Sequence[str] = ()) -> Iterator[None]:
    """An SSH banner on PORT of every address; on the `silent` ones a port that accepts and never says a word."""
    sel = selectors.DefaultSelector()
    listeners: list[socket.socket] = []
    for address in [*addresses, *silent]:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, PORT))
        sock.listen(64)
        sock.setblocking(False)
        listeners.append(sock)
        sel.register(sock, selectors.EVENT_READ, address in silent)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            for key, _ in sel.select(0.1):
                with contextlib.suppress(OSError):
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    if not key.data:
                        conn.setblocking(False)
                        with contextlib.suppress(OSError):
                            conn.send(BANNER)
                    held.append(conn)  # closed at the end; a silent one is kept open and quiet
                    if len(held) > 2000:
                        held.pop(0).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        for s in [*listeners, *held]:
            s.close()
        sel.close()


def _targets(addresses: Sequence[str], politeness: Politeness = POLITE) -> list[Target]:
    """Systems of two hosts each; every host declares its SSH port; each system is also swept."""
    out: list[Target] = []
    for i in range(0, len(addresses), 2):
        pair = addresses[i : i + 2]
        system = f"sys{i // 2:03d}"
        endpoints = [{"host": a, "port": PORT, "protocol": "ssh"} for a in pair]
        declared = {"system": {"id": system}, "endpoints": endpoints}
        for k, address in enumerate(pair):
            out.append(Target(f"{system}/ssh{k}", system, address, PORT, "ssh", politeness=politeness,
                              declared=declared))  # fmt: skip
        out.append(Target(f"{system}/*", system, pair[0], 0, SYSTEM_LEVEL, politeness=politeness, declared=declared))
    return out


def _settings(**kw: object) -> ServiceSettings:
    return ServiceSettings(load_version_data(), (PORT, CLOSED_PORT), version_intensity=2, **kw)  # type: ignore[arg-type]


def _flag(command: Sequence[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_a_region_is_planned_in_chunks_of_whole_systems_with_their_summed_cap() -> None:
    addresses = [f"127.0.91.{i}" for i in range(1, 151)]
    jobs = plan_jobs(_targets(addresses), (PORT, CLOSED_PORT), max_hosts=16)
    assert [len(j.hosts) for j in jobs] == [16] * 9 + [6]
    assert sorted(h for j in jobs for h in j.hosts) == sorted(addresses)
    for job in jobs:  # no system is split between two runs
        assert {s for j in jobs if j is not job for s in j.systems}.isdisjoint(job.systems)
        assert run_parallelism(POLITE, len(job.systems)) == 4 * len(job.systems)
    # many ports a host: fewer hosts a chunk; the sum of the caps is bounded whatever the chunk
    assert chunk_capacity(25) == 64 and chunk_capacity(400) == 4 and chunk_capacity(100_000) == 1
    assert run_parallelism(POLITE, 10_000) == MAX_RUN_PARALLELISM


def test_a_chunked_run_over_150_hosts_gives_every_host_its_facts() -> None:
    addresses = [f"127.0.91.{i}" for i in range(1, 151)]
    targets = _targets(addresses)
    probe = ServiceProbe(_settings(chunk_hosts=16, hostgroup=8))
    with banner_hosts(addresses):
        results = probe.gather(targets, ProbeContext())
    assert len(probe.runs) >= 10  # 10 TCP chunks (and, as root, the UDP sweep's runs beside them)
    tcp_runs = [r for r in probe.runs if "-sT" in r.command]
    assert len(tcp_runs) == 10
    for run in tcp_runs:
        hosts = [a for a in run.command if a.startswith("127.0.91.")]
        assert len(hosts) <= 16
        # the politeness cap is per system: 4 for each of the chunk's systems (two hosts a system)
        assert _flag(run.command, "--max-parallelism") == str(4 * (len(hosts) // 2))
        assert _flag(run.command, "--max-hostgroup") == "8"
        assert run.cut_short is None
    for t in targets:
        outcome = results[t.key]
        assert isinstance(outcome, ProbeFacts), f"{t.key}: {outcome}"  # as root: with the UDP sweep's facts
        if t.protocol != SYSTEM_LEVEL:
            assert outcome.facts["service.product"] == "OpenSSH"
            assert outcome.facts["patch.version"] == "9.2p1"
        else:
            assert outcome.facts["exposure.unexpected"] == []
            assert outcome.facts["exposure.swept_ports"][:2] == [f"{PORT}/tcp", f"{CLOSED_PORT}/tcp"]


def test_a_chunk_cut_short_keeps_the_hosts_nmap_finished_and_marks_only_the_rest() -> None:
    quick = [f"127.0.92.{i}" for i in range(1, 9)]
    silent = [f"127.0.92.{i}" for i in range(9, 13)]  # accept and never speak: -sV waits on them for minutes
    targets = [t for t in _targets([*quick, *silent]) if t.protocol != SYSTEM_LEVEL]
    # one chunk of 12 hosts, nmap takes 4 at a time (sorted: the quick ones first); stopped after 12 s
    probe = ServiceProbe(_settings(hostgroup=4, chunk_time_limit_s=12.0))
    with banner_hosts(quick, silent):
        results = probe.gather(targets, ProbeContext())
    (run,) = [r for r in probe.runs if "-sT" in r.command]
    assert run.cut_short == "nmap did not finish within 12s"
    assert "<runstats>" not in run.xml  # the partial XML, kept as evidence
    for t in targets:
        outcome = results[t.key]
        if t.address in quick:
            assert isinstance(outcome, ProbeFacts), f"{t.key}: {outcome}"
            assert outcome.facts["service.product"] == "OpenSSH"
        else:
            assert isinstance(outcome, ProbeError)
            assert outcome.reason is ProbeErrorReason.TIMEOUT
            assert outcome.detail.startswith("nmap did not finish within 12s (a run of 12 hosts)")
            assert outcome.detail.endswith(f"it had not finished {t.address}")


def test_a_chunk_cut_short_before_nmap_wrote_any_host_marks_every_host_with_the_reason() -> None:
    silent = [f"127.0.93.{i}" for i in range(1, 5)]
    targets = [t for t in _targets(silent) if t.protocol != SYSTEM_LEVEL]
    probe = ServiceProbe(_settings(hostgroup=4, chunk_time_limit_s=4.0))
    with banner_hosts([], silent):
        results = probe.gather(targets, ProbeContext())
    for t in targets:
        outcome = results[t.key]
        assert isinstance(outcome, ProbeError), f"{t.key}: {outcome}"
        assert outcome.reason is ProbeErrorReason.TIMEOUT
        assert outcome.detail == f"nmap did not finish within 4s (a run of 4 hosts); it had not finished {t.address}"

"""HttpProbe against the real lab servers (no mocks)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from scanner.lab import Lab
from scanner.probes.base import (
    Politeness,
    ProbeContext,
    ProbeError,
    ProbeErrorReason,
    ProbeFacts,
    ProbeOutcome,
    Target,
)
from scanner.probes.http import HttpProbe, parse_hsts
from tests.helpers import self_signed_server_context


def target(lab: Lab, name: str, *, system: str | None = None, **politeness: Any) -> Target:
    ep = lab.endpoints[name]
    return Target(
        key=f"{system or name}/{name}",
        system_id=system or name,
        address=ep.address,
        port=ep.port,
        protocol=ep.protocol,
        server_name=ep.server_name,
        politeness=Politeness(**politeness),
    )


def gather_one(lab: Lab, name: str, **politeness: Any) -> ProbeOutcome:
    t = target(lab, name, **politeness)
    return HttpProbe().gather([t], ProbeContext())[t.key]


def facts(outcome: ProbeOutcome) -> dict[str, Any]:
    assert isinstance(outcome, ProbeFacts), outcome
    return dict(outcome.facts)


def test_fact_specs_document_every_fact(lab: Lab) -> None:
    documented = {f.name for f in HttpProbe.facts}
    assert set(facts(gather_one(lab, "good"))) == documented
    assert HttpProbe.kind == "http" and HttpProbe.protocols == {"https", "http", "fhir"}


def test_good_has_one_year_hsts(lab: Lab) -> None:
    f = facts(gather_one(lab, "good"))
    assert f["http.scheme"] == "https" and f["http.status"] == 200
    assert f["http.hsts.present"] is True
    assert f["http.hsts.max_age"] == 31536000
    assert f["http.hsts.include_subdomains"] is False
    assert f["http.server"] == "nginx/1.28.2"
    assert f["http.redirects_to_https"] is False and f["http.location"] is None
    assert isinstance(f["http.date"], str)
    assert abs(f["http.clock_skew_seconds"]) < 5


def test_no_hsts_and_short_hsts(lab: Lab) -> None:
    no = facts(gather_one(lab, "no_hsts"))
    assert no["http.hsts.present"] is False and no["http.hsts.max_age"] is None
    assert facts(gather_one(lab, "short_hsts"))["http.hsts.max_age"] == 86400


def test_http_redirect_and_no_redirect(lab: Lab) -> None:
    red = facts(gather_one(lab, "http_redirect"))
    assert red["http.scheme"] == "http" and red["http.status"] == 301
    assert red["http.location"] == "https://http-redirect.lab.hcscan.test/"
    assert red["http.redirects_to_https"] is True
    plain = facts(gather_one(lab, "http_no_redirect"))
    assert plain["http.status"] == 200 and plain["http.redirects_to_https"] is False


@pytest.mark.parametrize("name", ["tls10_only", "legacy_protocols", "dh1024", "weak_key", "sha1_signature", "expired"])
def test_legacy_and_badly_certified_servers_still_yield_facts(lab: Lab, name: str) -> None:
    f = facts(gather_one(lab, name))
    assert f["http.status"] == 200 and f["http.hsts.max_age"] == 31536000


def test_plaintext_declared_https_is_a_protocol_error(lab: Lab) -> None:
    out = gather_one(lab, "plaintext")
    assert isinstance(out, ProbeError) and out.reason is ProbeErrorReason.PROTOCOL


def test_tarpit_times_out_promptly(lab: Lab) -> None:
    started = time.monotonic()
    out = gather_one(lab, "tarpit", timeout_s=1.5)
    elapsed = time.monotonic() - started
    assert isinstance(out, ProbeError) and out.reason is ProbeErrorReason.TIMEOUT, out
    assert elapsed < 1.5 + 2


def test_refused(lab: Lab) -> None:
    out = gather_one(lab, "refused")
    assert isinstance(out, ProbeError) and out.reason is ProbeErrorReason.REFUSED


def test_gather_many_targets_with_politeness(lab: Lab) -> None:
    names = [n for n in lab.endpoints if n not in {"tarpit"}]
    targets = [target(lab, n, system="sys-a", max_concurrency=2) for n in names[:8]]
    targets += [target(lab, n, system="sys-b", fragile=True) for n in names[8:]]
    targets.append(target(lab, "tarpit", system="sys-c", timeout_s=1.0))
    started = time.monotonic()
    results = HttpProbe().gather(targets, ProbeContext(max_workers=4))
    assert set(results) == {t.key for t in targets}
    assert time.monotonic() - started < 15
    assert isinstance(results["sys-a/good"], ProbeFacts)
    assert isinstance(results["sys-b/http_redirect"], ProbeFacts)
    refused = results["sys-b/refused"]
    assert isinstance(refused, ProbeError) and refused.reason is ProbeErrorReason.REFUSED
    tarpit = results["sys-c/tarpit"]
    assert isinstance(tarpit, ProbeError) and tarpit.reason is ProbeErrorReason.TIMEOUT
    assert HttpProbe().gather([], ProbeContext()) == {}


def test_fhir_uses_https(lab: Lab) -> None:
    ep = lab.endpoints["good"]
    t = Target("fhir/api", "fhir", ep.address, ep.port, "fhir", ep.server_name)
    assert facts(HttpProbe().gather([t], ProbeContext())[t.key])["http.scheme"] == "https"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("max-age=31536000", (31536000, False)),
        ("max-age=31536000; includeSubDomains", (31536000, True)),
        ('MAX-AGE="600" ; INCLUDESUBDOMAINS ; preload', (600, True)),
        ("includeSubDomains;max-age=0", (0, True)),
        ("max-age=abc", (None, False)),
        ("max-age=", (None, False)),
        ("includeSubDomains", (None, False)),
        ("max-age=10; max-age=20", (None, False)),
        ('max-age="10', (None, False)),
        ("", (None, False)),
        ("max-age=-5", (None, False)),
    ],
)
def test_parse_hsts(value: str, expected: tuple[int | None, bool]) -> None:
    assert parse_hsts(value) == expected


def test_byte_dripping_server_hits_the_overall_deadline() -> None:
    """A server that sends one header byte at a time never trips the per-read timeout; the
    overall deadline (2 x timeout_s) must still end the request."""
    stop = threading.Event()
    srv = socket.create_server(("127.0.0.1", 0))

    def drip() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b"X")
                except OSError:
                    return
                time.sleep(0.2)

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        t = Target("drip/x", "drip", "127.0.0.1", srv.getsockname()[1], "http", politeness=Politeness(timeout_s=1.0))
        started = time.monotonic()
        out = HttpProbe().gather([t], ProbeContext())[t.key]
        assert isinstance(out, ProbeError) and out.reason is ProbeErrorReason.TIMEOUT, out
        assert time.monotonic() - started < 4
    finally:
        stop.set()
        srv.close()
        thread.join(timeout=5)


def _self_signed_context(tmp_path: Path) -> ssl.SSLContext:
    return self_signed_server_context(tmp_path, "drip.test")


def test_byte_dripping_https_server_hits_the_overall_deadline(tmp_path: Path) -> None:
    """As above over TLS: wrapping detaches the plain socket, so the deadline must reach the TLS socket."""
    ctx = _self_signed_context(tmp_path)
    stop = threading.Event()
    srv = socket.create_server(("127.0.0.1", 0))

    def drip() -> None:
        conn, _ = srv.accept()
        give_up = time.monotonic() + 8  # a regression fails on time, it does not hang
        with contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True) as tls:
            tls.recv(4096)
            tls.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set() and time.monotonic() < give_up:
                tls.sendall(b"X")
                time.sleep(0.2)

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        t = Target("drip/x", "drip", "127.0.0.1", srv.getsockname()[1], "https", politeness=Politeness(timeout_s=1.0))
        started = time.monotonic()
        out = HttpProbe().gather([t], ProbeContext())[t.key]
        assert isinstance(out, ProbeError) and out.reason is ProbeErrorReason.TIMEOUT, out
        assert time.monotonic() - started < 4
    finally:
        stop.set()
        srv.close()
        thread.join(timeout=10)

"""scanner.probes.tls: pure fact derivation (chains, hostnames, kex, nmap tables) and live gathers."""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import shutil
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import crypto

from scanner.probes.base import (
    Politeness,
    ProbeContext,
    ProbeError,
    ProbeErrorReason,
    ProbeFacts,
    Target,
    TrustSettings,
)
from scanner.probes.nmap import NmapError, NmapPort, NmapScript, parse_nmap_xml
from scanner.probes.tls import (
    FACTS,
    Handshake,
    HandshakeFailure,
    TlsProbe,
    TrustAnchors,
    build_outcome,
    cipher_facts,
    classify_chain,
    dns_name_matches,
    hostname_matches,
    iso_utc,
    leaf_facts,
    leaf_matches,
    load_trust,
    parse_kex_info,
    parse_ssl_enum_ciphers,
    plan_nmap_groups,
)

DATA = Path(__file__).parent / "data"
DH1024_PORT, MODERN_PORT = 36007, 37503  # ports in the recorded nmap_tls_sample.xml
needs_nmap_binary = pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")

# --- certificate factory -------------------------------------------------------------------------

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass
class Issued:
    cert: x509.Certificate
    key: Key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_cert(
    cn: str,
    issuer: Issued | None = None,
    *,
    ca: bool = False,
    key: Key | None = None,
    san: list[x509.GeneralName] | None = None,
    days: tuple[int, int] = (-1, 365),
    hash_alg: hashes.HashAlgorithm | None = None,
    issuer_name: x509.Name | None = None,
) -> Issued:
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    signer = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name or (issuer.cert.subject if issuer else _name(cn)))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(signer, algorithm)
    if isinstance(hash_alg, hashes.SHA1):
        # cryptography refuses to make SHA-1 signatures; OpenSSL (through pyOpenSSL) still can.
        legacy = crypto.X509.from_cryptography(cert)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            legacy.sign(crypto.PKey.from_cryptography_key(signer), "sha1")
        cert = legacy.to_cryptography()
    return Issued(cert, key)


@pytest.fixture(scope="module")
def pki() -> dict[str, Issued]:
    root = make_cert("Test Root", ca=True)
    inter = make_cert("Test Intermediate", root, ca=True)
    leaf = make_cert("svc.test", inter, san=[x509.DNSName("svc.test")])
    rogue = make_cert("Rogue Root", ca=True)
    return {
        "root": root,
        "inter": inter,
        "leaf": leaf,
        "rogue": rogue,
        "rogue_leaf": make_cert("svc.test", rogue, san=[x509.DNSName("svc.test")]),
        "self": make_cert("svc.test", san=[x509.DNSName("svc.test")]),
        "expired_leaf": make_cert("svc.test", inter, days=(-400, -30), san=[x509.DNSName("svc.test")]),
        "weak_leaf": make_cert(
            "svc.test",
            inter,
            key=rsa.generate_private_key(65537, 1024),
            hash_alg=hashes.SHA1(),
            san=[x509.DNSName("svc.test")],
        ),
        # claims the intermediate as issuer but is signed by another key
        "forged": make_cert(
            "svc.test", make_cert("Other", ca=True), issuer_name=inter.cert.subject, san=[x509.DNSName("svc.test")]
        ),
    }


def anchors(*roots: Issued, intermediates: tuple[Issued, ...] = ()) -> TrustAnchors:
    return TrustAnchors(tuple(r.cert for r in roots), tuple(i.cert for i in intermediates))


# --- chain classification ------------------------------------------------------------------------


def test_full_chain_to_a_trusted_root(pki: dict[str, Issued]) -> None:
    verdict = classify_chain([pki["leaf"].cert, pki["inter"].cert], anchors(pki["root"]))
    assert (verdict.trusted, verdict.complete, verdict.error) == (True, True, None)


def test_served_root_is_fine(pki: dict[str, Issued]) -> None:
    chain = [pki["leaf"].cert, pki["inter"].cert, pki["root"].cert]
    assert classify_chain(chain, anchors(pki["root"])).error is None


def test_self_signed_leaf(pki: dict[str, Issued]) -> None:
    verdict = classify_chain([pki["self"].cert], anchors(pki["root"]))
    assert (verdict.trusted, verdict.complete, verdict.error) == (False, True, "self_signed")


def test_pinned_self_signed_leaf_in_the_bundle_is_trusted(pki: dict[str, Issued]) -> None:
    assert classify_chain([pki["self"].cert], anchors(pki["self"])).trusted is True


def test_rogue_root_served(pki: dict[str, Issued]) -> None:
    verdict = classify_chain([pki["rogue_leaf"].cert, pki["rogue"].cert], anchors(pki["root"]))
    assert (verdict.trusted, verdict.complete, verdict.error) == (False, True, "untrusted_root")


def test_missing_intermediate(pki: dict[str, Issued]) -> None:
    verdict = classify_chain([pki["leaf"].cert], anchors(pki["root"]))
    assert (verdict.trusted, verdict.complete, verdict.error) == (False, False, "incomplete_chain")


def test_missing_intermediate_known_from_the_bundle_is_trusted_but_incomplete(pki: dict[str, Issued]) -> None:
    verdict = classify_chain([pki["leaf"].cert], anchors(pki["root"], intermediates=(pki["inter"],)))
    assert (verdict.trusted, verdict.complete, verdict.error) == (True, False, "incomplete_chain")


def test_expiry_and_weak_keys_do_not_masquerade_as_distrust(pki: dict[str, Issued]) -> None:
    trust = anchors(pki["root"])
    for name in ("expired_leaf", "weak_leaf"):
        verdict = classify_chain([pki[name].cert, pki["inter"].cert], trust)
        assert (verdict.trusted, verdict.error) == (True, None), name


def test_bad_signature(pki: dict[str, Issued]) -> None:
    verdict = classify_chain([pki["forged"].cert, pki["inter"].cert], anchors(pki["root"]))
    assert (verdict.trusted, verdict.error) == (False, "invalid_signature")


def test_no_certificate() -> None:
    verdict = classify_chain([], TrustAnchors())
    assert (verdict.trusted, verdict.complete, verdict.error) == (None, None, "no_certificate")


def test_load_trust_splits_roots_and_intermediates(pki: dict[str, Issued], tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"".join(pki[n].cert.public_bytes(serialization.Encoding.PEM) for n in ("root", "inter")))
    trust = load_trust(False, [bundle])
    assert trust.roots == (pki["root"].cert,)
    assert trust.intermediates == (pki["inter"].cert,)
    assert trust.system_capath is None and trust.system_cafile is None


# --- leaf facts ----------------------------------------------------------------------------------


def test_leaf_facts(pki: dict[str, Issued]) -> None:
    facts = leaf_facts(pki["weak_leaf"].cert)
    cert = pki["weak_leaf"].cert
    assert facts["tls.leaf.subject"] == "CN=svc.test"
    assert facts["tls.leaf.issuer"] == "CN=Test Intermediate"
    assert facts["tls.leaf.serial"] == format(cert.serial_number, "x")
    assert facts["tls.leaf.san_dns"] == ["svc.test"]
    assert facts["tls.leaf.key_type"] == "RSA"
    assert facts["tls.leaf.key_bits"] == 1024
    assert facts["tls.leaf.signature_hash"] == "sha1"
    assert facts["tls.leaf.self_signed"] is False
    assert facts["tls.leaf.not_after"] == iso_utc(cert.not_valid_after_utc)
    assert str(facts["tls.leaf.not_after"]).endswith("Z") and "+" not in str(facts["tls.leaf.not_after"])
    assert len(str(facts["tls.leaf.sha256"])) == 64


def test_leaf_facts_ec_ed25519_and_none(pki: dict[str, Issued]) -> None:
    assert leaf_facts(pki["self"].cert)["tls.leaf.key_type"] == "EC"
    assert leaf_facts(pki["self"].cert)["tls.leaf.key_bits"] == 256
    assert leaf_facts(pki["self"].cert)["tls.leaf.self_signed"] is True
    ed = make_cert("ed.test", key=ed25519.Ed25519PrivateKey.generate())
    assert leaf_facts(ed.cert)["tls.leaf.key_type"] == "Ed25519"
    assert leaf_facts(ed.cert)["tls.leaf.signature_hash"] is None
    empty = leaf_facts(None)
    assert empty["tls.leaf.subject"] is None and empty["tls.leaf.san_dns"] == []


def test_iso_utc() -> None:
    when = dt.datetime(2026, 11, 22, 11, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert iso_utc(when) == "2026-11-22T10:00:00Z"


# --- hostname matching ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "hostname", "expected"),
    [
        ("pacs.region.dk", "pacs.region.dk", True),
        ("PACS.Region.DK", "pacs.region.dk.", True),
        ("*.region.dk", "pacs.region.dk", True),
        ("*.region.dk", "a.pacs.region.dk", False),  # one label only
        ("*.region.dk", "region.dk", False),
        ("*.dk", "region.dk", False),  # too broad
        ("pa*.region.dk", "pacs.region.dk", False),  # partial wildcards not accepted
        ("pacs.*.dk", "pacs.region.dk", False),  # only the left-most label
        ("xn--sundhed-mxa.dk", "sundhedø.dk", False),
        ("Sundhedø.dk", "xn--sundhed-w1a.dk", True),
        ("xn--sundhedsdat-78a.dk", "SUNDHEDSDATÅ.dk", True),  # IDNA, case-insensitive
        ("*.xn--sundhedsdat-78a.dk", "PACS.sundhedsdatå.dk", True),
        ("other.region.dk", "pacs.region.dk", False),
    ],
)
def test_dns_name_matches(pattern: str, hostname: str, expected: bool) -> None:
    assert dns_name_matches(pattern, hostname) is expected


def test_ip_targets_match_ip_sans_only() -> None:
    assert hostname_matches("127.0.0.5", ["127.0.0.5"], ["127.0.0.5"], [], has_san=True)
    assert not hostname_matches("127.0.0.5", ["127.0.0.5"], [], [], has_san=True)  # DNS SAN is not an IP SAN
    assert hostname_matches("::1", [], ["0:0:0:0:0:0:0:1"], [], has_san=True)


def test_common_name_only_without_san() -> None:
    assert hostname_matches("svc.test", [], [], ["svc.test"], has_san=False)
    assert not hostname_matches("svc.test", ["other.test"], [], ["svc.test"], has_san=True)


def test_leaf_matches_with_ip_san() -> None:
    leaf = make_cert("dev", san=[x509.IPAddress(ipaddress.ip_address("127.0.0.9"))]).cert
    assert leaf_matches(leaf, "127.0.0.9")
    assert not leaf_matches(leaf, "127.0.0.8")


# --- nmap tables → facts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kex", "expected"),
    [
        ("dh 1024", ("dh", 1024)),
        ("dh 2048", ("dh", 2048)),
        ("rsa 2048", ("rsa", 2048)),
        ("secp256r1", ("ecdh", 256)),
        ("secp384r1", ("ecdh", 384)),
        ("sect163k1", ("ecdh", 163)),
        ("brainpoolP512r1", ("ecdh", 512)),
        ("ecdh_x25519", ("ecdh", 256)),
        ("ecdh_x448", ("ecdh", 448)),
        ("ffdhe2048", ("dh", 2048)),
        ("ec 256", ("ecdh", 256)),
        ("", None),
        (None, None),
        ("mystery", None),
    ],
)
def test_parse_kex_info(kex: str | None, expected: tuple[str, int] | None) -> None:
    assert parse_kex_info(kex) == expected


def _recorded(port: int) -> NmapPort:
    return parse_nmap_xml((DATA / "nmap_tls_sample.xml").read_text()).ports[("127.0.0.1", port)]


def test_cipher_facts_from_recorded_dh1024_scan() -> None:
    enum = parse_ssl_enum_ciphers(_recorded(DH1024_PORT).scripts["ssl-enum-ciphers"].data)
    facts = cipher_facts(enum)
    assert facts["tls.protocols"] == ["TLSv1.2"]
    assert facts["tls.min_dh_bits"] == 1024
    assert facts["tls.min_ecdh_bits"] == 256
    assert facts["tls.nmap_least_strength"] == "A"  # nmap grades DHE-1024 "A": informational only
    assert "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256" in facts["tls.ciphers"]
    assert {
        "protocol": "TLSv1.2",
        "name": "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
        "kex_info": "dh 1024",
        "strength": "A",
    } in facts["tls.cipher_details"]


def test_ciphers_are_deduplicated_across_protocols() -> None:
    suite = {"name": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "kex_info": "secp256r1", "strength": "A"}
    data: Any = {
        "TLSv1.2": {"ciphers": [suite]},
        "TLSv1.0": {"ciphers": [suite]},
        "least strength": "A",
    }
    facts = cipher_facts(parse_ssl_enum_ciphers(data))
    assert facts["tls.protocols"] == ["TLSv1.0", "TLSv1.2"]
    assert facts["tls.ciphers"] == ["TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"]
    assert len(facts["tls.cipher_details"]) == 2
    assert facts["tls.min_dh_bits"] is None


def test_enumeration_without_protocols_is_none() -> None:
    assert parse_ssl_enum_ciphers({"least strength": "A"}) is None
    assert parse_ssl_enum_ciphers("ERROR: Script execution failed") is None


def test_every_fact_is_documented() -> None:
    names = [f.name for f in FACTS]
    assert len(names) == len(set(names))
    outcome = build_outcome(
        _target(MODERN_PORT), Handshake("TLSv1.3", "TLS_AES_256_GCM_SHA384", ()), _recorded(MODERN_PORT), TrustAnchors()
    )
    assert isinstance(outcome, ProbeFacts)
    assert set(outcome.facts) == set(names)


# --- outcome mapping -----------------------------------------------------------------------------


def _target(port: int, name: str | None = "svc.test") -> Target:
    return Target(
        key=f"sys/{port}", system_id="sys", address="127.0.0.1", port=port, protocol="https", server_name=name
    )


def test_refused_and_timeout_are_errors() -> None:
    refused = build_outcome(_target(1), HandshakeFailure("refused", "x"), None, TrustAnchors())
    timeout = build_outcome(_target(1), HandshakeFailure("timeout", "x"), None, TrustAnchors())
    assert isinstance(refused, ProbeError) and refused.reason is ProbeErrorReason.REFUSED
    assert isinstance(timeout, ProbeError) and timeout.reason is ProbeErrorReason.TIMEOUT


def test_tcp_without_tls_is_a_fact_not_an_error() -> None:
    port = NmapPort("127.0.0.1", 8080, "tcp", "open", "syn-ack", None, {})
    outcome = build_outcome(_target(8080), HandshakeFailure("not_tls", "wrong version number"), port, TrustAnchors())
    assert isinstance(outcome, ProbeFacts)
    assert outcome.facts["tls.offered"] is False
    assert outcome.facts["tls.leaf.subject"] is None and outcome.facts["tls.chain.trusted"] is None


def test_nmap_only_tls_keeps_nmaps_view() -> None:
    recorded = _recorded(MODERN_PORT)
    outcome = build_outcome(
        _target(MODERN_PORT, "test.local"), HandshakeFailure("not_tls", "no shared cipher"), recorded, TrustAnchors()
    )
    assert isinstance(outcome, ProbeFacts)
    assert outcome.facts["tls.offered"] is True
    assert outcome.facts["tls.protocols"] == ["TLSv1.2", "TLSv1.3"]
    assert outcome.facts["tls.leaf.subject"] == "CN=test.local"  # from nmap's ssl-cert PEM
    assert outcome.facts["tls.hostname_matches"] is True
    assert outcome.facts["tls.chain_served"] is None


def test_nmap_errors_become_tool_errors() -> None:
    outcome = build_outcome(
        _target(443), Handshake("TLSv1.3", "x", ()), NmapError(ProbeErrorReason.TOOL_MISSING, "no nmap"), TrustAnchors()
    )
    assert isinstance(outcome, ProbeError) and outcome.reason is ProbeErrorReason.TOOL_MISSING


def test_handshake_ok_but_no_enumeration_is_not_a_pass() -> None:
    port = NmapPort(
        "127.0.0.1", 443, "tcp", "open", "syn-ack", None, {"ssl-enum-ciphers": NmapScript("ssl-enum-ciphers", "", {})}
    )
    outcome = build_outcome(_target(443), Handshake("TLSv1.3", "x", ()), port, TrustAnchors())
    assert isinstance(outcome, ProbeError) and outcome.reason is ProbeErrorReason.TOOL_FAILED


# --- grouping ------------------------------------------------------------------------------------


def test_groups_merge_hosts_with_the_same_port_set_only() -> None:
    gentle = Politeness(timing=2, fragile=True)

    def t(addr: str, port: int, pol: Politeness | None = None) -> Target:
        pol = pol or Politeness()
        return Target(key=f"{addr}:{port}", system_id=addr, address=addr, port=port, protocol="https", politeness=pol)

    groups = plan_nmap_groups(
        [
            t("127.0.0.1", 443),
            t("127.0.0.2", 443),
            t("127.0.0.3", 443),
            t("127.0.0.3", 8443),
            t("127.0.0.4", 443, gentle),
        ]
    )
    shapes = sorted((g.hosts, g.ports, g.politeness.fragile) for g in groups)
    assert shapes == [
        (("127.0.0.1", "127.0.0.2"), (443,), False),
        (("127.0.0.3",), (443, 8443), False),
        (("127.0.0.4",), (443,), True),
    ]


def test_groups_are_capped() -> None:
    targets = [
        Target(key=str(i), system_id=str(i), address=f"127.0.1.{i}", port=443, protocol="https") for i in range(1, 11)
    ]
    assert [len(g.hosts) for g in plan_nmap_groups(targets, max_hosts=4)] == [4, 4, 2]


# --- live: small servers started here ------------------------------------------------------------


def _pem(issued: Issued) -> bytes:
    return issued.cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(issued: Issued) -> bytes:
    return issued.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class _Server:
    """A loopback listener whose connections are handled by `handler` in threads."""

    def __init__(self, handler: Callable[[socket.socket], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._loop, args=(handler,), daemon=True)
        self.thread.start()

    def _loop(self, handler: Callable[[socket.socket], None]) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


def _tls_handler(ctx: ssl.SSLContext) -> Callable[[socket.socket], None]:
    def handle(conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except OSError:
            conn.close()

    return handle


def _plain_http(conn: socket.socket) -> None:
    conn.settimeout(5)
    with contextlib.suppress(OSError):
        conn.recv(4096)
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    conn.close()


@pytest.fixture(scope="module")
def live(pki: dict[str, Issued], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("tls-live")
    leaf = make_cert(
        "svc.test", pki["inter"], key=rsa.generate_private_key(65537, 2048), san=[x509.DNSName("svc.test")]
    )
    (tmp / "chain.pem").write_bytes(_pem(leaf) + _pem(pki["inter"]))
    (tmp / "key.pem").write_bytes(_key_pem(leaf))
    (tmp / "root.pem").write_bytes(_pem(pki["root"]))

    good = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    good.load_cert_chain(tmp / "chain.pem", tmp / "key.pem")
    legacy = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    legacy.load_cert_chain(tmp / "chain.pem", tmp / "key.pem")
    legacy.set_ciphers("ECDHE+AES:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        legacy.minimum_version = ssl.TLSVersion.TLSv1
        legacy.maximum_version = ssl.TLSVersion.TLSv1

    sni_only = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sni_only.load_cert_chain(tmp / "chain.pem", tmp / "key.pem")

    def require_sni(sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext) -> int | None:
        return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME if name is None else None

    sni_only.sni_callback = require_sni

    held: list[socket.socket] = []
    servers = {
        "sni_only": _Server(_tls_handler(sni_only)),
        "good": _Server(_tls_handler(good)),
        "tls10": _Server(_tls_handler(legacy)),
        "plain": _Server(_plain_http),
        "tarpit": _Server(held.append),  # accept and never speak
    }
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()  # nothing listens any more
    yield {"servers": servers, "closed": closed_port, "root": tmp / "root.pem"}
    for server in servers.values():
        server.close()
    for conn in held:
        conn.close()


@pytest.mark.needs_nmap
@needs_nmap_binary
def test_gather_over_local_servers(live: dict[str, Any]) -> None:
    polite = Politeness(timing=4, timeout_s=2.0)
    ports = {name: server.port for name, server in live["servers"].items()} | {"closed": live["closed"]}
    targets = [
        Target(
            key=n,
            system_id=f"sys-{n}",
            address="127.0.0.1",
            port=p,
            protocol="https",
            server_name="svc.test",
            politeness=polite,
        )
        for n, p in ports.items()
    ]
    ctx = ProbeContext(trust=TrustSettings(use_system_store=False, ca_bundles=(live["root"],)))
    result = TlsProbe().gather(targets, ctx)
    assert set(result) == set(ports)

    good = result["good"]
    assert isinstance(good, ProbeFacts), good
    assert good.facts["tls.offered"] is True
    assert good.facts["tls.protocols"] == ["TLSv1.2", "TLSv1.3"]
    assert good.facts["tls.negotiated_protocol"] == "TLSv1.3"
    assert good.facts["tls.chain_served"] == 2
    assert (good.facts["tls.chain.trusted"], good.facts["tls.chain.complete"], good.facts["tls.chain.error"]) == (
        True,
        True,
        None,
    )
    assert good.facts["tls.hostname_matches"] is True
    assert good.facts["tls.leaf.key_bits"] == 2048

    sni_only = result["sni_only"]  # nmap without SNI finds nothing; the retry with SNI does
    assert isinstance(sni_only, ProbeFacts), sni_only
    assert sni_only.facts["tls.protocols"] == ["TLSv1.2", "TLSv1.3"]

    tls10 = result["tls10"]
    assert isinstance(tls10, ProbeFacts), tls10
    assert tls10.facts["tls.protocols"] == ["TLSv1.0"]
    assert tls10.facts["tls.negotiated_protocol"] == "TLSv1.0"  # our client still reaches a TLS 1.0 server
    assert tls10.facts["tls.chain.trusted"] is True

    plain = result["plain"]
    assert isinstance(plain, ProbeFacts), plain
    assert plain.facts["tls.offered"] is False
    assert plain.facts["tls.leaf.subject"] is None

    assert result["tarpit"] == ProbeError(ProbeErrorReason.TIMEOUT, "no TLS handshake within 2s")
    closed = result["closed"]
    assert isinstance(closed, ProbeError) and closed.reason is ProbeErrorReason.REFUSED


def test_gather_without_nmap_never_raises(live: dict[str, Any]) -> None:
    polite = Politeness(timeout_s=2.0)
    targets = [
        Target(
            key="good",
            system_id="s",
            address="127.0.0.1",
            port=live["servers"]["good"].port,
            protocol="https",
            politeness=polite,
        ),
        Target(
            key="closed", system_id="s", address="127.0.0.1", port=live["closed"], protocol="https", politeness=polite
        ),
        Target(key="named", system_id="s", address="svc.test", port=443, protocol="https", politeness=polite),
    ]
    result = TlsProbe().gather(targets, ProbeContext(nmap_path="/nonexistent/nmap"))
    assert isinstance(result["good"], ProbeError) and result["good"].reason is ProbeErrorReason.TOOL_MISSING
    assert isinstance(result["closed"], ProbeError) and result["closed"].reason is ProbeErrorReason.REFUSED
    assert isinstance(result["named"], ProbeError) and result["named"].reason is ProbeErrorReason.INTERNAL


# --- live: the whole lab in one gather ------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The project's lab: the session fixture `lab` if tests/conftest.py has one, else our own."""
    lab_module = pytest.importorskip("scanner.lab", reason="scanner.lab has not landed yet")
    try:
        yield request.getfixturevalue("lab")
        return
    except pytest.FixtureLookupError:
        pass
    with lab_module.Lab(tmp_path_factory.mktemp("lab")) as lab:
        yield lab


@pytest.mark.needs_nmap
@pytest.mark.slow
@needs_nmap_binary
def test_gather_over_the_whole_lab(tls_lab: Any, capsys: pytest.CaptureFixture[str]) -> None:
    polite = Politeness(timing=4, timeout_s=3.0)
    endpoints = {n: e for n, e in tls_lab.endpoints.items() if e.protocol == "https"}
    targets = [
        Target(
            key=n,
            system_id=f"lab-{n}",
            address=e.address,
            port=e.port,
            protocol=e.protocol,
            server_name=e.server_name,
            politeness=polite,
        )
        for n, e in endpoints.items()
    ]
    ctx = ProbeContext(trust=TrustSettings(use_system_store=True, ca_bundles=(Path(tls_lab.ca_bundle),)))
    started = time.monotonic()
    result = TlsProbe().gather(targets, ctx)
    wall = time.monotonic() - started
    with capsys.disabled():
        print(f"\nTlsProbe.gather over {len(targets)} lab endpoints: {wall:.2f}s")
    assert set(result) == set(endpoints)

    def facts(name: str) -> dict[str, Any]:
        outcome = result[name]
        assert isinstance(outcome, ProbeFacts), f"{name}: {outcome}"
        return dict(outcome.facts)

    good = facts("good")
    assert good["tls.protocols"] == ["TLSv1.2", "TLSv1.3"]
    assert (good["tls.chain.trusted"], good["tls.chain.complete"], good["tls.chain.error"]) == (True, True, None)
    assert good["tls.hostname_matches"] is True
    assert facts("good_ec")["tls.leaf.key_type"] == "EC"
    assert facts("legacy_protocols")["tls.protocols"] == ["TLSv1.0", "TLSv1.1", "TLSv1.2"]
    assert facts("tls10_only")["tls.protocols"] == ["TLSv1.0"]
    weak = facts("weak_ciphers")
    assert "TLS_RSA_WITH_NULL_SHA256" in weak["tls.ciphers"]
    assert any("_anon_" in c for c in weak["tls.ciphers"])
    assert facts("dh1024")["tls.min_dh_bits"] == 1024
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert facts("expired")["tls.leaf.not_after"] < now
    assert facts("expired")["tls.chain.trusted"] is True  # dates do not masquerade as distrust
    assert facts("not_yet_valid")["tls.leaf.not_before"] > now
    for name, error, complete in [
        ("self_signed", "self_signed", True),
        ("untrusted_root", "untrusted_root", True),
        ("incomplete_chain", "incomplete_chain", False),
    ]:
        f = facts(name)
        assert (f["tls.chain.trusted"], f["tls.chain.complete"], f["tls.chain.error"]) == (False, complete, error), name
    assert facts("wrong_hostname")["tls.hostname_matches"] is False
    assert facts("weak_key")["tls.leaf.key_bits"] == 1024
    assert facts("sha1_signature")["tls.leaf.signature_hash"] == "sha1"
    assert facts("plaintext")["tls.offered"] is False
    tarpit, refused = result["tarpit"], result["refused"]
    assert isinstance(tarpit, ProbeError) and tarpit.reason is ProbeErrorReason.TIMEOUT
    assert isinstance(refused, ProbeError) and refused.reason is ProbeErrorReason.REFUSED

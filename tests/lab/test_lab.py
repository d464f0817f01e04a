"""The lab serves what each case says, to real clients (Python's ssl, pyOpenSSL, plain sockets)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from OpenSSL import SSL

from scanner.lab import CASES, DEMO_LAYOUT, Lab, LabEndpoint, LabError
from scanner.lab.cases import TLS_CONTROLS

pytestmark = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")

# -- helpers ------------------------------------------------------------------------------------


def client_context(
    lab: Lab | None = None,
    *,
    minimum: ssl.TLSVersion | None = None,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A verifying client (when `lab` is given: trusts the lab root) or a non-verifying one."""
    if lab is not None:
        ctx = ssl.create_default_context(cafile=str(lab.ca_bundle))
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    return ctx


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def tls_get(ep: LabEndpoint, ctx: ssl.SSLContext) -> tuple[str, str, bytes]:
    """Handshake, GET /, return (TLS version, cipher name, raw HTTP response)."""
    with (
        socket.create_connection((ep.address, ep.port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=ep.server_name) as tls,
    ):
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {ep.server_name}\r\n\r\n".encode())
        version, cipher = tls.version(), tls.cipher()
        assert version is not None and cipher is not None
        return version, cipher[0], read_all(tls)


def plain_get(ep: LabEndpoint) -> bytes:
    with socket.create_connection((ep.address, ep.port), timeout=5) as sock:
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {ep.server_name}\r\n\r\n".encode())
        return read_all(sock)


def header(response: bytes, name: str) -> str | None:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def served_chain(ep: LabEndpoint) -> list[x509.Certificate]:
    """The certificates the server sends, unverified (pyOpenSSL exposes the peer chain)."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_cipher_list(b"ALL:@SECLEVEL=0")
    with socket.create_connection((ep.address, ep.port), timeout=5) as sock:
        sock.setblocking(True)  # pyOpenSSL needs a blocking socket; the lab drops stalled peers itself
        conn = SSL.Connection(ctx, sock)
        assert ep.server_name is not None
        conn.set_tlsext_host_name(ep.server_name.encode())
        conn.set_connect_state()
        conn.do_handshake()
        chain = conn.get_peer_cert_chain(as_cryptography=True)
        conn.shutdown()
    assert chain
    return list(chain)


def verify_with_cryptography(lab: Lab, ep: LabEndpoint) -> None:
    chain = served_chain(ep)
    store = Store(x509.load_pem_x509_certificates(lab.ca_bundle.read_bytes()))
    assert ep.server_name is not None
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(ep.server_name))
    verifier.verify(chain[0], chain[1:])


def verify_error(lab: Lab, ep: LabEndpoint) -> ssl.SSLCertVerificationError:
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        tls_get(ep, client_context(lab, ciphers="ALL:@SECLEVEL=0"))
    return info.value


# -- the case table -----------------------------------------------------------------------------


def test_every_case_has_an_endpoint_and_expectations(lab: Lab) -> None:
    assert set(lab.endpoints) == {c.name for c in CASES}
    for case in CASES:
        ep = lab.endpoints[case.name]
        assert ep.address == "127.0.0.1"
        assert ep.protocol == case.protocol
        assert ep.server_name == case.server_name
        assert set(ep.expect.values()) <= {"pass", "fail", "error"}
        if case.protocol == "https":
            assert tuple(ep.expect) == TLS_CONTROLS
        else:
            assert dict(ep.expect) == {"TLS-07": "pass" if case.name == "http_redirect" else "fail"}
    assert lab.ca_bundle.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_demo_layout_table_matches_case_order() -> None:
    for i, case in enumerate(CASES):
        port = 8443 if case.protocol == "https" else 8080
        assert DEMO_LAYOUT[case.name] == (f"127.0.10.{i + 1}", port)


def test_demo_inventory_agrees_with_the_service_lab_demo_layout() -> None:
    """Every 127.0.20.N endpoint of inventory/*.yaml is case N of the service lab, on its demo port, declared as the
    case needs (protocol, FHIR base path, DICOM AE title)."""
    import yaml

    from scanner.lab.services import SERVICE_CASES, SERVICE_LAB_NET, demo_port

    checked = set()
    for file in sorted((Path(__file__).resolve().parents[2] / "inventory").glob("*.yaml")):
        for system in yaml.safe_load(file.read_text(encoding="utf-8")).get("systems") or []:
            for ep in system["endpoints"]:
                if not ep["host"].startswith(SERVICE_LAB_NET + "."):
                    continue
                case = SERVICE_CASES[int(ep["host"].rsplit(".", 1)[1]) - 1]
                where = f"{file.name} {system['id']}/{ep['id']}"
                assert ep["port"] == demo_port(case), where
                assert ep["protocol"] == case.kind, where
                assert ep.get("path") == (case.fhir_base or None), where
                checks = (system.get("availability") or {}).get("checks") or {}
                assert (checks.get(ep["id"]) or {}).get("ae_title") == (case.dicom_declared_aet or None), where
                checked.add(case.name)
    assert {"dicom_nonstd", "dicom_tls_open", "dicom_tls_strict", "fhir_good_base", "fhir_bad_base"} <= checked


# -- good cases ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["good", "good_ec"])
def test_good_verifies_with_lab_ca(lab: Lab, name: str) -> None:
    ep = lab.endpoints[name]
    version, _, response = tls_get(ep, client_context(lab))
    assert version == "TLSv1.3"
    assert response.startswith(b"HTTP/1.1 200 ")
    assert header(response, "Strict-Transport-Security") == "max-age=31536000"
    assert header(response, "Server") == "nginx/1.28.2"
    assert header(response, "Date")
    verify_with_cryptography(lab, ep)  # the strict X.509 verifier accepts the lab PKI


def test_good_serves_leaf_and_intermediate_with_proper_extensions(lab: Lab) -> None:
    leaf, intermediate = served_chain(lab.endpoints["good"])
    root = x509.load_pem_x509_certificate(lab.ca_bundle.read_bytes())
    assert leaf.issuer == intermediate.subject and intermediate.issuer == root.subject
    leaf_key = leaf.public_key()
    assert isinstance(leaf_key, rsa.RSAPublicKey) and leaf_key.key_size == 2048
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["good.lab.hcscan.test"]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku
    for ca in (root, intermediate):
        bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca
        ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.key_cert_sign and ku.crl_sign
        ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)


def test_good_refuses_tls11_and_good_ec_has_p256_key(lab: Lab) -> None:
    with pytest.raises(ssl.SSLError):
        tls_get(
            lab.endpoints["good"],
            client_context(maximum=ssl.TLSVersion.TLSv1_1, minimum=ssl.TLSVersion.TLSv1, ciphers="ALL:@SECLEVEL=0"),
        )
    key = served_chain(lab.endpoints["good_ec"])[0].public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"


# -- protocols and ciphers ----------------------------------------------------------------------

LEGACY = "ALL:@SECLEVEL=0"


def test_tls10_only_accepts_tls10_and_refuses_tls12(lab: Lab) -> None:
    ep = lab.endpoints["tls10_only"]
    version, _, response = tls_get(
        ep, client_context(minimum=ssl.TLSVersion.TLSv1, maximum=ssl.TLSVersion.TLSv1, ciphers=LEGACY)
    )
    assert version == "TLSv1" and response.startswith(b"HTTP/1.1 200 ")
    with pytest.raises(ssl.SSLError):
        tls_get(ep, client_context(minimum=ssl.TLSVersion.TLSv1_2, ciphers=LEGACY))


def test_legacy_protocols_accepts_10_11_12_not_13(lab: Lab) -> None:
    ep = lab.endpoints["legacy_protocols"]
    for v, name in [
        (ssl.TLSVersion.TLSv1, "TLSv1"),
        (ssl.TLSVersion.TLSv1_1, "TLSv1.1"),
        (ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
    ]:
        assert tls_get(ep, client_context(minimum=v, maximum=v, ciphers=LEGACY))[0] == name
    with pytest.raises(ssl.SSLError):
        tls_get(ep, client_context(minimum=ssl.TLSVersion.TLSv1_3))


@pytest.mark.parametrize("cipher", ["NULL-SHA256", "ADH-AES128-GCM-SHA256", "AECDH-AES128-SHA"])
def test_weak_ciphers_offers_null_and_anonymous_suites(lab: Lab, cipher: str) -> None:
    ep = lab.endpoints["weak_ciphers"]
    ctx = client_context(maximum=ssl.TLSVersion.TLSv1_2, ciphers=f"{cipher}:@SECLEVEL=0")
    assert tls_get(ep, ctx)[1] == cipher
    # an ordinary client still gets a strong suite (server preference)
    assert "ECDHE" in tls_get(ep, client_context(lab))[1]


def test_dh1024_offers_only_dhe_with_small_group(lab: Lab) -> None:
    ep = lab.endpoints["dh1024"]
    version, cipher, _ = tls_get(ep, client_context(ciphers=LEGACY))
    assert (version, cipher) == ("TLSv1.2", "DHE-RSA-AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError):  # no ECDHE at all
        tls_get(ep, client_context(ciphers="ECDHE:@SECLEVEL=0"))
    with pytest.raises(ssl.SSLError, match=r"(?i)dh key too small"):  # a default client refuses DH-1024
        tls_get(ep, client_context(lab))


# -- certificates -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "code", "text"),
    [
        ("expired", 10, "certificate has expired"),
        ("not_yet_valid", 9, "certificate is not yet valid"),
        ("self_signed", 18, "self-signed certificate"),
        ("untrusted_root", 19, "self-signed certificate in certificate chain"),
        ("incomplete_chain", 20, "unable to get local issuer certificate"),
        ("wrong_hostname", 62, "Hostname mismatch"),
    ],
)
def test_bad_certificates_fail_verification_for_the_right_reason(lab: Lab, name: str, code: int, text: str) -> None:
    err = verify_error(lab, lab.endpoints[name])
    assert err.verify_code == code
    assert text in str(err)


def test_bad_certificates_still_complete_a_non_verifying_handshake(lab: Lab) -> None:
    for name in ["expired", "not_yet_valid", "self_signed", "untrusted_root", "incomplete_chain", "wrong_hostname"]:
        _, _, response = tls_get(lab.endpoints[name], client_context())
        assert response.startswith(b"HTTP/1.1 200 ")


def test_certificate_dates(lab: Lab) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = served_chain(lab.endpoints["expired"])[0]
    assert expired.not_valid_after_utc < now
    nyv = served_chain(lab.endpoints["not_yet_valid"])[0]
    assert nyv.not_valid_before_utc > now
    soon = served_chain(lab.endpoints["expiring_soon"])[0]
    assert dt.timedelta(days=9) < soon.not_valid_after_utc - now < dt.timedelta(days=11)
    tls_get(lab.endpoints["expiring_soon"], client_context(lab))  # still valid today
    good = served_chain(lab.endpoints["good"])[0]
    assert good.not_valid_after_utc - now > dt.timedelta(days=300)


def test_chain_shapes(lab: Lab) -> None:
    root = x509.load_pem_x509_certificate(lab.ca_bundle.read_bytes())
    rogue = x509.load_pem_x509_certificate(lab.rogue_bundle.read_bytes())
    incomplete = served_chain(lab.endpoints["incomplete_chain"])
    assert len(incomplete) == 1 and incomplete[0].issuer != root.subject  # issued by the intermediate
    untrusted = served_chain(lab.endpoints["untrusted_root"])
    assert [c.subject for c in untrusted[1:]] == [rogue.subject]
    assert untrusted[0].issuer == rogue.subject
    (self_signed,) = served_chain(lab.endpoints["self_signed"])
    assert self_signed.issuer == self_signed.subject
    san = self_signed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["self-signed.lab.hcscan.test"]
    wrong = served_chain(lab.endpoints["wrong_hostname"])[0]
    san = wrong.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["other.lab.hcscan.test"]


def test_expired_fails_the_strict_verifier_too(lab: Lab) -> None:
    with pytest.raises(VerificationError):
        verify_with_cryptography(lab, lab.endpoints["expired"])


def test_weak_key_and_sha1_signature(lab: Lab) -> None:
    weak = served_chain(lab.endpoints["weak_key"])[0].public_key()
    assert isinstance(weak, rsa.RSAPublicKey) and weak.key_size == 1024
    sha1 = served_chain(lab.endpoints["sha1_signature"])[0]
    assert isinstance(sha1.signature_hash_algorithm, hashes.SHA1)
    # the SHA-1 leaf is correctly signed by the intermediate, and chains to the lab root at SECLEVEL=0
    _, _, response = tls_get(lab.endpoints["sha1_signature"], client_context(lab, ciphers="ALL:@SECLEVEL=0"))
    assert response.startswith(b"HTTP/1.1 200 ")
    with pytest.raises(ssl.SSLCertVerificationError):  # a default client rejects the SHA-1 signature
        tls_get(lab.endpoints["sha1_signature"], client_context(lab))


# -- HTTP behaviour -----------------------------------------------------------------------------


def test_hsts_variants(lab: Lab) -> None:
    assert header(tls_get(lab.endpoints["no_hsts"], client_context(lab))[2], "Strict-Transport-Security") is None
    short = tls_get(lab.endpoints["short_hsts"], client_context(lab))[2]
    assert header(short, "Strict-Transport-Security") == "max-age=86400"


def test_http_cases(lab: Lab) -> None:
    redirect = plain_get(lab.endpoints["http_redirect"])
    assert redirect.startswith(b"HTTP/1.1 301 ")
    assert header(redirect, "Location") == "https://http-redirect.lab.hcscan.test/"
    assert plain_get(lab.endpoints["http_no_redirect"]).startswith(b"HTTP/1.1 200 ")


def test_plaintext_speaks_http_not_tls(lab: Lab) -> None:
    ep = lab.endpoints["plaintext"]
    assert plain_get(ep).startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    with pytest.raises(ssl.SSLError):
        tls_get(ep, client_context())
    assert time.monotonic() - started < 2  # answered at once (400), not left hanging


def test_tarpit_accepts_but_never_sends(lab: Lab) -> None:
    ep = lab.endpoints["tarpit"]
    with socket.create_connection((ep.address, ep.port), timeout=1.0) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(1)


def test_refused_refuses(lab: Lab) -> None:
    ep = lab.endpoints["refused"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((ep.address, ep.port), timeout=2).close()


# -- robustness ---------------------------------------------------------------------------------


def test_survives_garbage_and_hundreds_of_parallel_handshakes(lab: Lab) -> None:
    ep = lab.endpoints["good"]
    for garbage in [b"\x16\x03\x01\x00\x05hello", os.urandom(512), b"GET / HTTP/1.1\r\n\r\n"]:
        with socket.create_connection((ep.address, ep.port), timeout=5) as sock:
            sock.sendall(garbage)
            with contextlib.suppress(OSError):
                sock.recv(1024)
    ctx = client_context(lab)

    def one(_: int) -> str:
        return tls_get(ep, ctx)[2][:12].decode()

    with ThreadPoolExecutor(max_workers=64) as pool:
        results = list(pool.map(one, range(300)))
    assert results == ["HTTP/1.1 200"] * 300


# -- other layouts, replicas, lifecycle ---------------------------------------------------------


def test_replicas_and_clean_stop(tmp_path: Path) -> None:
    with Lab(tmp_path / "lab", replicas=3) as lab:
        replicas = [lab.endpoints[f"good-{i}"] for i in range(3)]
        assert len({r.port for r in replicas} | {lab.endpoints["good"].port}) == 4
        for r in replicas:
            assert r.expect == lab.endpoints["good"].expect and r.server_name == "good.lab.hcscan.test"
            assert tls_get(r, client_context(lab))[2].startswith(b"HTTP/1.1 200 ")
        proc = lab._proc
        port = lab.endpoints["good"].port
    assert proc is not None and proc.poll() is not None
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(LabError):
        _ = lab.endpoints


def _demo_ports_free() -> bool:
    for address, port in DEMO_LAYOUT.values():
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like the lab: TIME_WAIT is no conflict
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


def test_demo_layout_binds_127_0_10_x(tmp_path: Path) -> None:
    if not _demo_ports_free():
        pytest.skip("a demo lab is already running on 127.0.10.x")
    with Lab(tmp_path / "demo", layout="demo") as lab:
        for name, (address, port) in DEMO_LAYOUT.items():
            assert (lab.endpoints[name].address, lab.endpoints[name].port) == (address, port)
        _version, _, response = tls_get(lab.endpoints["good"], client_context(lab))
        assert lab.endpoints["good"].address == "127.0.10.1"
        assert response.startswith(b"HTTP/1.1 200 ")
        assert plain_get(lab.endpoints["http_redirect"]).startswith(b"HTTP/1.1 301 ")
        with pytest.raises(ConnectionRefusedError):
            ep = lab.endpoints["refused"]
            socket.create_connection((ep.address, ep.port), timeout=2).close()

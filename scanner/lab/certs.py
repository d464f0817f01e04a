"""Certificates for the lab: a lab root CA, an intermediate, a rogue root, and leaves per case.

Everything is generated fresh with `cryptography` when a lab starts, so validity windows
(expired, not yet valid, expiring soon) are always relative to "now".
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dh, ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyKind = Literal["rsa2048", "rsa1024", "ec256"]
IssuerKind = Literal["intermediate", "self", "rogue"]
ChainKind = Literal["full", "leaf_only"]
HashKind = Literal["sha256", "sha1"]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

# RFC 2409 "Oakley group 2": a well-known 1024-bit safe prime. Using the constant keeps lab start-up
# instant (generating DH parameters takes a random, sometimes long, time).
_MODP_1024_HEX = (
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF"
)

# A 2048-bit safe prime generated once for this lab with cryptography (generator 2), so that the
# anonymous-DH case (ADH suites) starts instantly and its DH group itself is strong enough.
_DH2048_HEX = (
    "fb388f32d06bf1d9cf1179c360b4b35e7870f0dbfebd0fb112f2dd4c503a68789622fba29b15a9ed2a8fee67f9ce8860"
    "edeb614bb3022fb11737cad6442b870d54aa8f605007946a4a0478bcdfd60c485bbb4370a4bd590cff08b8aceb0ab841"
    "4d4a63d6f0a416383915f3e27fa234b74a0b2cf8479fcefbce8105081de5b7a29eb210cc4fd23a8ffa785bef63880c31"
    "0ba6052d3008ba7b1559eb1c32eb48e8d42c09ce4814212a05879a3eb8d4bfd23a74ef6553be51d1ebb4b777d4e6a13b"
    "2a28fec5ad1665867b9ee38cde6ec7d355d7df537e2569f963b2350e9ea1760c8107a608b072ded76bc99be6939f4413"
    "69f068258359a2ad279f889011bf4c6f"
)


@dataclass(frozen=True)
class CertSpec:
    """How a case's leaf certificate is made and which chain the server sends."""

    key: KeyKind = "rsa2048"
    issuer: IssuerKind = "intermediate"
    signature_hash: HashKind = "sha256"
    not_before_days: int = -1  # relative to now
    not_after_days: int = 365
    san: str | None = None  # DNS name in the SAN; None: the case's server name
    chain: ChainKind = "full"  # full: leaf + issuing CA (not the lab root); leaf_only: just the leaf


@dataclass(frozen=True)
class IssuedCert:
    chain_pem: Path  # leaf first, then the CA certificates the server sends
    key_pem: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hcscan lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


# DER of the AlgorithmIdentifier OIDs: sha256WithRSAEncryption and sha1WithRSAEncryption (same length).
_OID_SHA256_RSA = bytes.fromhex("06092a864886f70d01010b")
_OID_SHA1_RSA = bytes.fromhex("06092a864886f70d010105")


def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _sign(builder: x509.CertificateBuilder, key: PrivateKey, kind: HashKind) -> x509.Certificate:
    """Sign with SHA-256, or with SHA-1 for the deliberately weak case.

    `cryptography` refuses SHA-1 for X.509 signatures, so for SHA-1 the certificate is signed with
    SHA-256 first, then the signature algorithm in the TBS part is swapped for sha1WithRSAEncryption
    and the TBS bytes are signed again with PKCS#1 v1.5 / SHA-1 and reassembled in DER.
    """
    cert = builder.sign(key, hashes.SHA256())
    if kind == "sha256":
        return cert
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("SHA-1 lab certificates need an RSA issuer")
    tbs = cert.tbs_certificate_bytes
    assert tbs.count(_OID_SHA256_RSA) == 1
    tbs = tbs.replace(_OID_SHA256_RSA, _OID_SHA1_RSA)
    signature = key.sign(tbs, padding.PKCS1v15(), hashes.SHA1())  # noqa: S303 - deliberately weak
    alg_id = b"\x30" + _der_len(len(_OID_SHA1_RSA) + 2) + _OID_SHA1_RSA + b"\x05\x00"
    bit_string = b"\x03" + _der_len(len(signature) + 1) + b"\x00" + signature
    body = tbs + alg_id + bit_string
    return x509.load_der_x509_certificate(b"\x30" + _der_len(len(body)) + body)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def dh_params_pem(bits: int) -> bytes:
    """PKCS#3 PEM of a fixed DH group (1024 or 2048 bits, generator 2), for `SSLContext.load_dh_params`."""
    prime = {1024: _MODP_1024_HEX, 2048: _DH2048_HEX}[bits]
    params = dh.DHParameterNumbers(int(prime, 16), 2).parameters()
    return params.parameter_bytes(serialization.Encoding.PEM, serialization.ParameterFormat.PKCS3)


@dataclass
class _CA:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate


@dataclass
class LabPKI:
    """The lab's certificate authorities; `issue` writes a leaf chain + key for a case."""

    directory: Path
    root: _CA = field(init=False)
    intermediate: _CA = field(init=False)
    rogue_root: _CA = field(init=False)
    _keys: dict[KeyKind, PrivateKey] = field(init=False, default_factory=dict)
    _issued: dict[tuple[CertSpec, str], IssuedCert] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.root = self._make_root("hcscan lab root CA")
        self.intermediate = self._make_intermediate(self.root, "hcscan lab intermediate CA")
        self.rogue_root = self._make_root("hcscan rogue root CA (untrusted)")
        self.ca_bundle.write_bytes(_cert_pem(self.root.cert))
        self.rogue_bundle.write_bytes(_cert_pem(self.rogue_root.cert))
        for bits in (1024, 2048):
            self.dh_params(bits).write_bytes(dh_params_pem(bits))

    @property
    def ca_bundle(self) -> Path:
        return self.directory / "lab-root-ca.pem"

    @property
    def rogue_bundle(self) -> Path:
        return self.directory / "rogue-root-ca.pem"

    def dh_params(self, bits: int) -> Path:
        return self.directory / f"dh{bits}.pem"

    def _leaf_key(self, kind: KeyKind) -> PrivateKey:
        """One key per kind, shared by all leaves of that kind (keeps start-up fast)."""
        if kind not in self._keys:
            if kind == "ec256":
                self._keys[kind] = ec.generate_private_key(ec.SECP256R1())
            else:
                self._keys[kind] = rsa.generate_private_key(65537, 1024 if kind == "rsa1024" else 2048)
        return self._keys[kind]

    @staticmethod
    def _make_root(common_name: str) -> _CA:
        key = rsa.generate_private_key(65537, 2048)
        now = _now()
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256())
        )
        return _CA(key, cert)

    @staticmethod
    def _make_intermediate(parent: _CA, common_name: str) -> _CA:
        key = rsa.generate_private_key(65537, 2048)
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(parent.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1825))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_ca_key_usage(), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(_aki(parent.cert), critical=False)
            .sign(parent.key, hashes.SHA256())
        )
        return _CA(key, cert)

    def issue(self, spec: CertSpec, server_name: str, label: str) -> IssuedCert:
        """Create (or reuse) the leaf for `spec` and write `<label>.chain.pem` / `<label>.key.pem`."""
        cached = self._issued.get((spec, server_name))
        if cached is not None:
            return cached
        key = self._leaf_key(spec.key)
        now = _now()
        dns_name = spec.san or server_name
        subject = _name(dns_name)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=spec.not_before_days))
            .not_valid_after(now + dt.timedelta(days=spec.not_after_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(spec.key), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(_san(dns_name), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        extra: list[x509.Certificate] = []
        if spec.issuer == "self":
            ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
            builder = builder.issuer_name(subject).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
            )
            cert = _sign(builder, key, spec.signature_hash)
        else:
            ca = self.intermediate if spec.issuer == "intermediate" else self.rogue_root
            builder = builder.issuer_name(ca.cert.subject).add_extension(_aki(ca.cert), critical=False)
            cert = _sign(builder, ca.key, spec.signature_hash)
            if spec.chain == "full":
                extra.append(ca.cert)
        chain_path = self.directory / f"{label}.chain.pem"
        key_path = self.directory / f"{label}.key.pem"
        chain_path.write_bytes(b"".join(_cert_pem(c) for c in [cert, *extra]))
        key_path.write_bytes(_key_pem(key))
        key_path.chmod(0o600)
        issued = IssuedCert(chain_path, key_path)
        self._issued[(spec, server_name)] = issued
        return issued


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage(kind: KeyKind) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=kind != "ec256",
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _san(dns_name: str) -> x509.SubjectAlternativeName:
    try:
        return x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(dns_name))])
    except ValueError:
        return x509.SubjectAlternativeName([x509.DNSName(dns_name)])

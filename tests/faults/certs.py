"""Odd certificates the fault lab serves: what real, broken devices present.

cryptography refuses to build some of them (a negative serial, a subject that is not UTF-8), so those
are built with a placeholder, patched in the DER of the to-be-signed part (same length, so no ASN.1
lengths change) and signed again with the same RSA key (an RSA signature has a fixed length too).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

_PLACEHOLDER_CN = b"HCSCANPLACEHOLDERCN"
NON_UTF8_CN = b"\xff\xfe\xc3\x28 \xa0\xa1 bad\x80utf8"[: len(_PLACEHOLDER_CN)].ljust(len(_PLACEHOLDER_CN), b"\xff")
_PLACEHOLDER_SERIAL = 0x7F  # DER 02 01 7F; patched to 02 01 80 = -128
HUGE_SAN_COUNT = 2000


@dataclass(frozen=True)
class OddCert:
    cert_pem: Path
    key_pem: Path


def _base(key: rsa.RSAPrivateKey, cn: str, serial: int, sans: list[str]) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return builder.sign(key, hashes.SHA256())


def _resign(key: rsa.RSAPrivateKey, cert: x509.Certificate, old: bytes, new: bytes) -> bytes:
    """Replace `old` by `new` (same length) inside the TBS part, sign it again, return the whole DER."""
    assert len(old) == len(new)
    der = cert.public_bytes(serialization.Encoding.DER)
    tbs = cert.tbs_certificate_bytes
    assert tbs.count(old) >= 1, "placeholder not found in the TBS certificate"
    new_tbs = tbs.replace(old, new)
    signature = key.sign(new_tbs, padding.PKCS1v15(), hashes.SHA256())
    assert len(signature) == len(cert.signature)
    return der.replace(tbs, new_tbs).replace(cert.signature, signature)


def _write(directory: Path, name: str, key: rsa.RSAPrivateKey, der: bytes) -> OddCert:
    import base64

    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_text(pem, encoding="ascii")
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return OddCert(cert_path, key_path)


def make_odd_certs(directory: Path, server_name: str) -> dict[str, OddCert]:
    """non_utf8_subject, huge_san and negative_serial, each self-signed for `server_name`."""
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    out: dict[str, OddCert] = {}

    cert = _base(key, _PLACEHOLDER_CN.decode("ascii"), 1001, [server_name])
    # UTF8String (0x0c) → TeletexString (0x14) holding bytes that are not UTF-8: OpenSSL serves it as is.
    old = b"\x0c" + bytes([len(_PLACEHOLDER_CN)]) + _PLACEHOLDER_CN
    new = b"\x14" + bytes([len(NON_UTF8_CN)]) + NON_UTF8_CN
    out["non_utf8_subject"] = _write(directory, "non_utf8_subject", key, _resign(key, cert, old, new))

    sans = [f"n{i}.{server_name}" for i in range(HUGE_SAN_COUNT)] + [server_name]
    out["huge_san"] = _write(
        directory, "huge_san", key, _base(key, server_name, 1002, sans).public_bytes(serialization.Encoding.DER)
    )

    cert = _base(key, server_name, _PLACEHOLDER_SERIAL, [server_name])
    out["negative_serial"] = _write(
        directory, "negative_serial", key, _resign(key, cert, b"\x02\x01\x7f", b"\x02\x01\x80")
    )
    return out

"""The TLS probe: protocols and cipher suites (nmap ssl-enum-ciphers), the certificate chain as served
(one pyOpenSSL handshake per endpoint) and judgement-free facts about that chain.

Order of work in `gather`: first one handshake per target, concurrently (this also tells refused,
tarpitted and non-TLS ports apart quickly); then nmap, grouped so one process covers many endpoints,
only for targets that accepted TCP and did not time out. Facts are derived by pure functions below.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import ipaddress
import re
import select
import socket
import ssl
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto

from scanner.probes.base import (
    FactSpec,
    JSONValue,
    Politeness,
    ProbeContext,
    ProbeError,
    ProbeErrorReason,
    ProbeFacts,
    ProbeOutcome,
    Target,
    is_ip,
)
from scanner.probes.nmap import (
    NMAP_MAX_PROCESSES,
    SCRIPT_TIMEOUT_SHARE,
    NmapArgumentError,
    NmapError,
    NmapPort,
    NseValue,
    parse_nmap_xml,
    run_nmap,
)

NMAP_SCRIPTS = ("ssl-enum-ciphers", "ssl-cert")
NMAP_MAX_HOSTS_PER_RUN = 64
NMAP_BATCHES = 3  # endpoints are handed to nmap in about this many batches as their handshakes complete
NMAP_MIN_BATCH = 16
_NMAP_SLOTS = threading.BoundedSemaphore(NMAP_MAX_PROCESSES)  # across batches and groups
PROTOCOL_ORDER = ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_X509_V_FLAG_NO_CHECK_TIME = 0x200000  # OpenSSL: ignore validity dates while building the chain

FACTS: tuple[FactSpec, ...] = (
    FactSpec("tls.offered", "bool", "The port completed a TLS handshake or nmap found TLS/SSL on it."),
    FactSpec("tls.protocols", "list[str]", "Protocol versions accepted, nmap names: SSLv3, TLSv1.0 … TLSv1.3."),
    FactSpec("tls.ciphers", "list[str]", "All accepted cipher suites over all protocols (nmap's IANA-style names)."),
    FactSpec(
        "tls.cipher_details",
        "list[object]",
        "One {protocol, name, kex_info, strength} per accepted suite and protocol, as nmap reports them.",
    ),
    FactSpec("tls.min_dh_bits", "int", "Smallest finite-field DH group of any accepted DHE suite.", True),
    FactSpec("tls.min_ecdh_bits", "int", "Smallest elliptic curve (bits) of any accepted ECDHE suite.", True),
    FactSpec("tls.nmap_least_strength", "str", "nmap's letter grade: informational only, not a verdict.", True),
    FactSpec("tls.negotiated_protocol", "str", "Protocol our own handshake negotiated (nmap name).", True),
    FactSpec("tls.negotiated_cipher", "str", "Cipher our own handshake negotiated (OpenSSL name).", True),
    FactSpec("tls.chain_served", "int", "Number of certificates the server sent (null: chain not fetched).", True),
    FactSpec("tls.leaf.subject", "str", "Leaf subject, RFC 4514.", True),
    FactSpec("tls.leaf.issuer", "str", "Leaf issuer, RFC 4514.", True),
    FactSpec("tls.leaf.serial", "str", "Leaf serial number, lowercase hex.", True),
    FactSpec("tls.leaf.san_dns", "list[str]", "DNS names in the leaf's subjectAltName."),
    FactSpec("tls.leaf.san_ip", "list[str]", "IP addresses in the leaf's subjectAltName."),
    FactSpec("tls.leaf.not_before", "datetime", "Start of the leaf's validity (UTC).", True),
    FactSpec("tls.leaf.not_after", "datetime", "End of the leaf's validity (UTC).", True),
    FactSpec("tls.leaf.key_type", "str", "Leaf public key type: RSA, EC, DSA, Ed25519, Ed448.", True),
    FactSpec("tls.leaf.key_bits", "int", "Leaf public key size in bits (curve size for EC).", True),
    FactSpec("tls.leaf.signature_hash", "str", "Hash of the leaf's signature: sha256, sha1, md5 … (lowercase).", True),
    FactSpec("tls.leaf.self_signed", "bool", "The leaf is signed by its own key.", True),
    FactSpec("tls.leaf.sha256", "str", "SHA-256 fingerprint of the leaf (lowercase hex).", True),
    FactSpec(
        "tls.chain.trusted",
        "bool",
        "The served chain builds to a trusted root (system store and/or configured bundles); dates ignored.",
        True,
    ),
    FactSpec(
        "tls.chain.complete",
        "bool",
        "The served certificates plus the trusted roots suffice (no intermediate missing).",
        True,
    ),
    FactSpec(
        "tls.chain.error",
        "str",
        "Why the chain is not trusted/complete: self_signed, untrusted_root, incomplete_chain, "
        "no_certificate, invalid_signature or other:<openssl text>; null when trusted and complete.",
        True,
    ),
    FactSpec("tls.hostname", "str", "The name the certificate was checked against (server_name or address)."),
    FactSpec("tls.hostname_matches", "bool", "The leaf matches tls.hostname (RFC 6125).", True),
    FactSpec("tls.detail", "str", "Why our handshake failed or ended early, when it did (evidence).", True),
    FactSpec(
        "tls.withheld",
        "object",
        "Facts deliberately not gathered, each with the reason (e.g. cipher enumeration switched off for fragile "
        "systems): they are null, and every control that judges by one is `error`, never `pass`.",
    ),
)
ENUMERATION_FACTS: tuple[str, ...] = (
    "tls.protocols",
    "tls.ciphers",
    "tls.cipher_details",
    "tls.min_dh_bits",
    "tls.min_ecdh_bits",
    "tls.nmap_least_strength",
)
ENUMERATION_OFF = (
    "cipher enumeration is switched off for fragile systems (politeness.fragile_cipher_enumeration: false); "
    "only one TLS handshake was made"
)


# ---------------------------------------------------------------------------------------------
# the handshake (I/O)


@dataclass(frozen=True)
class Handshake:
    """What one handshake learnt. `completed` is False when the chain was seen but the handshake failed
    later (e.g. the server demanded a client certificate)."""

    protocol: str | None
    cipher: str | None
    chain: tuple[x509.Certificate, ...]
    completed: bool = True
    detail: str | None = None


@dataclass(frozen=True)
class HandshakeFailure:
    kind: Literal["refused", "timeout", "unreachable", "not_tls"]
    detail: str


HandshakeOutcome = Handshake | HandshakeFailure


@functools.cache
def _client_context() -> SSL.Context:
    """Built once per process and shared by every handshake (OpenSSL makes connections from one configured
    context on many threads; nothing here changes it after this)."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    # Assess weak and legacy servers too: every version from TLS 1.0, every suite, no security level.
    ctx.set_min_proto_version(SSL.TLS1_VERSION)
    ctx.set_cipher_list(b"ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    ctx.set_options(SSL.OP_LEGACY_SERVER_CONNECT)
    ctx.set_verify(SSL.VERIFY_NONE)
    return ctx


def _peer_chain(conn: SSL.Connection) -> tuple[x509.Certificate, ...]:
    try:
        chain = conn.get_peer_cert_chain(as_cryptography=True)
    except SSL.Error:
        return ()
    return tuple(chain or ())


def nmap_protocol_name(openssl_name: str | None) -> str | None:
    """OpenSSL's version names → nmap's (TLSv1 → TLSv1.0)."""
    if openssl_name is None or openssl_name == "unknown":
        return None
    return {"TLSv1": "TLSv1.0"}.get(openssl_name, openssl_name)


def tls_handshake(address: str, port: int, server_name: str | None, timeout_s: float) -> HandshakeOutcome:
    """Connect, do one TLS handshake (SNI = server_name unless it is an IP), return what was served."""
    deadline = time.monotonic() + timeout_s
    try:
        sock = socket.create_connection((address, port), timeout=timeout_s)
    except ConnectionRefusedError as exc:
        return HandshakeFailure("refused", f"connection refused: {exc}")
    except TimeoutError:
        return HandshakeFailure("timeout", f"TCP connect timed out after {timeout_s:g}s")
    except OSError as exc:
        if exc.errno in (errno.ECONNRESET,):
            return HandshakeFailure("refused", f"connection reset: {exc}")
        return HandshakeFailure("unreachable", f"{type(exc).__name__}: {exc}")
    try:
        sock.setblocking(False)
        conn = SSL.Connection(_client_context(), sock)
        conn.set_connect_state()
        if server_name and not is_ip(server_name):
            conn.set_tlsext_host_name(_idna(server_name).encode("ascii"))
        while True:
            try:
                conn.do_handshake()
                break
            except (SSL.WantReadError, SSL.WantWriteError) as want:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return HandshakeFailure("timeout", f"no TLS handshake within {timeout_s:g}s")
                if isinstance(want, SSL.WantReadError):
                    select.select([sock], [], [], remaining)
                else:
                    select.select([], [sock], [], remaining)
            except (SSL.Error, OSError) as exc:
                chain = _peer_chain(conn)
                if chain:  # the server sent its certificates, then gave up (e.g. wants a client cert)
                    return Handshake(
                        nmap_protocol_name(conn.get_protocol_version_name()),
                        None,
                        chain,
                        completed=False,
                        detail=f"handshake failed after the certificates: {_ssl_error_text(exc)}",
                    )
                return HandshakeFailure("not_tls", f"TLS handshake failed: {_ssl_error_text(exc)}")
        chain = _peer_chain(conn)
        protocol = nmap_protocol_name(conn.get_protocol_version_name())
        cipher = conn.get_cipher_name()
        with contextlib.suppress(SSL.Error, OSError):
            conn.shutdown()  # polite close_notify; the answer does not matter
        return Handshake(protocol, cipher, chain)
    finally:
        sock.close()


def _ssl_error_text(exc: BaseException) -> str:
    if isinstance(exc, SSL.SysCallError):
        return f"connection closed ({exc.args[1] if len(exc.args) > 1 else exc})"
    text = str(exc)
    return text[:300] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# trust (small I/O: reading PEM files) and chain classification (pure given the anchors)


@dataclass(frozen=True)
class TrustAnchors:
    """The certificates verification may use. `roots` are self-signed; `intermediates` are other CA
    certificates found in the configured bundles (they make a chain trusted but not complete)."""

    roots: tuple[x509.Certificate, ...] = ()
    intermediates: tuple[x509.Certificate, ...] = ()
    system_cafile: str | None = None
    system_capath: str | None = None


def load_trust(use_system_store: bool, ca_bundles: Iterable[Path]) -> TrustAnchors:
    """Read the configured PEM bundles and locate the system store."""
    roots: list[x509.Certificate] = []
    intermediates: list[x509.Certificate] = []
    for bundle in ca_bundles:
        for cert in x509.load_pem_x509_certificates(Path(bundle).read_bytes()):
            (roots if is_self_signed(cert) else intermediates).append(cert)
    cafile = capath = None
    if use_system_store:
        paths = ssl.get_default_verify_paths()
        cafile, capath = paths.cafile, paths.capath
    return TrustAnchors(tuple(roots), tuple(intermediates), cafile, capath)


@functools.lru_cache(maxsize=8)
def _store(trust: TrustAnchors, with_intermediates: bool) -> crypto.X509Store:
    """Built once per trust setting: loading the system bundle costs ~8 ms, far more than a verification."""
    store = crypto.X509Store()
    if trust.system_cafile or trust.system_capath:
        store.load_locations(trust.system_cafile, trust.system_capath)
    for cert in trust.roots + (trust.intermediates if with_intermediates else ()):
        store.add_cert(crypto.X509.from_cryptography(cert))
    store.set_flags(_X509_V_FLAG_NO_CHECK_TIME)
    return store


def _verify(trust: TrustAnchors, chain: Sequence[x509.Certificate], with_intermediates: bool) -> tuple[int, str]:
    """OpenSSL's verdict on the chain: (0, "") when it builds to an anchor, else (code, text)."""
    leaf = crypto.X509.from_cryptography(chain[0])
    rest = [crypto.X509.from_cryptography(c) for c in chain[1:]]
    try:
        crypto.X509StoreContext(_store(trust, with_intermediates), leaf, rest).verify_certificate()
    except crypto.X509StoreContextError as exc:
        code, _depth, text = [*exc.errors, 0, 0, ""][:3]
        return int(code), str(text)
    return 0, ""


# OpenSSL X509_V_ERR_* codes we name.
_SELF_SIGNED = {18}
_UNTRUSTED_ROOT = {19}
_ISSUER_MISSING = {2, 20, 21}
_BAD_SIGNATURE = {4, 6, 7}


@dataclass(frozen=True)
class ChainVerdict:
    trusted: bool | None
    complete: bool | None
    error: str | None


def classify_chain(chain: Sequence[x509.Certificate], trust: TrustAnchors) -> ChainVerdict:
    """Why a served chain is (not) trusted and (not) complete. Dates and key strength are ignored
    here on purpose: they are separate facts and controls."""
    if not chain:
        return ChainVerdict(None, None, "no_certificate")
    code, text = _verify(trust, chain, with_intermediates=False)
    if code == 0:
        return ChainVerdict(True, True, None)
    rebuilt = trust.intermediates and code in _ISSUER_MISSING
    if rebuilt and _verify(trust, chain, with_intermediates=True)[0] == 0:
        return ChainVerdict(True, False, "incomplete_chain")
    if code in _SELF_SIGNED:
        return ChainVerdict(False, True, "self_signed")
    if code in _UNTRUSTED_ROOT:
        return ChainVerdict(False, True, "untrusted_root")
    if code in _ISSUER_MISSING:
        # The issuer of the top served certificate is neither served nor trusted: without it we cannot
        # tell a missing intermediate from an unknown root, so both are reported as incomplete.
        return ChainVerdict(False, False, "incomplete_chain")
    if code in _BAD_SIGNATURE:
        return ChainVerdict(False, None, "invalid_signature")
    return ChainVerdict(False, None, f"other:{text}")


# ---------------------------------------------------------------------------------------------
# certificate facts (pure)


def is_self_signed(cert: x509.Certificate) -> bool:
    """Issuer equals subject and the signature verifies with the certificate's own key."""
    try:
        if cert.issuer != cert.subject:
            return False
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def iso_utc(when: dt.datetime) -> str:
    """ISO-8601 UTC with a Z: 2026-11-22T10:00:00Z."""
    return when.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def key_facts(cert: x509.Certificate) -> tuple[str | None, int | None]:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None, None
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    if isinstance(key, dsa.DSAPublicKey):
        return "DSA", key.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    return type(key).__name__, None


def signature_hash(cert: x509.Certificate) -> str | None:
    try:
        algorithm = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:
        return None
    return algorithm.name.lower() if algorithm is not None else None


def san_names(cert: x509.Certificate) -> tuple[list[str], list[str]] | None:
    """(DNS names, IP addresses) of the subjectAltName, or None when there is no SAN extension."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:  # malformed extension: treat like none, the cert is judged elsewhere
        return None
    return (
        list(san.get_values_for_type(x509.DNSName)),
        [str(ip) for ip in san.get_values_for_type(x509.IPAddress)],
    )


def common_names(cert: x509.Certificate) -> list[str]:
    try:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    except ValueError:  # a subject cryptography cannot decode (e.g. a TeletexString that is not text)
        return []


def _name_text(cert: x509.Certificate, which: Literal["subject", "issuer"]) -> str | None:
    """RFC 4514 text of the subject or issuer; None (unknown) when the name cannot be decoded."""
    try:
        return (cert.subject if which == "subject" else cert.issuer).rfc4514_string()
    except ValueError:
        return None


def leaf_facts(leaf: x509.Certificate | None) -> dict[str, JSONValue]:
    """The `tls.leaf.*` facts (all null/empty without a leaf)."""
    if leaf is None:
        return {
            "tls.leaf.subject": None,
            "tls.leaf.issuer": None,
            "tls.leaf.serial": None,
            "tls.leaf.san_dns": [],
            "tls.leaf.san_ip": [],
            "tls.leaf.not_before": None,
            "tls.leaf.not_after": None,
            "tls.leaf.key_type": None,
            "tls.leaf.key_bits": None,
            "tls.leaf.signature_hash": None,
            "tls.leaf.self_signed": None,
            "tls.leaf.sha256": None,
        }
    san = san_names(leaf) or ([], [])
    key_type, key_bits = key_facts(leaf)
    return {
        "tls.leaf.subject": _name_text(leaf, "subject"),
        "tls.leaf.issuer": _name_text(leaf, "issuer"),
        "tls.leaf.serial": format(leaf.serial_number, "x"),
        "tls.leaf.san_dns": san[0],
        "tls.leaf.san_ip": san[1],
        "tls.leaf.not_before": iso_utc(leaf.not_valid_before_utc),
        "tls.leaf.not_after": iso_utc(leaf.not_valid_after_utc),
        "tls.leaf.key_type": key_type,
        "tls.leaf.key_bits": key_bits,
        "tls.leaf.signature_hash": signature_hash(leaf),
        "tls.leaf.self_signed": is_self_signed(leaf),
        "tls.leaf.sha256": leaf.fingerprint(hashes.SHA256()).hex(),
    }


# ---------------------------------------------------------------------------------------------
# hostname matching, RFC 6125 (pure)


def _idna(name: str) -> str:
    """Lowercase A-label form without a trailing dot; names that cannot be encoded stay lowercase."""
    name = name.strip().rstrip(".").lower()
    labels = []
    for label in name.split("."):
        if label == "*" or label.isascii():
            labels.append(label)
            continue
        try:
            labels.append(label.encode("idna").decode("ascii"))
        except UnicodeError:
            labels.append(label)
    return ".".join(labels)


def dns_name_matches(pattern: str, hostname: str) -> bool:
    """One presented DNS identifier against one reference name. A wildcard is allowed only as the
    whole left-most label, matches exactly one label, and needs at least two labels after it."""
    pattern, hostname = _idna(pattern), _idna(hostname)
    if not pattern or not hostname:
        return False
    if "*" not in pattern:
        return pattern == hostname
    p_labels, h_labels = pattern.split("."), hostname.split(".")
    if p_labels[0] != "*" or any("*" in label for label in p_labels[1:]) or len(p_labels) < 3:
        return False
    if len(h_labels) != len(p_labels) or not h_labels[0]:
        return False
    return h_labels[1:] == p_labels[1:]


def hostname_matches(
    hostname: str, san_dns: Sequence[str], san_ip: Sequence[str], cns: Sequence[str], has_san: bool
) -> bool:
    """RFC 6125: IP references match IP SANs; DNS references match DNS SANs; CN only without SAN."""
    if is_ip(hostname):
        ref = ipaddress.ip_address(hostname)
        candidates = list(san_ip) if has_san else list(cns)
        for value in candidates:
            try:
                if ipaddress.ip_address(value) == ref:
                    return True
            except ValueError:
                continue
        return False
    names = list(san_dns) if has_san else list(cns)
    return any(dns_name_matches(name, hostname) for name in names)


def leaf_matches(leaf: x509.Certificate, hostname: str) -> bool:
    san = san_names(leaf)
    dns, ips = san if san is not None else ([], [])
    return hostname_matches(hostname, dns, ips, common_names(leaf), has_san=san is not None)


# ---------------------------------------------------------------------------------------------
# nmap ssl-enum-ciphers / ssl-cert (pure)


@dataclass(frozen=True)
class CipherDetail:
    protocol: str
    name: str
    kex_info: str | None
    strength: str | None


@dataclass(frozen=True)
class CipherEnumeration:
    protocols: tuple[str, ...]
    ciphers: tuple[CipherDetail, ...]
    least_strength: str | None


_KEX_SIZED = re.compile(r"^(?P<kind>[a-z]+)\s+(?P<bits>\d+)$")
_CURVE_BITS = re.compile(r"(?:sec[pt]|prime|brainpoolp|ffdhe|x|ecdh_x)(?P<bits>\d+)")


def parse_kex_info(kex_info: str | None) -> tuple[str, int] | None:
    """nmap's kex_info → (family, bits): "dh 1024" → ("dh", 1024), "secp256r1" → ("ecdh", 256),
    "ecdh_x25519" → ("ecdh", 256), "ffdhe2048" → ("dh", 2048), "rsa 2048" → ("rsa", 2048)."""
    if not kex_info:
        return None
    text = kex_info.strip().lower()
    sized = _KEX_SIZED.match(text)
    if sized:
        kind = sized["kind"]
        return ("ecdh" if kind in ("ec", "ecdh", "ecdhe") else kind, int(sized["bits"]))
    if text.startswith("ffdhe"):
        match = _CURVE_BITS.search(text)
        return ("dh", int(match["bits"])) if match else None
    if text in ("ecdh_x25519", "x25519"):
        return ("ecdh", 256)
    if text in ("ecdh_x448", "x448"):
        return ("ecdh", 448)
    match = _CURVE_BITS.search(text)
    if match:
        return ("ecdh", int(match["bits"]))
    return None


def parse_ssl_enum_ciphers(data: NseValue) -> CipherEnumeration | None:
    """Protocols and suites from ssl-enum-ciphers' structured output; None if it holds no protocol."""
    if not isinstance(data, dict):
        return None
    protocols: list[str] = []
    details: list[CipherDetail] = []
    for protocol in sorted(
        (k for k in data if k in PROTOCOL_ORDER or re.match(r"^(SSL|TLS)v\d", k)),
        key=lambda k: (PROTOCOL_ORDER.index(k) if k in PROTOCOL_ORDER else len(PROTOCOL_ORDER), k),
    ):
        table = data[protocol]
        if not isinstance(table, dict):
            continue
        protocols.append(protocol)
        ciphers = table.get("ciphers", [])
        for entry in ciphers if isinstance(ciphers, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                kex = entry.get("kex_info")
                strength = entry.get("strength")
                details.append(
                    CipherDetail(
                        protocol=protocol,
                        name=str(entry["name"]),
                        kex_info=kex if isinstance(kex, str) else None,
                        strength=strength if isinstance(strength, str) else None,
                    )
                )
    if not protocols:
        return None
    least = data.get("least strength")
    return CipherEnumeration(tuple(protocols), tuple(details), least if isinstance(least, str) else None)


def cipher_facts(enum: CipherEnumeration | None) -> dict[str, JSONValue]:
    """The protocol/suite facts from nmap's enumeration."""
    if enum is None:
        return {
            "tls.protocols": [],
            "tls.ciphers": [],
            "tls.cipher_details": [],
            "tls.min_dh_bits": None,
            "tls.min_ecdh_bits": None,
            "tls.nmap_least_strength": None,
        }
    dh_bits: list[int] = []
    ec_bits: list[int] = []
    for detail in enum.ciphers:
        parsed = parse_kex_info(detail.kex_info)
        if parsed is None:
            continue
        # kex_info is "dh N" / a curve only for (EC)DH key exchange (ephemeral, anonymous or TLS 1.3).
        if parsed[0] == "dh":
            dh_bits.append(parsed[1])
        elif parsed[0] == "ecdh":
            ec_bits.append(parsed[1])
    return {
        "tls.protocols": list(enum.protocols),
        "tls.ciphers": list(dict.fromkeys(d.name for d in enum.ciphers)),
        "tls.cipher_details": [
            {"protocol": d.protocol, "name": d.name, "kex_info": d.kex_info, "strength": d.strength}
            for d in enum.ciphers
        ],
        "tls.min_dh_bits": min(dh_bits) if dh_bits else None,
        "tls.min_ecdh_bits": min(ec_bits) if ec_bits else None,
        "tls.nmap_least_strength": enum.least_strength,
    }


def leaf_from_ssl_cert(data: NseValue) -> x509.Certificate | None:
    """The leaf nmap's ssl-cert saw (PEM), used when our own handshake could not get a chain."""
    if isinstance(data, dict) and isinstance(data.get("pem"), str):
        try:
            return x509.load_pem_x509_certificate(str(data["pem"]).encode("ascii"))
        except (ValueError, UnicodeError):
            return None
    return None


# ---------------------------------------------------------------------------------------------
# assembling one target's outcome (pure given its inputs)


_CONNECTION_ERRORS = {
    "refused": ProbeErrorReason.REFUSED,
    "timeout": ProbeErrorReason.TIMEOUT,
    "unreachable": ProbeErrorReason.UNREACHABLE,
}


def _connection_error(handshake: HandshakeFailure) -> ProbeError | None:
    """The typed error of a handshake that never reached TLS (refused, timeout, unreachable); None otherwise."""
    reason = _CONNECTION_ERRORS.get(handshake.kind)
    return ProbeError(reason, handshake.detail) if reason is not None else None


def _no_handshake_facts(hostname: str, detail: str) -> dict[str, JSONValue]:
    """What no completed handshake of ours can show: nothing negotiated, no chain, no leaf."""
    return {
        "tls.negotiated_protocol": None,
        "tls.negotiated_cipher": None,
        "tls.chain_served": None,
        **leaf_facts(None),
        "tls.chain.trusted": None,
        "tls.chain.complete": None,
        "tls.chain.error": None,
        "tls.hostname": hostname,
        "tls.hostname_matches": None,
        "tls.detail": detail,
    }


def build_outcome(
    target: Target,
    handshake: HandshakeOutcome,
    nmap_result: NmapPort | NmapError | None,
    trust: TrustAnchors,
    verdict: ChainVerdict | None = None,
) -> ProbeOutcome:
    """Combine the handshake and nmap's view of one endpoint into facts or a typed error."""
    if isinstance(handshake, HandshakeFailure) and (error := _connection_error(handshake)) is not None:
        return error
    if isinstance(nmap_result, NmapError):
        return ProbeError(nmap_result.reason, f"nmap: {nmap_result.detail}")
    if nmap_result is None:
        return ProbeError(ProbeErrorReason.TIMEOUT, "nmap reported nothing for this port (host timeout)")
    enum_data = nmap_result.scripts.get("ssl-enum-ciphers")
    enum = parse_ssl_enum_ciphers(enum_data.data) if enum_data else None
    hostname = target.server_name or target.address

    if isinstance(handshake, HandshakeFailure):  # TCP fine, but our handshake did not work
        if enum is None:
            return ProbeFacts(
                {
                    "tls.offered": False,
                    **cipher_facts(None),
                    **_no_handshake_facts(hostname, handshake.detail),
                    "tls.withheld": {},
                }
            )
        # nmap's own TLS code speaks what OpenSSL no longer does (SSLv3, EXPORT …): keep its view.
        cert_script = nmap_result.scripts.get("ssl-cert")
        leaf = leaf_from_ssl_cert(cert_script.data) if cert_script else None
        return ProbeFacts(
            {
                "tls.offered": True,
                **cipher_facts(enum),
                "tls.negotiated_protocol": None,
                "tls.negotiated_cipher": None,
                "tls.chain_served": None,
                **leaf_facts(leaf),
                "tls.chain.trusted": None,
                "tls.chain.complete": None,
                "tls.chain.error": None if leaf else "no_certificate",
                "tls.hostname": hostname,
                "tls.hostname_matches": leaf_matches(leaf, hostname) if leaf else None,
                "tls.detail": handshake.detail,
                "tls.withheld": {},
            }
        )

    if enum is None:
        return ProbeError(
            ProbeErrorReason.TOOL_FAILED,
            f"handshake succeeded ({handshake.protocol}) but nmap ssl-enum-ciphers found no protocol "
            f"(port state {nmap_result.state})",
        )
    return ProbeFacts({**served_facts(handshake, hostname, trust, verdict), **cipher_facts(enum), "tls.withheld": {}})


def served_facts(
    handshake: Handshake, hostname: str, trust: TrustAnchors, verdict: ChainVerdict | None
) -> dict[str, JSONValue]:
    """What our own successful handshake shows: negotiated protocol and suite, the chain as served, the name."""
    chain = handshake.chain
    leaf = chain[0] if chain else None
    verdict = verdict if verdict is not None else classify_chain(chain, trust)
    return {
        "tls.offered": True,
        "tls.negotiated_protocol": handshake.protocol,
        "tls.negotiated_cipher": handshake.cipher,
        "tls.chain_served": len(chain),
        **leaf_facts(leaf),
        "tls.chain.trusted": verdict.trusted,
        "tls.chain.complete": verdict.complete,
        "tls.chain.error": verdict.error,
        "tls.hostname": hostname,
        "tls.hostname_matches": leaf_matches(leaf, hostname) if leaf else None,
        "tls.detail": handshake.detail,
    }


def handshake_only_outcome(
    target: Target, handshake: HandshakeOutcome, trust: TrustAnchors, verdict: ChainVerdict | None = None
) -> ProbeOutcome:
    """Facts from our one handshake alone (a fragile system with cipher enumeration switched off): the
    enumeration facts are withheld. A failed handshake tells nothing here (nmap, which also speaks SSLv3 and
    other legacy TLS, did not look), so then even tls.offered is withheld."""
    hostname = target.server_name or target.address
    if isinstance(handshake, HandshakeFailure):
        if (error := _connection_error(handshake)) is not None:
            return error
        why = f"our TLS handshake failed ({handshake.detail}) and {ENUMERATION_OFF}"
        return ProbeFacts(
            {
                "tls.offered": None,
                **dict.fromkeys(ENUMERATION_FACTS),
                **_no_handshake_facts(hostname, handshake.detail),
                "tls.withheld": {name: why for name in ("tls.offered", *ENUMERATION_FACTS)},
            }
        )
    return ProbeFacts(
        {
            **served_facts(handshake, hostname, trust, verdict),
            **dict.fromkeys(ENUMERATION_FACTS),
            "tls.withheld": dict.fromkeys(ENUMERATION_FACTS, ENUMERATION_OFF),
        }
    )


# ---------------------------------------------------------------------------------------------
# grouping (pure)


@dataclass(frozen=True)
class NmapGroup:
    """One nmap process: these hosts × these ports, all declared by every host in the group."""

    politeness: Politeness
    hosts: tuple[str, ...]
    ports: tuple[int, ...]
    server_name: str | None = None  # SNI for nmap (only for single-endpoint retry groups)
    systems: int = 1  # how many systems the run covers: --max-parallelism is max_concurrency × systems


def plan_nmap_groups(targets: Iterable[Target], max_hosts: int = NMAP_MAX_HOSTS_PER_RUN) -> list[NmapGroup]:
    """Group by politeness, then merge hosts declaring exactly the same port set (never scan a port a
    host did not declare); IPv4 and IPv6 apart; at most `max_hosts` hosts per process. A system whose
    concurrency cap must hold for itself (fragile, or its own max_concurrency) is never merged with another."""
    # (politeness, the strict system or None, host) → ports, and the systems behind that host
    ports_by_host: dict[tuple[Politeness, str | None, str], set[int]] = defaultdict(set)
    systems_by_host: dict[tuple[Politeness, str | None, str], set[str]] = defaultdict(set)
    for t in targets:
        key = (t.politeness, t.system_id if t.politeness.strict else None, t.address)
        ports_by_host[key].add(t.port)
        systems_by_host[key].add(t.system_id)
    hosts_by_key: dict[tuple[Politeness, str | None, tuple[int, ...], int], list[str]] = defaultdict(list)
    for (politeness, strict_system, host), ports in ports_by_host.items():
        version = ipaddress.ip_address(host).version
        hosts_by_key[(politeness, strict_system, tuple(sorted(ports)), version)].append(host)
    groups: list[NmapGroup] = []
    for (politeness, strict_system, port_tuple, _version), hosts in hosts_by_key.items():
        hosts.sort(key=ipaddress.ip_address)
        for i in range(0, len(hosts), max_hosts):
            chunk = tuple(hosts[i : i + max_hosts])
            systems = set().union(*(systems_by_host[(politeness, strict_system, h)] for h in chunk))
            groups.append(NmapGroup(politeness, chunk, port_tuple, systems=len(systems)))
    return groups


def nmap_timeout_s(politeness: Politeness, n_ports: int) -> float:
    """Time nmap may spend on a host: ssl-enum-ciphers makes dozens of handshakes per port."""
    return max(30.0, politeness.timeout_s * 6) + 2.0 * n_ports


# ---------------------------------------------------------------------------------------------
# the probe


class TlsProbe:
    """Facts about a TLS endpoint: protocols, suites, key exchange, certificate chain and hostname."""

    kind: ClassVar[str] = "tls"
    protocols: ClassVar[frozenset[str]] = frozenset(
        {"https", "tls", "fhir", "dicom-tls", "mllp-tls", "syslog-tls", "ldaps"}
    )
    facts: ClassVar[Sequence[FactSpec]] = FACTS

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        """Handshake every target, run nmap over the live ones in groups, derive facts. Never raises."""
        results: dict[str, ProbeOutcome] = {}
        try:
            self._gather(targets, ctx, results)
        except Exception:  # a bug must not take the run down: every missing target becomes INTERNAL
            detail = traceback.format_exc(limit=8)
            for t in targets:
                results.setdefault(t.key, ProbeError(ProbeErrorReason.INTERNAL, detail))
        for t in targets:
            results.setdefault(t.key, ProbeError(ProbeErrorReason.INTERNAL, "no outcome produced"))
        return results

    def _gather(self, targets: Sequence[Target], ctx: ProbeContext, results: dict[str, ProbeOutcome]) -> None:
        valid: list[Target] = []
        for t in targets:
            if is_ip(t.address) and 1 <= t.port <= 65535:
                valid.append(t)
            else:
                results[t.key] = ProbeError(
                    ProbeErrorReason.INTERNAL, f"target not resolved to an IP:port: {t.address}:{t.port}"
                )
        trust: TrustAnchors | None = None
        trust_error = ""
        try:
            trust = load_trust(ctx.trust.use_system_store, ctx.trust.ca_bundles)
        except (OSError, ValueError) as exc:
            trust_error = f"cannot read trust bundles: {exc}"

        # Pipeline: nmap starts on batches of endpoints whose handshake already reached them, while the
        # remaining handshakes (and tarpits running into their timeout) continue; chains are verified
        # while nmap enumerates ciphers. Dead and silent endpoints never reach nmap.
        # A strict system (fragile, or its own max_concurrency) is handed to nmap only after its last handshake,
        # in one call whose runs go one after another: its cap holds for it alone. A fragile system with cipher
        # enumeration switched off never reaches nmap.
        handshakes: dict[str, HandshakeOutcome] = {}
        nmap_results: dict[tuple[str, int], NmapPort | NmapError] = {}
        batch_size = max(NMAP_MIN_BATCH, -(-len(valid) // NMAP_BATCHES))
        batch: list[Target] = []
        strict_left = Counter(t.system_id for t in valid if t.politeness.strict)
        strict_ready: dict[str, list[Target]] = defaultdict(list)
        futures: list[Future[dict[tuple[str, int], NmapPort | NmapError]]] = []
        with ThreadPoolExecutor(max_workers=NMAP_MAX_PROCESSES) as nmap_pool:

            def submit(todo: list[Target], *, serial: bool) -> None:
                spoke = {(t.address, t.port) for t in todo if isinstance(handshakes[t.key], Handshake)}
                futures.append(nmap_pool.submit(self._nmap, todo, spoke, ctx, serial))

            def flush() -> None:
                if batch:
                    submit(list(batch), serial=False)
                    batch.clear()

            for t, outcome in self._handshakes(valid, ctx):
                handshakes[t.key] = outcome
                if t.politeness.strict:
                    strict_left[t.system_id] -= 1
                    if _reached_tcp(outcome) and t.politeness.cipher_enumeration:
                        strict_ready[t.system_id].append(t)
                    if strict_left[t.system_id] == 0 and strict_ready.get(t.system_id):
                        submit(strict_ready.pop(t.system_id), serial=True)
                    continue
                if _reached_tcp(outcome):
                    batch.append(t)
                    if len(batch) >= batch_size:
                        flush()
            flush()
            verdicts: dict[str, ChainVerdict] = {}
            if trust is not None:
                for t in valid:
                    hs = handshakes[t.key]
                    if isinstance(hs, Handshake):
                        # A failure here is left to build_outcome, which records it as INTERNAL.
                        with contextlib.suppress(Exception):
                            verdicts[t.key] = classify_chain(hs.chain, trust)
            for future in futures:
                nmap_results.update(future.result())
        for t in valid:
            if trust is None and _reached_tcp(handshakes[t.key]):
                results[t.key] = ProbeError(ProbeErrorReason.INTERNAL, trust_error)
                continue
            try:
                if not t.politeness.cipher_enumeration:
                    results[t.key] = handshake_only_outcome(
                        t, handshakes[t.key], trust or TrustAnchors(), verdicts.get(t.key)
                    )
                    continue
                results[t.key] = build_outcome(
                    t,
                    handshakes[t.key],
                    nmap_results.get((t.address, t.port)),
                    trust or TrustAnchors(),
                    verdicts.get(t.key),
                )
            except Exception:
                results[t.key] = ProbeError(ProbeErrorReason.INTERNAL, traceback.format_exc(limit=8))

    @staticmethod
    def _handshakes(targets: Sequence[Target], ctx: ProbeContext) -> Iterator[tuple[Target, HandshakeOutcome]]:
        """One handshake per target, yielded as each completes; at most politeness.max_concurrency at once
        per system."""
        limits: dict[str, threading.BoundedSemaphore] = {}
        for t in targets:
            limits.setdefault(t.system_id, threading.BoundedSemaphore(max(1, t.politeness.max_concurrency)))

        def one(t: Target) -> HandshakeOutcome:
            with limits[t.system_id]:
                try:
                    return tls_handshake(t.address, t.port, t.server_name, t.politeness.timeout_s)
                except Exception as exc:  # an unexpected library error: the port spoke, but not usably
                    return HandshakeFailure("not_tls", f"{type(exc).__name__}: {exc}")

        # Interleave systems so one system's queue does not hold all workers.
        by_system: dict[str, list[Target]] = defaultdict(list)
        for t in targets:
            by_system[t.system_id].append(t)
        order: list[Target] = []
        queues = list(by_system.values())
        while any(queues):
            for queue in queues:
                if queue:
                    order.append(queue.pop(0))
        if not order:
            return
        with ThreadPoolExecutor(max_workers=max(1, min(ctx.max_workers, len(order)))) as pool:
            futures = {pool.submit(one, t): t for t in order}
            for future in as_completed(futures):
                yield futures[future], future.result()

    @staticmethod
    def _nmap(
        targets: Sequence[Target], spoke_tls: set[tuple[str, int]], ctx: ProbeContext, serial: bool = False
    ) -> dict[tuple[str, int], NmapPort | NmapError]:
        """Run the planned nmap groups concurrently (one after another if `serial`: one strict system's runs);
        where our handshake worked but nmap found no TLS (e.g. a server that insists on SNI), retry that
        endpoint alone with SNI."""
        out: dict[tuple[str, int], NmapPort | NmapError] = {}
        # Endpoints whose nmap run reached the script time limit: a retry would only wait as long again
        # (e.g. a certificate with thousands of names makes ssl-enum-ciphers take minutes).
        out_of_time: set[tuple[str, int]] = set()

        def run(group: NmapGroup) -> dict[tuple[str, int], NmapPort | NmapError]:
            args = {"tls.servername": group.server_name} if group.server_name else {}
            timeout_s = nmap_timeout_s(group.politeness, len(group.ports))
            try:
                with _NMAP_SLOTS:
                    nmap_run = run_nmap(
                        group.hosts,
                        group.ports,
                        scripts=NMAP_SCRIPTS,
                        script_args=args,
                        politeness=group.politeness,
                        timeout_s=timeout_s,
                        nmap_path=ctx.nmap_path,
                        systems=group.systems,
                    )
                scan = parse_nmap_xml(nmap_run.xml)
                if nmap_run.elapsed_s >= timeout_s * SCRIPT_TIMEOUT_SHARE:
                    out_of_time.update((h, p) for h in group.hosts for p in group.ports)
            except NmapError as exc:
                return {(h, p): exc for h in group.hosts for p in group.ports}
            except NmapArgumentError as exc:
                error = NmapError(ProbeErrorReason.INTERNAL, str(exc))
                return {(h, p): error for h in group.hosts for p in group.ports}
            found: dict[tuple[str, int], NmapPort | NmapError] = {}
            for h in group.hosts:
                for p in group.ports:
                    port = scan.ports.get((h, p))
                    if port is not None:
                        found[(h, p)] = port
            return found

        def run_all(groups: Sequence[NmapGroup]) -> None:
            if not groups:
                return
            with ThreadPoolExecutor(max_workers=1 if serial else min(NMAP_MAX_PROCESSES, len(groups))) as pool:
                futures: list[Future[dict[tuple[str, int], NmapPort | NmapError]]] = [
                    pool.submit(run, g) for g in groups
                ]
                for future in futures:
                    out.update(future.result())

        run_all(plan_nmap_groups(targets))
        retry = [
            NmapGroup(t.politeness, (t.address,), (t.port,), _idna(t.server_name), systems=1)
            for t in targets
            if t.server_name
            and not is_ip(t.server_name)
            and (t.address, t.port) in spoke_tls
            and (t.address, t.port) not in out_of_time
            and isinstance(out.get((t.address, t.port)), NmapPort)
            and "ssl-enum-ciphers" not in _scripts_of(out[(t.address, t.port)])
        ]
        run_all(retry)
        return out


def _scripts_of(result: NmapPort | NmapError) -> Mapping[str, object]:
    return result.scripts if isinstance(result, NmapPort) else {}


def _reached_tcp(outcome: HandshakeOutcome) -> bool:
    return isinstance(outcome, Handshake) or outcome.kind == "not_tls"

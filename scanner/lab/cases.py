"""The lab's cases as data: what each server does and what hcscan should conclude about it.

Expected statuses are for controls TLS-01..TLS-07 (see controls-catalogue.md):
01 protocol versions, 02 cipher suites / key exchange, 03 chain trust and completeness,
04 validity dates, 05 hostname match, 06 key size and signature, 07 HSTS / redirect to https.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from scanner.lab.certs import CertSpec

ServerKind = Literal["tls", "plain", "tarpit", "refused"]
TlsVersion = Literal["TLSv1", "TLSv1_1", "TLSv1_2", "TLSv1_3"]

LAB_DOMAIN = "lab.hcscan.test"
HSTS_ONE_YEAR = "max-age=31536000"
TLS_CONTROLS = ("TLS-01", "TLS-02", "TLS-03", "TLS-04", "TLS-05", "TLS-06", "TLS-07")
_STATUS = {"P": "pass", "F": "fail", "E": "error"}


def _expect(letters: str) -> Mapping[str, str]:
    """'PPFPPPP' -> {"TLS-01": "pass", ...}; for http cases a single letter means TLS-07 only."""
    if len(letters) == 1:
        return MappingProxyType({"TLS-07": _STATUS[letters]})
    assert len(letters) == len(TLS_CONTROLS)
    return MappingProxyType({c: _STATUS[s] for c, s in zip(TLS_CONTROLS, letters, strict=True)})


@dataclass(frozen=True)
class Case:
    name: str
    protocol: Literal["https", "http"]
    kind: ServerKind
    description: str
    expect: Mapping[str, str]
    cert: CertSpec = field(default_factory=CertSpec)
    min_version: TlsVersion = "TLSv1_2"
    max_version: TlsVersion = "TLSv1_3"
    ciphers: str = "ECDHE+AESGCM"  # OpenSSL cipher string for TLS <= 1.2 (TLS 1.3 suites stay default)
    dh_bits: int | None = None  # load fixed DH parameters of this size (1024 or 2048: enables DHE / ADH)
    headers: tuple[tuple[str, str], ...] = (("Strict-Transport-Security", HSTS_ONE_YEAR),)
    status: int = 200
    location: str | None = None  # Location header (for redirects)
    # A real product's Server header, so nmap -sV identifies it at once (an unknown server makes nmap try
    # every probe, each with its own wait) and the patching controls have something real to judge.
    server: str = "nginx/1.28.2"

    @property
    def server_name(self) -> str:
        return f"{self.name.replace('_', '-')}.{LAB_DOMAIN}"


def _https(name: str, letters: str, description: str, **kw: Any) -> Case:
    return Case(name=name, protocol="https", kind="tls", description=description, expect=_expect(letters), **kw)


CASES: tuple[Case, ...] = (
    _https("good", "PPPPPPP", "RSA-2048 leaf from the intermediate, full chain, TLS 1.2+1.3, ECDHE-AESGCM, HSTS 1y"),
    _https("good_ec", "PPPPPPP", "EC P-256 leaf, otherwise as good", cert=CertSpec(key="ec256")),
    _https(
        "legacy_protocols",
        "FPPPPPP",
        "TLS 1.0, 1.1 and 1.2 enabled (ECDHE-RSA-AES128-SHA etc.)",
        min_version="TLSv1",
        max_version="TLSv1_2",
        ciphers="ECDHE+AESGCM:ECDHE+AES:@SECLEVEL=0",
        server="Apache/2.2.15 (CentOS)",
    ),
    _https(
        "tls10_only",
        "FPPPPPP",
        "only TLS 1.0",
        min_version="TLSv1",
        max_version="TLSv1",
        ciphers="ECDHE+AES:@SECLEVEL=0",
        server="Microsoft-IIS/7.5",
    ),
    _https(
        "weak_ciphers",
        "PFPPPPP",
        "TLS 1.2 offering NULL-SHA256 and anonymous (ADH/AECDH, DH 2048) suites besides ECDHE-AESGCM",
        max_version="TLSv1_2",
        ciphers="ECDHE+AESGCM:NULL-SHA256:ADH-AES128-GCM-SHA256:AECDH-AES128-SHA:@SECLEVEL=0",
        dh_bits=2048,
    ),
    _https(
        "dh1024",
        "PFPPPPP",
        "DHE-RSA with 1024-bit DH parameters, no ECDHE, TLS 1.2 only",
        max_version="TLSv1_2",
        ciphers="DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-SHA256:@SECLEVEL=0",
        dh_bits=1024,
    ),
    _https(
        "expired",
        "PPPFPPP",
        "leaf expired 30 days ago",
        cert=CertSpec(not_before_days=-400, not_after_days=-30),
    ),
    _https(
        "not_yet_valid",
        "PPPFPPP",
        "leaf valid only from 30 days from now",
        cert=CertSpec(not_before_days=30, not_after_days=400),
    ),
    _https(
        "expiring_soon",
        "PPPFPPP",
        "leaf expires in 10 days",
        cert=CertSpec(not_before_days=-355, not_after_days=10),
    ),
    _https("self_signed", "PPFPPPP", "self-signed leaf with the right SAN", cert=CertSpec(issuer="self")),
    _https(
        "untrusted_root",
        "PPFPPPP",
        "leaf issued by a rogue root that is not in the lab CA bundle (leaf + rogue root served)",
        cert=CertSpec(issuer="rogue"),
    ),
    _https(
        "incomplete_chain",
        "PPFPPPP",
        "leaf issued by the intermediate, but the intermediate is not served",
        cert=CertSpec(chain="leaf_only"),
    ),
    _https(
        "wrong_hostname",
        "PPPPFPP",
        f"certificate is for other.{LAB_DOMAIN}",
        cert=CertSpec(san=f"other.{LAB_DOMAIN}"),
    ),
    _https(
        "weak_key",
        "PPPPPFP",
        "RSA-1024 leaf (server at SECLEVEL=0)",
        cert=CertSpec(key="rsa1024"),
        ciphers="ECDHE+AESGCM:@SECLEVEL=0",
    ),
    _https(
        "sha1_signature",
        "PPPPPFP",
        "leaf signed with SHA-1 by the intermediate",
        cert=CertSpec(signature_hash="sha1"),
        ciphers="ECDHE+AESGCM:@SECLEVEL=0",
    ),
    _https("no_hsts", "PPPPPPF", "no Strict-Transport-Security header", headers=(), server="nginx/1.18.0"),
    _https(
        "short_hsts",
        "PPPPPPF",
        "HSTS max-age=86400",
        headers=(("Strict-Transport-Security", "max-age=86400"),),
    ),
    Case(
        name="plaintext",
        protocol="https",
        kind="plain",
        description="plain HTTP server although declared https",
        expect=_expect("FFFFFFE"),
    ),
    Case(
        name="tarpit",
        protocol="https",
        kind="tarpit",
        description="accepts TCP connections and never sends a byte",
        expect=_expect("EEEEEEE"),
    ),
    Case(
        name="refused",
        protocol="https",
        kind="refused",
        description="nothing listens on this port",
        expect=_expect("EEEEEEE"),
    ),
    Case(
        name="http_redirect",
        protocol="http",
        kind="plain",
        description="plain HTTP answering 301 to https://",
        expect=_expect("P"),
        headers=(),
        status=301,
        location=f"https://http-redirect.{LAB_DOMAIN}/",
    ),
    Case(
        name="http_no_redirect",
        protocol="http",
        kind="plain",
        description="plain HTTP answering 200 without a redirect",
        expect=_expect("F"),
        headers=(),
    ),
)


@dataclass(frozen=True)
class LabEndpoint:
    """One running lab server, as tests, the benchmark and the demo inventory see it."""

    name: str  # case name, e.g. "expired"; replicas of the good case are "good-0", "good-1", ...
    address: str  # "127.0.0.1" (ephemeral layout) or "127.0.10.N" (demo layout)
    port: int
    protocol: str  # "https" or "http"
    server_name: str | None  # SNI and the hostname to verify the certificate against
    expect: Mapping[str, str]  # control id -> expected status "pass" | "fail" | "error"
    description: str


CASES_BY_NAME: Mapping[str, Case] = MappingProxyType({c.name: c for c in CASES})

DEMO_HTTPS_PORT = 8443
DEMO_HTTP_PORT = 8080


def demo_address(index: int) -> str:
    """Case `index` (0-based, order of CASES) lives on 127.0.10.(index+1) in the demo layout."""
    return f"127.0.10.{index + 1}"


def demo_replica_address(index: int) -> tuple[str, int]:
    """Replica `index` of the good case in the demo layout: 127.0.11.x, 254 per port from 8443 up."""
    return f"127.0.11.{index % 254 + 1}", DEMO_HTTPS_PORT + index // 254


DEMO_LAYOUT: dict[str, tuple[str, int]] = {
    case.name: (demo_address(i), DEMO_HTTPS_PORT if case.protocol == "https" else DEMO_HTTP_PORT)
    for i, case in enumerate(CASES)
}

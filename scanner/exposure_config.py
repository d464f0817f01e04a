"""The `exposure:` section of config.yaml: the port sweep of declared hosts and the version data to judge by."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from scanner.strictmodel import StrictModel

# Usual admin, file-sharing, database, remote-desktop and health-protocol ports (DICOM 104/2762/11112, MLLP 2575).
DEFAULT_SWEEP_PORTS: tuple[int, ...] = (
    21, 22, 23, 25, 80, 104, 111, 135, 139, 443, 445, 1433, 1521, 2575, 2762, 3306, 3389,
    5432, 5900, 5985, 5986, 6514, 8080, 8443, 11112,
)  # fmt: skip


class _Strict(StrictModel):
    """Unknown keys are errors, values are immutable, numbers are numbers."""


def _https_url(value: str) -> str:
    """An https:// URL with a host and no credentials, query or fragment (a base the update appends to)."""
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise ValueError("not a valid URL (check the host and port)") from None
    if parts.scheme != "https":
        raise ValueError("must start with https:// (the update reads over verified TLS only)")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("no credentials in the URL (it is printed in messages)")
    if parts.query or parts.fragment:
        raise ValueError("no query or fragment: give the base URL the update appends to")
    return value


class VersionDataUpdateConfig(_Strict):
    """Where `hcscan data update` reads public version knowledge; point these at a mirror if the site has one."""

    endoflife_url: str = Field(
        "https://endoflife.date/api/v1/products/",
        description="endoflife.date API v1 products URL; the product slug is appended.",
    )
    kev_url: str = Field(
        "https://www.cisa.gov/sites/default/files/feeds/known_exploited_vulnerabilities.json",
        description="CISA Known Exploited Vulnerabilities catalogue (JSON).",
    )
    nvd_url: str = Field(
        "https://services.nvd.nist.gov/rest/json/cves/2.0",
        description="NVD CVE API 2.0; `?cveId=CVE-…` is appended, one request per KEV CVE of a known product.",
    )
    ca_bundle: Path | None = Field(
        None, description="PEM file of the roots trusted for these servers (default: the public roots of certifi)."
    )
    timeout_s: float = Field(
        60.0, gt=0, le=600, description="Per request: connecting, each read and the whole answer must finish in it."
    )
    nvd_api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Environment variable holding an NVD API key (sent as the apiKey header, never printed).",
    )
    nvd_requests_per_30s: int | None = Field(
        None,
        ge=1,
        le=50,
        description="NVD requests in any 30 s (default: 5 without an API key, 50 with one: NVD's published limits).",
    )
    min_kev_entries: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="A KEV catalogue with fewer entries is refused as broken (the real one has well over 1,000).",
    )

    _urls = field_validator("endoflife_url", "kev_url", "nvd_url")(_https_url)


class VersionDataConfig(_Strict):
    path: Path | None = Field(
        None,
        description="Version-data file written by `hcscan data import`; default: the data shipped with hcscan.",
    )
    max_age_days: int = Field(120, ge=1, le=3650, description="Older version data raises its own finding (PAT-06).")
    update: VersionDataUpdateConfig = Field(
        default_factory=VersionDataUpdateConfig, description="Sources of `hcscan data update`."
    )


class ExposureConfig(_Strict):
    sweep_ports: list[int] = Field(
        default_factory=lambda: list(DEFAULT_SWEEP_PORTS),
        description="Ports swept on every declared host (never on fragile systems) to find undeclared services.",
    )
    version_intensity: int = Field(7, ge=0, le=9, description="nmap --version-intensity for the service probe.")
    version_data: VersionDataConfig = Field(default_factory=VersionDataConfig)

    @field_validator("sweep_ports")
    @classmethod
    def _ports(cls, value: list[int]) -> list[int]:
        bad = [p for p in value if not 1 <= p <= 65535]
        if bad:
            raise ValueError(f"not TCP port numbers: {bad}")
        return sorted(set(value))

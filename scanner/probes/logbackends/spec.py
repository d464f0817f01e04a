"""What the inventory declares about a system's audit log: which backend holds it and how it is shipped.

The models live beside the backends that read them; `scanner.inventory` puts them on `System.audit_log`.
No secret is ever part of a spec: a token is named by the environment variable that holds it.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import PurePosixPath
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, TypeAdapter, field_validator, model_validator

from scanner.config import Strict

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
EnvName = Annotated[str, Field(pattern=ENV_NAME, description="Name of an environment variable (never the secret).")]
_EVENTS_PATH = re.compile(r"^([^.*]+|\*)(\.([^.*]+|\*))*$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?$")

ShippingTransport = Literal["syslog-tls", "syslog-tcp", "syslog-udp", "relp-tls", "relp", "https", "http"]
ENCRYPTED_TRANSPORTS = frozenset({"syslog-tls", "relp-tls", "https"})


def check_host(value: str) -> str:
    """An IP address or a hostname; never a range, a URL or anything that could be read as an option."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOSTNAME.match(value):
        raise ValueError(f"'{value}' is neither an IP address nor a valid hostname")
    return value.lower().rstrip(".")


def check_url(value: str) -> str:
    """An absolute http(s) URL with a host, without credentials (those come from an environment variable)."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError("the URL must start with https:// (or http://)")
    if parts.username is not None or parts.password is not None:
        raise ValueError("no credentials in URLs: name the environment variable that holds the token in token_env")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    check_host(parts.hostname)
    try:
        _ = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in URL: {exc}") from None
    return value


def url_host(url: str) -> str:
    host = urlsplit(url).hostname
    assert host is not None  # check_url guarantees a host
    return host


class ShippingSpec(Strict):
    """How the system ships its log to the collector (judged by LOG-04; the TLS port is verified)."""

    transport: ShippingTransport
    host: str = Field(description="The collector's IP address or host name (must be inside the allowed networks).")
    port: int = Field(ge=1, le=65535)
    server_name: str | None = Field(None, description="Name the collector's certificate must carry (default: host).")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value)


class SyslogFieldNames(Strict):
    """Keys looked up in RFC 5424 structured data, `key=value` pairs or a JSON message (first found wins)."""

    user: list[str] = Field(default_factory=lambda: ["user", "userid", "user_id", "suser"])
    subject: list[str] = Field(default_factory=lambda: ["patient", "patient_id", "subject", "cpr"])
    action: list[str] = Field(default_factory=lambda: ["action", "act", "operation"])


class _BackendBase(Strict):
    shipping: ShippingSpec | None = None
    sample_size: int = Field(20, ge=1, le=500, description="How many recent events LOG-03 checks.")


class SyslogFilesSpec(_BackendBase):
    """A central rsyslog/syslog-ng collector's per-host file, read from the scan machine (e.g. a mount)."""

    backend: Literal["syslog-files"]
    path: str = Field(description="Absolute path of the system's current per-host log file.")
    archives: str | None = Field(
        None,
        description="Absolute glob of further rotated files (plain, .gz, .bz2 or .xz). The files logrotate leaves "
        "beside `path` (.1, .2.gz, -20261201, -20261201.gz) are read without it.",
    )
    max_scan_bytes: int = Field(
        4 * 1024 * 1024, ge=4096, le=256 * 1024 * 1024, description="Most bytes read from either end of a file."
    )
    max_archive_bytes: int = Field(
        256 * 1024 * 1024,
        ge=64 * 1024,
        le=4 * 1024 * 1024 * 1024,
        description="Most bytes decompressed from (and read of) one compressed archive whose newest events are "
        "needed; a larger one (or a gzip bomb) is read only that far.",
    )
    fields: SyslogFieldNames = Field(default_factory=SyslogFieldNames)

    @field_validator("path", "archives")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not PurePosixPath(value).is_absolute():
            raise ValueError("must be an absolute path (the scan may run from any directory)")
        return value


class _HttpBackend(_BackendBase):
    token_env: EnvName | None = Field(
        None, description="Environment variable holding the API token (only with https:// and verify_tls: true)."
    )
    verify_tls: bool = Field(True, description="Verify the backend's certificate against the configured trust.")

    url_field: ClassVar[str]  # the field holding the API's URL, named by each backend

    @model_validator(mode="after")
    def _token_only_over_verified_tls(self) -> _HttpBackend:
        """A token sent in the clear, or to a server nobody verified, is a token given away."""
        if self.token_env is None:
            return self
        if urlsplit(str(getattr(self, self.url_field))).scheme != "https":
            raise ValueError(
                "token_env with an http:// URL would send the token in the clear: use https:// (or drop token_env)"
            )
        if not self.verify_tls:
            raise ValueError(
                "token_env with verify_tls: false would hand the token to any server that answers: add the "
                "backend's CA to tls.ca_bundles and keep verify_tls: true (or drop token_env)"
            )
        return self


class FhirAuditEventSpec(_HttpBackend):
    """A FHIR server's AuditEvent search (IHE BALP): newest first for freshness and the sample, oldest first for retention."""

    backend: Literal["fhir-auditevent"]
    url_field: ClassVar[str] = "base_url"
    base_url: str = Field(description="FHIR base URL, e.g. https://audit.region.example/fhir")
    search: dict[str, str] = Field(
        default_factory=dict, description="Extra search parameters that narrow to this system, e.g. {source: epj}."
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value).rstrip("/")


class JsonFieldPaths(Strict):
    """Dotted paths inside one event (list indexes as numbers): time is required, the rest feed LOG-03."""

    time: str = Field(min_length=1)
    user: str | None = None
    subject: str | None = None
    action: str | None = None


class HttpJsonSpec(_HttpBackend):
    """Any HTTP API that answers JSON (Elasticsearch/OpenSearch _search, Loki-style gateways, SIEM APIs)."""

    backend: Literal["http-json"]
    url_field: ClassVar[str] = "url"
    url: str
    method: Literal["GET", "POST"] = "GET"
    latest_query: dict[str, Any] = Field(
        default_factory=dict, description="Query parameters (GET) or JSON body (POST) returning the newest events."
    )
    oldest_query: dict[str, Any] | None = Field(
        None, description="Query returning the oldest retained event(s); without it retention is unknown."
    )
    events_path: str = Field(
        "",
        description="Dotted path to the list of events in the answer ('' = the answer); '*' gathers the lists "
        "under every element, e.g. data.result.*.values for Loki's streams.",
    )
    fields: JsonFieldPaths
    auth_scheme: str = Field("Bearer", pattern=r"^[A-Za-z][A-Za-z0-9-]{0,31}$")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("events_path")
    @classmethod
    def _events_path(cls, value: str) -> str:
        if value and not _EVENTS_PATH.match(value):
            raise ValueError(
                f"'{value}' is not a dotted path: use keys, list indexes and '*' separated by dots, "
                "e.g. hits.hits or data.result.*.values"
            )
        return value


AuditLogSpec = Annotated[SyslogFilesSpec | FhirAuditEventSpec | HttpJsonSpec, Field(discriminator="backend")]
AUDIT_LOG_ADAPTER: TypeAdapter[SyslogFilesSpec | FhirAuditEventSpec | HttpJsonSpec] = TypeAdapter(AuditLogSpec)


def network_hosts(spec: SyslogFilesSpec | FhirAuditEventSpec | HttpJsonSpec) -> list[tuple[str, str]]:
    """(what, host) for every host this spec makes hcscan connect to: the scope check covers each."""
    hosts: list[tuple[str, str]] = []
    if isinstance(spec, FhirAuditEventSpec):
        hosts.append(("audit_log.base_url", url_host(spec.base_url)))
    elif isinstance(spec, HttpJsonSpec):
        hosts.append(("audit_log.url", url_host(spec.url)))
    if spec.shipping is not None:
        hosts.append(("audit_log.shipping.host", spec.shipping.host))
    return hosts

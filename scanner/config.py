"""config.yaml: where the inventory and controls are, what may be scanned, how politely, where results go."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, field_validator

from scanner.agent_config import AgentConfig, ScheduleConfig, schedule_problems
from scanner.errors import InputError
from scanner.exposure_config import ExposureConfig
from scanner.fileio import parse_file_mode
from scanner.redact import mask_url
from scanner.strictmodel import StrictModel
from scanner.yamlio import load_yaml, validate_model

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Strict(StrictModel):
    """Base for every user-written model: unknown keys are errors, values are immutable, numbers are numbers."""


class ScopeConfig(Strict):
    allowed_networks: list[IPNetwork] = Field(
        default_factory=list,
        description="Networks hcscan may connect to. A declared target outside them is refused (exit 2).",
    )

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [ipaddress.ip_network(str(v), strict=True) for v in value]
        return value


class TrustConfig(Strict):
    use_system_store: bool = Field(True, description="Trust the operating system's root certificates.")
    ca_bundles: list[Path] = Field(
        default_factory=list, description="Extra PEM files of trusted roots (the region's internal CAs)."
    )


class PolitenessConfig(Strict):
    timing: int = Field(3, ge=0, le=5, description="nmap timing template for ordinary systems (T0..T5).")
    max_concurrency: int = Field(4, ge=1, le=64, description="Simultaneous connections to one system.")
    timeout_s: float = Field(10.0, gt=0, le=300, description="Per-connection timeout in seconds.")
    fragile_timing: int = Field(2, ge=0, le=5, description="nmap timing template for `fragile: true` systems.")
    fragile_max_concurrency: int = Field(1, ge=1, le=8, description="Connections at once to a fragile system.")
    fragile_cipher_enumeration: bool = Field(
        True,
        description="Run nmap ssl-enum-ciphers (serially, at fragile timing) on fragile systems' TLS endpoints. It "
        "opens one TCP connection per handshake it tries (docs/controls.md gives the count); when false a fragile "
        "endpoint gets only hcscan's single handshake, and TLS-01/TLS-02 are `error` (cipher enumeration off).",
    )


class ReportConfig(Strict):
    out_dir: Path = Field(Path("out/reports"), description="Where `hcscan report` writes HTML.")
    language: Literal["en", "da"] = Field("en", description="Labels of the HTML reports: en (English) or da (dansk).")
    sla_days: dict[str, int] = Field(
        default_factory=lambda: {"critical": 7, "high": 30, "medium": 90, "low": 180},
        description="Remediation deadline in days by control severity, counted from first seen; overdue leads.",
    )
    file_mode: str = Field(
        "0600",
        description='Mode of the report and export files hcscan writes, in quotes: "0600" (owner only, the default), '
        '"0640" (also the group, e.g. a web server\'s) or "0644". The owner always reads and writes; nobody else may '
        "write; never executable.",
    )

    @field_validator("file_mode", mode="before")
    @classmethod
    def _file_mode(cls, value: object) -> str:
        if not isinstance(value, str):
            raise ValueError('write the mode in quotes, e.g. "0640" (unquoted YAML reads it as a number)')
        parse_file_mode(value)
        return value

    @property
    def file_mode_bits(self) -> int:
        return parse_file_mode(self.file_mode)

    @field_validator("sla_days")
    @classmethod
    def _sla(cls, value: dict[str, int]) -> dict[str, int]:
        for level, days in value.items():
            if level not in ("critical", "high", "medium", "low"):
                raise ValueError(f"sla_days: unknown severity '{level}' (critical, high, medium, low)")
            if not 0 < days <= 3650:
                raise ValueError(f"sla_days.{level}: {days} is not a number of days in 1..3650")
        return value


class SmtpConfig(Strict):
    host: str = Field(description="SMTP server, e.g. smtp.region.example")
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = Field(
        False, description="Upgrade with STARTTLS before sending; the certificate and host name are verified."
    )
    implicit_tls: bool = Field(
        False, description="Speak TLS from the first byte (SMTPS, usually port 465) instead of STARTTLS; verified."
    )
    username_env: str | None = Field(None, description="Environment variable holding the SMTP user name.")
    password_env: str | None = Field(None, description="Environment variable holding the SMTP password.")
    allow_plaintext_login: bool = Field(
        False,
        description="DANGEROUS: log in without TLS (the password crosses the network readable by anyone on the "
        "path). Only for a relay on the same host. Without it, credentials with neither starttls nor implicit_tls "
        "are refused (exit 2).",
    )
    sender: str = Field("hcscan@localhost", description="From address.")
    to: list[str] = Field(min_length=1, description="Recipients.")


def _check_http_url(value: str, what: str) -> str:
    """An absolute http(s) URL with a host; the URL itself is never echoed (it may hold a secret)."""
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise ValueError(f"{what} is not a valid URL (check the host and port)") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{what} must start with https:// (or http://)")
    if not parts.hostname:
        raise ValueError(f"{what} has no host")
    return value


def _webhook_url(value: str) -> str:
    _check_http_url(value, "the webhook URL")
    parts = urlsplit(value)
    if parts.scheme != "https" and (parts.username is not None or parts.password is not None):
        raise ValueError("credentials in an http:// webhook URL would cross the network in clear: use https://")
    return value


WebhookUrl = Annotated[str, AfterValidator(_webhook_url)]


class NotificationsConfig(Strict):
    """Notices after each scan: regressions, new critical findings, SLA breaches, waivers about to expire.

    Each notice is sent once (remembered in the store), not on every run. Secrets go only where configured."""

    webhooks: list[WebhookUrl] = Field(
        default_factory=list, description="URLs that receive a JSON POST per batch of notices (never redirected)."
    )
    smtp: SmtpConfig | None = Field(None, description="E-mail the same notices through this SMTP server.")
    waiver_expiry_days: int = Field(30, ge=1, le=366, description="Warn when an active waiver expires within N days.")
    timeout_s: float = Field(10.0, gt=0, le=120, description="Per-delivery timeout.")
    secret_header_env: str | None = Field(
        None,
        description="Environment variable whose value is sent as the X-Hcscan-Token header to webhooks; every "
        "webhook must then be https://.",
    )
    proxy: str | None = Field(
        None,
        description="HTTP(S) proxy for webhooks, e.g. https://proxy.region.example:3128. Without it no proxy is "
        "used (HTTP_PROXY / HTTPS_PROXY in the environment are ignored).",
    )
    ca_bundle: Path | None = Field(
        None,
        description="PEM file of the roots trusted for webhook and SMTP servers, instead of the public ones.",
    )

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _check_http_url(value, "the proxy URL")
        parts = urlsplit(value)
        if parts.username is not None or parts.password is not None:
            raise ValueError("no credentials in the proxy URL (they would be printed and stored in config files)")
        return value


def notification_problems(cfg: NotificationsConfig) -> list[tuple[tuple[str | int, ...], str, str]]:
    """What in `notifications` would send a secret where it could be read: (path, message, hint) for each.

    Checked when config.yaml is loaded (exit 2) and again before sending (a refused channel sends nothing)."""
    found: list[tuple[tuple[str | int, ...], str, str]] = []
    if cfg.secret_header_env:
        for i, url in enumerate(cfg.webhooks):
            if urlsplit(url).scheme != "https":
                found.append(
                    (
                        ("notifications", "webhooks", i),
                        f"webhook {mask_url(url)} is http:// but secret_header_env sends a token with every POST: "
                        "it would cross the network in clear",
                        "use an https:// URL for this webhook (or remove secret_header_env)",
                    )
                )
    smtp = cfg.smtp
    if smtp is not None:
        if smtp.starttls and smtp.implicit_tls:
            found.append(
                (
                    ("notifications", "smtp", "implicit_tls"),
                    "smtp: starttls and implicit_tls exclude each other",
                    "implicit_tls: true for SMTPS (port 465), starttls: true for submission (port 587)",
                )
            )
        if (smtp.username_env is None) != (smtp.password_env is None):
            found.append(
                (
                    ("notifications", "smtp"),
                    "smtp: username_env and password_env go together",
                    "set both (or neither, for a relay that needs no login)",
                )
            )
        credentials = smtp.username_env is not None or smtp.password_env is not None
        if credentials and not (smtp.starttls or smtp.implicit_tls) and not smtp.allow_plaintext_login:
            found.append(
                (
                    ("notifications", "smtp", "starttls"),
                    "smtp: a login is configured (username_env/password_env) but the connection is not encrypted: "
                    "the password would cross the network in clear",
                    "set starttls: true (or implicit_tls: true for port 465); allow_plaintext_login: true only for "
                    "a relay on the same host",
                )
            )
    return found


class AvailabilityConfig(Strict):
    """Availability sampling (`hcscan sample`) and the SLA window and targets controls judge (AVL-01..03)."""

    interval_s: int = Field(60, ge=10, le=3600, description="Seconds between sampling rounds (the agent's schedule).")
    timeout_s: float = Field(5.0, gt=0, le=60, description="Per-attempt timeout of a sample.")
    retry_delay_s: float = Field(1.0, ge=0, le=30, description="Pause before the retry that confirms a down.")
    max_concurrency: int = Field(200, ge=1, le=2000, description="Connections open at once during a round.")
    window: str = Field(
        "30d", pattern=r"^[1-9][0-9]{0,4}[mhd]$", description="Window AVL controls judge, e.g. 30d, 24h, 90m."
    )
    sla_targets: dict[str, float] = Field(
        default_factory=lambda: {"critical": 99.9, "high": 99.5, "medium": 99.0, "low": 99.0},
        description="SLA target (percent) by criticality; a system's availability.sla_percent overrides it.",
    )

    @field_validator("sla_targets")
    @classmethod
    def _targets(cls, value: dict[str, float]) -> dict[str, float]:
        for level, pct in value.items():
            if level not in ("critical", "high", "medium", "low"):
                raise ValueError(f"sla_targets: unknown criticality '{level}' (critical, high, medium, low)")
            if not 0 < pct <= 100:
                raise ValueError(f"sla_targets.{level}: {pct} is not a percentage in (0, 100]")
        return value


class Config(Strict):
    """The whole of config.yaml. Relative paths are relative to the config file's folder."""

    store_url: str = Field("sqlite:///hcscan.db", description="SQLAlchemy URL of the findings store.")
    inventory: list[Path] = Field(default_factory=lambda: [Path("inventory")])
    controls: list[str] = Field(
        default_factory=lambda: ["builtin"],
        description="Control files or folders; `builtin` is the catalogue shipped with hcscan.",
    )
    waivers: list[Path] = Field(default_factory=list)
    scope: ScopeConfig = Field(default_factory=ScopeConfig)
    tls: TrustConfig = Field(default_factory=TrustConfig)
    politeness: PolitenessConfig = Field(default_factory=PolitenessConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    control_params: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per-control parameter overrides, e.g. {TLS-04: {min_days: 45}}."
    )
    max_workers: int = Field(32, ge=1, le=512, description="Threads for per-endpoint probe work.")
    exposure: ExposureConfig = Field(
        default_factory=ExposureConfig, description="Port sweep and version data of the service probe (PAT, EXP)."
    )
    agent: AgentConfig = Field(default_factory=AgentConfig, description="The scheduled agent (`hcscan agent`).")
    schedules: list[ScheduleConfig] = Field(default_factory=list, description="Jobs `hcscan agent` runs (cron).")
    availability: AvailabilityConfig = Field(default_factory=AvailabilityConfig, description="Sampling and SLA.")
    notifications: NotificationsConfig = Field(
        default_factory=NotificationsConfig, description="Webhook / e-mail notices after scans (sent once each)."
    )

    # Set by the loader, not by the user.
    base_dir: Path = Field(Path("."), exclude=True)
    source: Path | None = Field(None, exclude=True)

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.base_dir / path)

    def resolved_store_url(self) -> str:
        """SQLite paths in the URL are relative to the config file's folder, like every other path."""
        prefix = "sqlite:///"
        if self.store_url.startswith(prefix) and not self.store_url.startswith(prefix + "/"):
            rest = self.store_url[len(prefix) :]
            if rest and rest != ":memory:":
                return prefix + str(self.resolve(Path(rest)))
        return self.store_url


DEFAULT_CONFIG_NAMES = ("config.yaml", "hcscan.yaml")


def find_config(explicit: Path | None) -> Path:
    """The config file to use: --config, then $HCSCAN_CONFIG, then ./config.yaml."""
    if explicit is not None:
        return explicit
    env = os.environ.get("HCSCAN_CONFIG")
    if env:
        return Path(env)
    for name in DEFAULT_CONFIG_NAMES:
        if Path(name).is_file():
            return Path(name)
    raise InputError.single(
        "no config file found (looked for --config, $HCSCAN_CONFIG, ./config.yaml)",
        hint="copy config.example.yaml to config.yaml and edit it, or pass --config FILE",
    )


def load_config(path: Path) -> Config:
    """Load and validate config.yaml; raises InputError naming file:line on any problem."""
    loaded = load_yaml(path)
    data = loaded.data if loaded.data is not None else {}
    if not isinstance(data, dict):
        raise InputError([loaded.problem((), "the config must be a mapping of settings")])
    for forbidden in ("base_dir", "source"):
        if forbidden in data:
            raise InputError([loaded.problem((forbidden,), f"unknown field '{forbidden}'")])
    cfg = validate_model(Config, loaded, data)
    problems = schedule_problems(cfg.schedules, loaded.problem)
    problems += [
        loaded.problem(where, message, hint) for where, message, hint in notification_problems(cfg.notifications)
    ]
    bundle = cfg.notifications.ca_bundle
    if bundle is not None and not (bundle if bundle.is_absolute() else path.resolve().parent / bundle).is_file():
        problems.append(
            loaded.problem(
                ("notifications", "ca_bundle"),
                "notifications.ca_bundle: file not found",
                "name a PEM file of trusted roots (relative paths are relative to config.yaml's folder)",
            )
        )
    update_bundle = cfg.exposure.version_data.update.ca_bundle
    if (
        update_bundle is not None
        and not (update_bundle if update_bundle.is_absolute() else path.resolve().parent / update_bundle).is_file()
    ):
        problems.append(
            loaded.problem(
                ("exposure", "version_data", "update", "ca_bundle"),
                "exposure.version_data.update.ca_bundle: file not found",
                "name a PEM file of trusted roots (relative paths are relative to config.yaml's folder)",
            )
        )
    if problems:
        raise InputError(problems)
    return cfg.model_copy(update={"base_dir": path.resolve().parent, "source": path.resolve()})

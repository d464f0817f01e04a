"""Delivering notices: a JSON POST to each webhook (requests) and/or one e-mail (SMTP). A notice delivered by
at least one channel is remembered in the store and never sent again; if every channel fails it is retried."""

from __future__ import annotations

import os
import smtplib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage

import requests
from sqlalchemy import Engine

from scanner.config import Config, NotificationsConfig
from scanner.report.notices import Notice, due_notices
from scanner.store import repo


@dataclass(frozen=True)
class DeliveryReport:
    sent: list[Notice]
    errors: list[str]


def _post(url: str, notices: list[Notice], cfg: NotificationsConfig) -> None:
    headers = {"Content-Type": "application/json", "User-Agent": "hcscan-notify"}
    if cfg.secret_header_env and os.environ.get(cfg.secret_header_env):
        headers["X-Hcscan-Token"] = os.environ[cfg.secret_header_env]
    body = {"source": "hcscan", "count": len(notices), "notices": [asdict(n) for n in notices]}
    resp = requests.post(url, json=body, headers=headers, timeout=cfg.timeout_s)
    resp.raise_for_status()


def _mail(notices: list[Notice], cfg: NotificationsConfig) -> None:
    smtp = cfg.smtp
    assert smtp is not None
    msg = EmailMessage()
    kinds = sorted({n.kind for n in notices})
    msg["Subject"] = f"hcscan: {len(notices)} notice(s) — {', '.join(kinds)}"
    msg["From"] = smtp.sender
    msg["To"] = ", ".join(smtp.to)
    msg.set_content("\n".join(f"[{n.kind}] {n.region}: {n.text}" for n in notices) + "\n")
    with smtplib.SMTP(smtp.host, smtp.port, timeout=cfg.timeout_s) as client:
        if smtp.starttls:
            client.starttls()
        user = os.environ.get(smtp.username_env) if smtp.username_env else None
        password = os.environ.get(smtp.password_env) if smtp.password_env else None
        if user and password:
            client.login(user, password)
        client.send_message(msg)


def send_notices(engine: Engine, config: Config, now: datetime | None = None) -> DeliveryReport:
    """Send every due notice once through the configured channels."""
    cfg = config.notifications
    if not cfg.webhooks and cfg.smtp is None:
        return DeliveryReport([], [])
    when = now or datetime.now(UTC)
    notices = due_notices(engine, when, config.report.sla_days, cfg.waiver_expiry_days)
    if not notices:
        return DeliveryReport([], [])
    errors: list[str] = []
    delivered = 0
    for url in cfg.webhooks:
        try:
            _post(url, notices, cfg)
            delivered += 1
        except requests.RequestException as exc:
            errors.append(f"webhook {url}: {exc}")
    if cfg.smtp is not None:
        try:
            _mail(notices, cfg)
            delivered += 1
        except (OSError, smtplib.SMTPException) as exc:
            errors.append(f"smtp {cfg.smtp.host}:{cfg.smtp.port}: {exc}")
    if not delivered:
        return DeliveryReport([], errors)
    channels = ",".join([*(["webhook"] if cfg.webhooks else []), *(["smtp"] if cfg.smtp else [])])
    repo.record_notices(engine, [(n.key, n.kind, channels) for n in notices], when)
    return DeliveryReport(notices, errors)

"""Delivering notices: a JSON POST to each webhook (requests) and/or one e-mail (SMTP). A notice delivered by
at least one channel is remembered in the store and never sent again; if every channel fails it is retried.

Secrets go only where configured. A webhook POST is never redirected (a 3xx is a delivery error), never sent
through a proxy from the environment (only `notifications.proxy`), and its TLS certificate is verified (against
`notifications.ca_bundle` when set); the token needs an https:// URL. SMTP upgrades with a verifying TLS context
before any login, and a login without TLS is refused unless `allow_plaintext_login` says otherwise. Error texts
show URLs as scheme://host:port and never contain a secret value.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import ssl
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine

from scanner.config import Config, NotificationsConfig, SmtpConfig, notification_problems
from scanner.redact import mask_url, scrub
from scanner.report.notices import Notice, due_notices
from scanner.store import repo

TOKEN_HEADER = "X-Hcscan-Token"


@dataclass(frozen=True)
class DeliveryReport:
    sent: list[Notice]
    errors: list[str]


class DeliveryError(Exception):
    """One channel could not deliver; the text is safe to print (no URL path or query, no secret)."""


def _secret(name: str, setting: str) -> str:
    """The value of a configured secret; a named but unset variable stops the delivery (no anonymous try)."""
    value = (os.environ.get(name) or "").strip()  # a CRLF env file leaves '\r' behind: never part of a secret
    if not value:
        raise DeliveryError(f"environment variable {name} ({setting}) is not set: not sent without it")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        # requests would refuse the header and quote the value in its error: say what is wrong, never the value
        raise DeliveryError(f"environment variable {name} ({setting}) holds a control character: not sent")
    return value


def _verify(cfg: NotificationsConfig, base_dir: Path) -> Path | None:
    if cfg.ca_bundle is None:
        return None
    return cfg.ca_bundle if cfg.ca_bundle.is_absolute() else base_dir / cfg.ca_bundle


def _session(cfg: NotificationsConfig, ca_bundle: Path | None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # no HTTP(S)_PROXY, no .netrc, no REQUESTS_CA_BUNDLE from the environment
    session.verify = str(ca_bundle) if ca_bundle is not None else True
    if cfg.proxy:
        session.proxies = {"http": cfg.proxy, "https": cfg.proxy}
    return session


def _tls_reason(exc: BaseException) -> str:
    """The certificate-verification message hidden in requests' wrapped exceptions, if any."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            return f"the server's certificate is not trusted ({current.verify_message})"
        if isinstance(current, BaseException):
            todo += [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
    return "TLS handshake failed"


def _post(session: requests.Session, url: str, body: dict[str, Any], token: str | None, timeout_s: float) -> None:
    if token is not None and not url.lower().startswith("https://"):
        raise DeliveryError("refused: the token is only sent to https:// webhooks")
    headers = {"Content-Type": "application/json", "User-Agent": "hcscan-notify"}
    if token is not None:
        headers[TOKEN_HEADER] = token
    try:
        resp = session.post(url, json=body, headers=headers, timeout=timeout_s, allow_redirects=False, stream=True)
    except requests.exceptions.SSLError as exc:
        raise DeliveryError(f"{_tls_reason(exc)}; nothing was sent") from None
    except requests.exceptions.ProxyError as exc:
        raise DeliveryError(f"the configured proxy failed: {type(exc).__name__}") from None
    except requests.Timeout:
        raise DeliveryError(f"no answer within {timeout_s:g}s") from None
    except requests.ConnectionError as exc:  # scrubbed before it is cut short: a cut URL would not match
        raise DeliveryError(f"cannot connect ({scrub(str(exc), [url], [token])[:300]})") from None
    except requests.RequestException as exc:
        raise DeliveryError(f"{type(exc).__name__}: {scrub(str(exc), [url], [token])[:300]}") from None
    with resp:
        status = resp.status_code
    if 300 <= status < 400:
        raise DeliveryError(
            f"HTTP {status}: redirect not followed (hcscan never re-sends notices or the token elsewhere); "
            "configure the final URL"
        )
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status}")


def _tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle is not None else None)
    except (OSError, ssl.SSLError) as exc:
        raise DeliveryError(f"cannot read notifications.ca_bundle ({type(exc).__name__})") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context  # CERT_REQUIRED and check_hostname: the name in smtp.host must be in the certificate


def _message(notices: list[Notice], smtp: SmtpConfig) -> EmailMessage:
    msg = EmailMessage()
    kinds = sorted({n.kind for n in notices})
    msg["Subject"] = f"hcscan: {len(notices)} notice(s) — {', '.join(kinds)}"
    msg["From"] = smtp.sender
    msg["To"] = ", ".join(smtp.to)
    msg.set_content("\n".join(f"[{n.kind}] {n.region}: {n.text}" for n in notices) + "\n")
    return msg


def _mail(notices: list[Notice], smtp: SmtpConfig, timeout_s: float, ca_bundle: Path | None) -> None:
    user = _secret(smtp.username_env, "smtp.username_env") if smtp.username_env else None
    password = _secret(smtp.password_env, "smtp.password_env") if smtp.password_env else None
    if (user is None) != (password is None):
        raise DeliveryError("refused: smtp.username_env and smtp.password_env go together")
    encrypted = smtp.starttls or smtp.implicit_tls
    if user is not None and not encrypted and not smtp.allow_plaintext_login:
        raise DeliveryError(
            "refused: a login without TLS would send the password in clear (set starttls or implicit_tls)"
        )
    context = _tls_context(ca_bundle) if encrypted else None
    client: smtplib.SMTP
    try:
        if smtp.implicit_tls:
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=timeout_s, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=timeout_s)
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(f"the server's certificate is not trusted ({exc.verify_message}); nothing sent") from None
    try:
        if smtp.starttls:
            client.starttls(context=context)  # SMTPNotSupportedError when not offered: nothing is sent in clear
        if user is not None and password is not None:
            client.login(user, password)
        client.send_message(_message(notices, smtp))
        with contextlib.suppress(OSError):  # SMTPException too: the mail was accepted, a lost goodbye must not
            client.quit()  # make it count as undelivered (and be sent twice)
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(
            f"the server's certificate is not trusted ({exc.verify_message}); no login, nothing sent"
        ) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"login refused (SMTP {exc.smtp_code})") from None
    finally:
        client.close()


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
    secrets: list[str | None] = []
    refused = {where: message for where, message, _ in notification_problems(cfg)}
    ca_bundle = _verify(cfg, config.base_dir)
    delivered: list[str] = []
    if cfg.webhooks:
        body = {"source": "hcscan", "count": len(notices), "notices": [asdict(n) for n in notices]}
        token: str | None = None
        token_error: str | None = None
        try:
            token = _secret(cfg.secret_header_env, "secret_header_env") if cfg.secret_header_env else None
        except DeliveryError as exc:
            token_error = str(exc)
        secrets.append(token)
        with _session(cfg, ca_bundle) as session:
            for i, url in enumerate(cfg.webhooks):
                shown = mask_url(url)
                problem = refused.get(("notifications", "webhooks", i)) or token_error
                try:
                    if problem is not None:
                        raise DeliveryError(f"refused: {problem}")
                    _post(session, url, body, token, cfg.timeout_s)
                    if "webhook" not in delivered:
                        delivered.append("webhook")
                except (DeliveryError, requests.RequestException, OSError, ValueError) as exc:
                    errors.append(f"webhook {shown}: {scrub(str(exc), cfg.webhooks, secrets)}")
    if cfg.smtp is not None:
        smtp = cfg.smtp
        secrets += [os.environ.get(n) for n in (smtp.username_env, smtp.password_env) if n]
        smtp_problems = [m for where, m in refused.items() if where[:2] == ("notifications", "smtp")]
        try:
            if smtp_problems:
                raise DeliveryError(f"refused: {smtp_problems[0]}")
            _mail(notices, smtp, cfg.timeout_s, ca_bundle)
            delivered.append("smtp")
        except (DeliveryError, OSError, ValueError) as exc:  # smtplib.SMTPException and ssl errors are OSErrors
            errors.append(f"smtp {smtp.host}:{smtp.port}: {scrub(str(exc), cfg.webhooks, secrets)}")
    if not delivered:
        return DeliveryReport([], errors)
    repo.record_notices(engine, [(n.key, n.kind, ",".join(delivered)) for n in notices], when)
    return DeliveryReport(notices, errors)

"""Secrets go only where configured: webhook POSTs are not redirected, not proxied by the environment, verified,
and SMTP logs in only after a verified TLS upgrade. Real servers on 127.0.0.1, certificates from the lab's CA."""

from __future__ import annotations

import base64
import ipaddress
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from scanner.cli import main
from scanner.config import Config, NotificationsConfig, SmtpConfig, load_config
from scanner.errors import InputError
from scanner.lab.certs import CertSpec, LabPKI
from scanner.notify import TOKEN_HEADER, send_notices
from scanner.probes.base import ProbeContext
from scanner.probes.logbackends.base import LogBackendError
from scanner.probes.logbackends.httpjson import request_json
from scanner.redact import mask_url, scrub
from scanner.store.db import open_store
from tests.helpers import write_yaml
from tests.report.history import NOW, build_history

TOKEN = "tok-3f9a1c77e2b5"  # the value of HOOK_TOKEN in these tests
SECRET_PATH = "/services/T0123/B0456/pathsecret789"
SECRET_QUERY = "token=querysecret456"
SMTP_USER, SMTP_PASSWORD = "hcscan-mailer", "pw-8c1d2e3f4a"
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPKI:
    return LabPKI(tmp_path_factory.mktemp("pki"))


def server_context(pki: LabPKI, name: str, spec: CertSpec | None = None) -> ssl.SSLContext:
    spec = spec or CertSpec()
    issued = pki.issue(spec, name, f"{name}-{spec.issuer}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(issued.chain_pem, issued.key_pem)
    return ctx


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class WebReceiver:
    """An HTTP(S) server on 127.0.0.1 that records every connection and request and answers `status`."""

    def __init__(self, context: ssl.SSLContext | None = None, status: int = 204, location: str | None = None) -> None:
        self.hits: list[Hit] = []
        self.connections = 0
        self.status = status
        self.location = location
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                owner.hits.append(Hit(self.command, self.path, dict(self.headers.items()), body))
                self.send_response(owner.status)
                if owner.location:
                    self.send_header("Location", owner.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = _record
            do_GET = _record
            do_CONNECT = _record

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                owner.connections += 1
                if context is None:
                    super().finish_request(request, client_address)
                    return
                try:
                    wrapped = context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return  # the client refused our certificate: no request was sent
                try:
                    super().finish_request(wrapped, client_address)
                finally:
                    wrapped.close()

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        self.scheme = "https" if context is not None else "http"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str = "/hook") -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web() -> Iterator[list[WebReceiver]]:
    """Receivers made by a test (closed afterwards)."""
    made: list[WebReceiver] = []
    yield made
    for receiver in made:
        receiver.close()


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    store = open_store(f"sqlite:///{tmp_path / 'n.db'}")
    build_history(store)
    return store


def notify_config(**notifications: Any) -> Config:
    return Config(notifications=NotificationsConfig(**notifications))


def assert_masked(text: str) -> None:
    for secret in (SECRET_PATH, "pathsecret789", "querysecret456", TOKEN, SMTP_PASSWORD, SMTP_USER):
        assert secret not in text, text


# --- webhooks ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_a_delivery_error_and_the_token_never_reaches_the_second_host(
    pki: LabPKI, engine: Engine, web: list[WebReceiver], monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    elsewhere = WebReceiver(server_context(pki, "127.0.0.1"))
    first = WebReceiver(server_context(pki, "127.0.0.1"), status=status, location=elsewhere.url("/steal"))
    web += [elsewhere, first]
    url = first.url(f"{SECRET_PATH}?{SECRET_QUERY}")
    config = notify_config(webhooks=[url], secret_header_env="HOOK_TOKEN", ca_bundle=pki.ca_bundle)
    report = send_notices(engine, config, NOW)
    assert report.sent == []  # not delivered: the notices stay due and are retried
    assert len(report.errors) == 1
    error = report.errors[0]
    assert f"HTTP {status}" in error and "redirect not followed" in error
    assert f"https://127.0.0.1:{first.port}/…" in error
    assert_masked(error)
    assert len(first.hits) == 1 and first.hits[0].headers.get(TOKEN_HEADER) == TOKEN
    assert elsewhere.connections == 0 and elsewhere.hits == []
    again = send_notices(engine, config, NOW)
    assert again.sent == [] and len(first.hits) == 2 and elsewhere.connections == 0


def test_proxies_from_the_environment_are_ignored(
    pki: LabPKI, engine: Engine, web: list[WebReceiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = WebReceiver()
    hook = WebReceiver(server_context(pki, "127.0.0.1"))
    web += [proxy, hook]
    for var in PROXY_VARS:
        monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.rogue_bundle))  # the environment does not choose trust either
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    config = notify_config(webhooks=[hook.url()], secret_header_env="HOOK_TOKEN", ca_bundle=pki.ca_bundle)
    report = send_notices(engine, config, NOW)
    assert report.errors == [] and len(report.sent) == 5
    assert proxy.connections == 0 and proxy.hits == []
    assert len(hook.hits) == 1 and hook.hits[0].headers.get(TOKEN_HEADER) == TOKEN


def test_a_configured_proxy_is_used(engine: Engine, web: list[WebReceiver]) -> None:
    proxy = WebReceiver()  # answers every request itself, as a forwarding proxy would after delivering it
    web.append(proxy)
    config = notify_config(webhooks=["http://127.0.0.1:9/hook"], proxy=f"http://127.0.0.1:{proxy.port}")
    report = send_notices(engine, config, NOW)
    assert report.errors == [] and len(report.sent) == 5
    assert [(h.method, h.path) for h in proxy.hits] == [("POST", "http://127.0.0.1:9/hook")]


@pytest.mark.parametrize(
    ("spec", "name", "trusted", "reason"),
    [
        (CertSpec(), "127.0.0.1", False, "unable to get local issuer certificate"),  # public roots only
        (CertSpec(issuer="rogue"), "127.0.0.1", True, "self-signed certificate in certificate chain"),
        (CertSpec(), "hooks.other.test", True, "IP address mismatch"),
    ],
    ids=["lab-ca-not-configured", "unknown-ca", "wrong-name"],
)
def test_an_unverified_webhook_server_receives_nothing(
    pki: LabPKI,
    engine: Engine,
    web: list[WebReceiver],
    monkeypatch: pytest.MonkeyPatch,
    spec: CertSpec,
    name: str,
    trusted: bool,
    reason: str,
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    hook = WebReceiver(server_context(pki, name, spec))
    web.append(hook)
    config = notify_config(
        webhooks=[hook.url(f"{SECRET_PATH}?{SECRET_QUERY}")],
        secret_header_env="HOOK_TOKEN",
        ca_bundle=pki.ca_bundle if trusted else None,
    )
    report = send_notices(engine, config, NOW)
    assert report.sent == [] and len(report.errors) == 1
    assert "certificate is not trusted" in report.errors[0] and reason in report.errors[0], report.errors
    assert_masked(report.errors[0])
    assert hook.connections == 1 and hook.hits == []


def test_a_token_is_never_sent_to_an_http_webhook(
    engine: Engine, web: list[WebReceiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    hook = WebReceiver()
    web.append(hook)
    report = send_notices(engine, notify_config(webhooks=[hook.url(SECRET_PATH)], secret_header_env="HOOK_TOKEN"), NOW)
    assert report.sent == [] and len(report.errors) == 1 and "refused" in report.errors[0]
    assert_masked(report.errors[0])
    assert hook.connections == 0


def test_an_unset_token_variable_sends_nothing(
    pki: LabPKI, engine: Engine, web: list[WebReceiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOOK_TOKEN", raising=False)
    hook = WebReceiver(server_context(pki, "127.0.0.1"))
    web.append(hook)
    config = notify_config(webhooks=[hook.url()], secret_header_env="HOOK_TOKEN", ca_bundle=pki.ca_bundle)
    report = send_notices(engine, config, NOW)
    assert report.sent == [] and report.errors == [
        f"webhook https://127.0.0.1:{hook.port}/…: refused: environment variable HOOK_TOKEN (secret_header_env) "
        "is not set: not sent without it"
    ]
    assert hook.connections == 0


def test_delivery_errors_show_no_path_query_or_token(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_TOKEN", TOKEN)
    with socket.socket() as placeholder:  # a port that was just free: nothing listens there
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    url = f"https://127.0.0.1:{port}{SECRET_PATH}?{SECRET_QUERY}"
    report = send_notices(engine, notify_config(webhooks=[url], secret_header_env="HOOK_TOKEN", timeout_s=5), NOW)
    assert report.sent == [] and len(report.errors) == 1
    assert report.errors[0].startswith(f"webhook https://127.0.0.1:{port}/…: cannot connect")
    assert_masked(report.errors[0])


def test_log_backend_errors_show_no_path_or_query(web: list[WebReceiver]) -> None:
    backend = WebReceiver(status=404)
    web.append(backend)
    ctx = ProbeContext(allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),))
    with pytest.raises(LogBackendError) as err:
        request_json(backend.url(f"{SECRET_PATH}?{SECRET_QUERY}"), ctx=ctx, timeout_s=5, token=TOKEN)
    assert err.value.detail.startswith(f"http://127.0.0.1:{backend.port}/…: HTTP 404"), err.value
    assert_masked(str(err.value))
    assert len(backend.hits) == 1  # the request itself went to the declared path


def test_mask_url_and_scrub() -> None:
    assert mask_url("https://hooks.example:8443/services/T0/B1/x?token=y") == "https://hooks.example:8443/…"
    assert mask_url("https://user:pw@hooks.example") == "https://hooks.example/…"
    assert mask_url("https://[::1]:9/") == "https://[::1]:9"
    assert mask_url("not a url") == "…"
    text = (
        "HTTPSConnectionPool(host='h', port=1): Max retries exceeded with url: /a/b/secret?token=q "
        "(Caused by x; see https://h:1/a/b/secret?token=q) pw=hunter22"
    )
    cleaned = scrub(text, ["https://h:1/a/b/secret?token=q"], ["hunter22"])
    assert "secret" not in cleaned and "token=q" not in cleaned and "hunter22" not in cleaned
    assert "https://h:1/…" in cleaned and "with url: …" in cleaned


# --- config load: refused before anything runs (exit 2, file:line) --------------------------------------------------


def write_config(root: Path, notifications: dict[str, Any]) -> Path:
    return write_yaml(root / "config.yaml", {"store_url": "sqlite:///hcscan.db", "notifications": notifications})


def line_of(path: Path, needle: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(needle)


def test_a_token_with_an_http_webhook_is_refused_at_load_with_exit_2(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        {
            "secret_header_env": "HOOK_TOKEN",
            "webhooks": ["https://hooks.region.example/a", f"http://127.0.0.1:9{SECRET_PATH}?{SECRET_QUERY}"],
        },
    )
    result = CliRunner().invoke(main, ["notify", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert f"config.yaml:{line_of(config, 'http://127.0.0.1:9')}" in result.output
    assert "secret_header_env sends a token" in result.output and "use an https:// URL" in result.output
    assert "http://127.0.0.1:9/…" in result.output
    assert_masked(result.output)


@pytest.mark.parametrize(
    ("notifications", "needle", "message"),
    [
        (
            {"smtp": {"host": "mail.test", "to": ["a@b.test"], "username_env": "U", "password_env": "P"}},
            "smtp:",
            "the password would cross the network in clear",
        ),
        (
            {"smtp": {"host": "mail.test", "to": ["a@b.test"], "starttls": True, "implicit_tls": True}},
            "implicit_tls",
            "starttls and implicit_tls exclude each other",
        ),
        (
            {"smtp": {"host": "mail.test", "to": ["a@b.test"], "starttls": True, "password_env": "P"}},
            "smtp:",
            "username_env and password_env go together",
        ),
        ({"webhooks": ["ftp://hooks.test/x"]}, "ftp://", "must start with https://"),
        ({"webhooks": ["http://user:pw@hooks.test/x"]}, "http://user", "credentials in an http:// webhook URL"),
        ({"proxy": "http://user:pw@proxy.test:3128"}, "proxy:", "no credentials in the proxy URL"),
        ({"ca_bundle": "missing.pem"}, "ca_bundle", "notifications.ca_bundle: file not found"),
    ],
    ids=["login-in-clear", "two-tls-modes", "half-credentials", "scheme", "http-userinfo", "proxy-userinfo", "ca"],
)
def test_unsafe_notification_settings_are_refused_at_load(
    tmp_path: Path, notifications: dict[str, Any], needle: str, message: str
) -> None:
    config = write_config(tmp_path, notifications)
    with pytest.raises(InputError) as err:
        load_config(config)
    problems = err.value.problems
    assert len(problems) == 1 and message in problems[0].message, problems
    assert problems[0].line == line_of(config, needle)
    assert "pw@" not in str(err.value)


def test_safe_notification_settings_load(tmp_path: Path) -> None:
    (tmp_path / "roots.pem").write_text("")
    config = write_config(
        tmp_path,
        {
            "webhooks": ["https://hooks.test/x?token=1", "http://127.0.0.1:9/no-token"],
            "proxy": "http://proxy.test:3128",
            "ca_bundle": "roots.pem",
            "smtp": {
                "host": "127.0.0.1",
                "to": ["a@b.test"],
                "username_env": "U",
                "password_env": "P",
                "allow_plaintext_login": True,  # dangerous, but the site said so explicitly
            },
        },
    )
    loaded = load_config(config).notifications
    assert loaded.proxy == "http://proxy.test:3128" and loaded.smtp is not None and loaded.smtp.allow_plaintext_login


# --- SMTP ----------------------------------------------------------------------------------------------------------


@dataclass
class SmtpLog:
    commands: list[str] = field(default_factory=list)  # verbs in order; "TLS" when a TLS session was set up
    logins: list[tuple[bool, str, str]] = field(default_factory=list)  # (over TLS, user, password)
    mails: list[str] = field(default_factory=list)


class SmtpServer:
    """A small ESMTP server on 127.0.0.1: STARTTLS (or implicit TLS) with the given certificate, AUTH PLAIN."""

    def __init__(
        self, context: ssl.SSLContext, *, implicit: bool = False, offer_starttls: bool = True, accept_login: bool = True
    ) -> None:
        self.log = SmtpLog()
        log = self.log

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                tls = False
                try:
                    if implicit:
                        sock = context.wrap_socket(sock, server_side=True)
                        tls = True
                        log.commands.append("TLS")
                    self._talk(sock, tls)
                except (ssl.SSLError, OSError):
                    log.commands.append("TLS-FAILED" if not tls else "DROPPED")

            def _talk(self, sock: socket.socket, tls: bool) -> None:
                reader = sock.makefile("rb")
                sock.sendall(b"220 mail.test ESMTP\r\n")
                while line := reader.readline():
                    text = line.decode("ascii", "replace").rstrip("\r\n")
                    verb = text.split(" ", 1)[0].upper()
                    log.commands.append(verb)
                    if verb in ("EHLO", "HELO"):
                        starttls = b"250-STARTTLS\r\n" if offer_starttls and not tls else b""
                        sock.sendall(b"250-mail.test\r\n" + starttls + b"250 AUTH PLAIN\r\n")
                    elif verb == "STARTTLS":
                        sock.sendall(b"220 go ahead\r\n")
                        sock = context.wrap_socket(sock, server_side=True)
                        tls = True
                        log.commands.append("TLS")
                        reader = sock.makefile("rb")
                    elif verb == "AUTH":
                        _, user, password = base64.b64decode(text.split()[2]).split(b"\0")
                        log.logins.append((tls, user.decode(), password.decode()))
                        # a server that echoes what it was given would put the password in the error text
                        sock.sendall(b"235 ok\r\n" if accept_login else b"535 bad credentials " + password + b"\r\n")
                    elif verb == "DATA":
                        sock.sendall(b"354 go ahead\r\n")
                        body: list[bytes] = []
                        while (data := reader.readline()) not in (b".\r\n", b""):
                            body.append(data)
                        log.mails.append(b"".join(body).decode())
                        sock.sendall(b"250 queued\r\n")
                    elif verb == "QUIT":
                        sock.sendall(b"221 bye\r\n")
                        return
                    else:
                        sock.sendall(b"250 ok\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def smtp_servers() -> Iterator[list[SmtpServer]]:
    made: list[SmtpServer] = []
    yield made
    for server in made:
        server.close()


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_USER", SMTP_USER)
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)


def smtp_config(port: int, ca_bundle: Path | None, **smtp: Any) -> Config:
    return notify_config(
        smtp=SmtpConfig(
            host="127.0.0.1",
            port=port,
            to=["ciso@region.test"],
            username_env="SMTP_USER",
            password_env="SMTP_PASSWORD",
            **smtp,
        ),
        ca_bundle=ca_bundle,
        timeout_s=10,
    )


@pytest.mark.parametrize(
    ("spec", "name", "reason"),
    [
        (CertSpec(), "mail.other.test", "IP address mismatch"),
        (CertSpec(issuer="rogue"), "127.0.0.1", "self-signed certificate in certificate chain"),
    ],
    ids=["wrong-name", "unknown-ca"],
)
@pytest.mark.usefixtures("credentials")
def test_starttls_to_an_unverified_server_never_logs_in(
    pki: LabPKI, engine: Engine, smtp_servers: list[SmtpServer], spec: CertSpec, name: str, reason: str
) -> None:
    server = SmtpServer(server_context(pki, name, spec))
    smtp_servers.append(server)
    report = send_notices(engine, smtp_config(server.port, pki.ca_bundle, starttls=True), NOW)
    assert report.sent == [] and len(report.errors) == 1
    assert report.errors[0].startswith(f"smtp 127.0.0.1:{server.port}: the server's certificate is not trusted")
    assert reason in report.errors[0] and "no login, nothing sent" in report.errors[0]
    assert_masked(report.errors[0])
    assert "AUTH" not in server.log.commands and "TLS" not in server.log.commands
    assert server.log.logins == [] and server.log.mails == []


@pytest.mark.usefixtures("credentials")
def test_starttls_verified_by_the_ca_bundle_logs_in_and_delivers(
    pki: LabPKI, engine: Engine, smtp_servers: list[SmtpServer]
) -> None:
    server = SmtpServer(server_context(pki, "127.0.0.1"))
    smtp_servers.append(server)
    report = send_notices(engine, smtp_config(server.port, pki.ca_bundle, starttls=True), NOW)
    assert report.errors == [] and len(report.sent) == 5
    assert server.log.commands[:4] == ["EHLO", "STARTTLS", "TLS", "EHLO"]
    assert server.log.logins == [(True, SMTP_USER, SMTP_PASSWORD)]
    assert len(server.log.mails) == 1 and "sla_breach" in server.log.mails[0]


@pytest.mark.usefixtures("credentials")
def test_implicit_tls_logs_in_and_delivers(pki: LabPKI, engine: Engine, smtp_servers: list[SmtpServer]) -> None:
    server = SmtpServer(server_context(pki, "127.0.0.1"), implicit=True)
    smtp_servers.append(server)
    report = send_notices(engine, smtp_config(server.port, pki.ca_bundle, implicit_tls=True), NOW)
    assert report.errors == [] and len(report.sent) == 5
    assert server.log.commands[0] == "TLS" and server.log.logins == [(True, SMTP_USER, SMTP_PASSWORD)]
    assert len(server.log.mails) == 1


@pytest.mark.usefixtures("credentials")
def test_a_server_that_does_not_offer_starttls_gets_nothing(
    pki: LabPKI, engine: Engine, smtp_servers: list[SmtpServer]
) -> None:
    server = SmtpServer(server_context(pki, "127.0.0.1"), offer_starttls=False)  # e.g. STARTTLS stripped on path
    smtp_servers.append(server)
    report = send_notices(engine, smtp_config(server.port, pki.ca_bundle, starttls=True), NOW)
    assert report.sent == [] and len(report.errors) == 1 and "STARTTLS" in report.errors[0]
    assert server.log.logins == [] and server.log.mails == [] and "AUTH" not in server.log.commands


@pytest.mark.usefixtures("credentials")
def test_a_login_without_tls_is_refused_at_send_time_too(
    pki: LabPKI, engine: Engine, smtp_servers: list[SmtpServer]
) -> None:
    server = SmtpServer(server_context(pki, "127.0.0.1"))
    smtp_servers.append(server)
    report = send_notices(engine, smtp_config(server.port, None), NOW)  # built in code, not loaded from YAML
    assert report.sent == [] and len(report.errors) == 1
    assert "refused" in report.errors[0] and "the password would cross the network in clear" in report.errors[0]
    assert server.log.commands == []  # not even connected
    allowed = send_notices(engine, smtp_config(server.port, None, allow_plaintext_login=True), NOW)
    assert allowed.errors == [] and server.log.logins == [(False, SMTP_USER, SMTP_PASSWORD)]


@pytest.mark.usefixtures("credentials")
def test_a_refused_login_reports_the_code_and_no_secret(
    pki: LabPKI, engine: Engine, smtp_servers: list[SmtpServer]
) -> None:
    server = SmtpServer(server_context(pki, "127.0.0.1"), accept_login=False)
    smtp_servers.append(server)
    report = send_notices(engine, smtp_config(server.port, pki.ca_bundle, starttls=True), NOW)
    assert report.sent == [] and report.errors == [f"smtp 127.0.0.1:{server.port}: login refused (SMTP 535)"]
    assert server.log.logins == [(True, SMTP_USER, SMTP_PASSWORD)] and server.log.mails == []


def test_a_token_with_a_line_end_is_sent_stripped_and_a_control_character_never_printed(
    pki: LabPKI, engine: Engine, web: list[WebReceiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CRLF env file leaves '\\r' on the token: requests refused the header and quoted the token in its error,
    which went to stderr and the agent log (found in review). Trailing line ends are stripped; a control character
    inside the value stops the delivery with a message that does not hold the value."""
    receiver = WebReceiver(server_context(pki, "127.0.0.1"))
    web.append(receiver)
    config = notify_config(webhooks=[receiver.url("/hook")], secret_header_env="HOOK_TOKEN", ca_bundle=pki.ca_bundle)
    monkeypatch.setenv("HOOK_TOKEN", TOKEN + "\r\n")
    report = send_notices(engine, config, NOW)
    assert report.errors == [] and receiver.hits[0].headers.get(TOKEN_HEADER) == TOKEN
    monkeypatch.setenv("HOOK_TOKEN", TOKEN[:4] + "\x1b" + TOKEN[4:])
    from scanner.notify import DeliveryError, _secret

    with pytest.raises(DeliveryError) as info:
        _secret("HOOK_TOKEN", "notifications.secret_header_env")
    assert "control character" in str(info.value) and TOKEN[4:] not in str(info.value)

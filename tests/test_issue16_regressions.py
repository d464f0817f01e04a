"""Issue 16, findings 3, 4 and 8 (systemd part): regressions written against the settings both the old and the
new hcscan accept, so each test fails on the main of 2026-12-02 morning (8848154) for the reason the issue gives,
not because a new setting is unknown there.

Real servers on 127.0.0.1 only: an HTTP receiver that redirects, a second receiver that must get nothing, an HTTP
"proxy" named by the environment, and a small ESMTP server offering STARTTLS with a certificate for another name.
"""

from __future__ import annotations

import base64
import configparser
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from scanner.config import Config, NotificationsConfig, SmtpConfig
from scanner.notify import send_notices
from scanner.store.db import open_store
from tests.helpers import self_signed_server_context
from tests.report.history import NOW, build_history

REPO = Path(__file__).resolve().parents[1]
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
USER, PASSWORD = "mailer-16", "pw-16-d41c9e"


class Receiver:
    """Records every request it gets on 127.0.0.1; answers `status` (with `location` when given)."""

    def __init__(self, status: int = 204, location: str | None = None) -> None:
        self.requests: list[tuple[str, str, bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                owner.requests.append((self.command, self.path, self.rfile.read(length) if length else b""))
                self.send_response(status)
                if location is not None:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = _answer
            do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    store = open_store(f"sqlite:///{tmp_path / 'n.db'}")
    build_history(store)  # leaves notices due (a regression, a new critical, an SLA breach, expiring waivers)
    return store


def test_a_redirected_webhook_post_never_reaches_the_second_host(engine: Engine, receivers: list[Receiver]) -> None:
    """Finding 3: requests followed a 307 and re-sent the POST (and its token) to wherever Location pointed."""
    elsewhere = Receiver()
    first = Receiver(status=307, location=elsewhere.url("/steal"))
    receivers += [elsewhere, first]
    report = send_notices(engine, Config(notifications=NotificationsConfig(webhooks=[first.url("/hook")])), NOW)
    assert len(first.requests) == 1 and first.requests[0][0] == "POST"
    assert elsewhere.requests == [], "the notice followed the redirect to another receiver"
    assert report.sent == [] and len(report.errors) == 1 and "307" in report.errors[0], report.errors


def test_a_proxy_named_only_by_the_environment_is_not_used(
    engine: Engine, receivers: list[Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 3: HTTP_PROXY in the agent's environment received every webhook POST."""
    proxy, hook = Receiver(), Receiver()
    receivers += [proxy, hook]
    for var in PROXY_VARS:
        monkeypatch.setenv(var, f"http://127.0.0.1:{proxy.port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    report = send_notices(engine, Config(notifications=NotificationsConfig(webhooks=[hook.url("/hook")])), NOW)
    assert proxy.requests == [], "the environment's proxy received the notice"
    assert report.errors == [] and report.sent, report
    assert [(m, p) for m, p, _ in hook.requests] == [("POST", "/hook")]


class Smtp:
    """An ESMTP server on 127.0.0.1 offering STARTTLS with `context`; records logins (over TLS?, user, password)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.logins: list[tuple[bool, str, str]] = []
        self.verbs: list[str] = []
        owner = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                tls = False
                try:
                    reader = sock.makefile("rb")
                    sock.sendall(b"220 mail.test ESMTP\r\n")
                    while line := reader.readline():
                        text = line.decode("ascii", "replace").rstrip("\r\n")
                        verb = text.split(" ", 1)[0].upper()
                        owner.verbs.append(verb)
                        if verb in ("EHLO", "HELO"):
                            offer = b"" if tls else b"250-STARTTLS\r\n"
                            sock.sendall(b"250-mail.test\r\n" + offer + b"250 AUTH PLAIN\r\n")
                        elif verb == "STARTTLS":
                            sock.sendall(b"220 go ahead\r\n")
                            sock = context.wrap_socket(sock, server_side=True)
                            tls = True
                            reader = sock.makefile("rb")
                        elif verb == "AUTH":
                            _, user, password = base64.b64decode(text.split()[2]).split(b"\0")
                            owner.logins.append((tls, user.decode(), password.decode()))
                            sock.sendall(b"235 ok\r\n")
                        elif verb == "DATA":
                            sock.sendall(b"354 go ahead\r\n")
                            while reader.readline() not in (b".\r\n", b""):
                                pass
                            sock.sendall(b"250 queued\r\n")
                        elif verb == "QUIT":
                            sock.sendall(b"221 bye\r\n")
                            return
                        else:
                            sock.sendall(b"250 ok\r\n")
                except (ssl.SSLError, OSError):
                    owner.verbs.append("DROPPED")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def smtp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Smtp]:
    monkeypatch.setenv("MAIL16_USER", USER)
    monkeypatch.setenv("MAIL16_PASSWORD", PASSWORD)
    server = Smtp(self_signed_server_context(tmp_path, "mail.other.test"))  # self-signed, and for another name
    yield server
    server.close()


def _smtp_config(port: int, starttls: bool) -> Config:
    smtp = SmtpConfig(
        host="127.0.0.1",
        port=port,
        starttls=starttls,
        username_env="MAIL16_USER",
        password_env="MAIL16_PASSWORD",
        to=["ciso@region.test"],
    )
    return Config(notifications=NotificationsConfig(smtp=smtp, timeout_s=10))


def test_starttls_to_an_unverified_server_sends_no_password(engine: Engine, smtp: Smtp) -> None:
    """Finding 4: starttls() without a context; a self-signed server for another name received the credentials."""
    report = send_notices(engine, _smtp_config(smtp.port, starttls=True), NOW)
    assert smtp.logins == [], "the password went to a server whose certificate was not verified"
    assert "AUTH" not in smtp.verbs
    assert report.sent == [] and len(report.errors) == 1 and PASSWORD not in report.errors[0], report.errors


def test_no_login_in_clear_unless_the_site_allows_it(engine: Engine, smtp: Smtp) -> None:
    """Finding 4: with `starttls: false`, login() sent the credentials in clear."""
    report = send_notices(engine, _smtp_config(smtp.port, starttls=False), NOW)
    assert smtp.logins == [], "the password crossed the network in clear"
    assert report.sent == [] and len(report.errors) == 1 and PASSWORD not in report.errors[0], report.errors


def test_the_systemd_unit_makes_the_agents_files_private() -> None:
    """Finding 8: the shipped unit set no UMask, so the store and reports the agent creates were world-readable."""
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read(REPO / "docs" / "hcscan-agent.service", encoding="utf-8")
    assert unit.get("Service", "UMask", fallback=None) == "0077"

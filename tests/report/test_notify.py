"""Notifications reach a local HTTP receiver and a local SMTP sink, and each notice is sent once."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scanner.config import Config, NotificationsConfig, SmtpConfig
from scanner.notify import send_notices
from scanner.store.db import open_store
from tests.report.history import NOW, build_history


@pytest.fixture
def smtp_sink() -> Iterator[tuple[int, list[str]]]:
    """A minimal SMTP server that accepts every message and keeps its text."""
    mails: list[str] = []

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"220 sink ESMTP\r\n")
            data: list[bytes] = []
            in_data = False
            for line in self.rfile:
                if in_data:
                    if line == b".\r\n":
                        in_data = False
                        mails.append(b"".join(data).decode())
                        self.wfile.write(b"250 queued\r\n")
                    else:
                        data.append(line)
                    continue
                cmd = line[:4].upper()
                if cmd in (b"EHLO", b"HELO"):
                    self.wfile.write(b"250 sink\r\n")
                elif cmd == b"DATA":
                    in_data = True
                    self.wfile.write(b"354 go ahead\r\n")
                elif cmd == b"QUIT":
                    self.wfile.write(b"221 bye\r\n")
                    return
                else:
                    self.wfile.write(b"250 ok\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], mails
    server.shutdown()


def test_notices_go_to_webhook_and_mail_once(
    tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]], smtp_sink: tuple[int, list[str]]
) -> None:
    engine = open_store(f"sqlite:///{tmp_path / 'n.db'}")
    build_history(engine)
    url, posts = receiver
    port, mails = smtp_sink
    config = Config(
        notifications=NotificationsConfig(
            webhooks=[url], smtp=SmtpConfig(host="127.0.0.1", port=port, to=["ciso@region.test"]), waiver_expiry_days=30
        )
    )
    first = send_notices(engine, config, NOW)
    assert first.errors == []
    kinds = sorted(n["kind"] for n in posts[0]["notices"])
    # critical TLS-04 on pump: new (never notified) and past its 7-day SLA; regression (TLS-01 epj) and an expired
    # waiver (TLS-07 pacs); the pacs TLS-01 waiver expires in 10 days
    assert kinds == ["new_critical", "regression", "regression", "sla_breach", "waiver_expiring"]
    assert len(mails) == 1 and "sla_breach" in mails[0] and "ciso@region.test" in mails[0]
    second = send_notices(engine, config, NOW)
    assert second.sent == [] and len(posts) == 1 and len(mails) == 1  # each notice once, not every run

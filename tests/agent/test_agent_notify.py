"""The agent sends due notices after its scans: a new critical finding reaches the webhook, once."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from scanner.lab.services import SERVICE_CASES_BY_NAME, ServiceLab
from tests.agent.conftest import AgentProcess
from tests.helpers import make_workspace, system


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    got: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", got
    server.shutdown()


@pytest.mark.slow
def test_agent_scan_sends_a_new_critical_notice_once(
    tmp_path: Path, agents: Callable[..., AgentProcess], webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, got = webhook
    with ServiceLab(tmp_path / "svc", cases=(SERVICE_CASES_BY_NAME["fhir_bad"],)) as lab:
        ep = lab.cases["fhir_bad"]
        config = make_workspace(
            tmp_path / "ws",
            [system("fhir-open", ep.address, ep.port, "fhir", ep.server_name, criticality="critical")],
            ca_bundles=[str(lab.ca_bundle)],
            extra_config={
                "agent": {"id": "agent-1", "catchup_grace_s": 2 * 86400, "lease_s": 30, "sweep_s": 1},
                "schedules": [{"id": "nightly", "cron": "0 0 * * *", "scope": {"controls": ["EXP-04"]}}],
                "notifications": {"webhooks": [url]},
            },
        )
        assert agents(config, "--once", name="first").wait(60) == 0
        assert agents(config, "--once", name="second").wait(60) == 0  # nothing due: no second scan, no resend
    notices = [n for batch in got for n in (batch.get("notices") or [])]
    kinds = [n.get("kind") for n in notices]
    assert kinds.count("new_critical") == 1, got

"""The agent sends due notices after its scans: a new critical finding reaches the webhook, once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scanner.lab.services import SERVICE_CASES_BY_NAME, ServiceLab
from tests.agent.conftest import AgentProcess
from tests.helpers import make_workspace, system


@pytest.mark.slow
def test_agent_scan_sends_a_new_critical_notice_once(
    tmp_path: Path, agents: Callable[..., AgentProcess], receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, got = receiver
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

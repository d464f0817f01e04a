"""A small store with three weekly runs, waivers (active, expiring, expired), an expiring certificate and a
hostile certificate subject: the specification the region page, exports and notices are tested against."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from scanner.models import Status
from scanner.results import ControlInfo, FindingRecord, RunMeta, SystemInfo
from scanner.store import repo

NOW = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
HOSTILE = "<script>alert('x')</script>\"quoted\" CN=evil"
REMEDIATION = 'Renew the certificate, then reload the "web" service, and check the chain, twice.'

CONTROLS = (
    ControlInfo("TLS-01", "Only TLS 1.2+", "tls", "high", "Old TLS.", "Disable TLS 1.0, 1.1.", {"nis2": ["21(2)(h)"], "iso27001": ["A.8.24"], "dk_strategy": ["Forebygge"]}),
    ControlInfo("TLS-04", "Certificate valid", "tls", "critical", "Expiry.", REMEDIATION, {"nis2": ["21(2)(h)"], "iso27001": ["A.8.24"], "cis": ["3.10"]}),
    ControlInfo("TLS-07", "HSTS", "tls", "medium", "HSTS.", "Send HSTS.", {"nis2": ["21(2)(h)"], "cis": ["3.10"]}),
    ControlInfo("LOG-01", "Logs fresh", "logging", "high", "Logs.", "Ship logs.", {"nis2": ["21(2)(g)"], "iso27001": ["A.8.15"]}),
)  # fmt: skip
SYSTEMS = (
    SystemInfo("epj", "r1", "Region Test", "EPJ front end", "EPJ team", "critical", False),
    SystemInfo("pacs", "r1", "Region Test", "PACS viewer", "Radiology IT", "high", False),
    SystemInfo("pump", "r1", "Region Test", "Infusion pump gateway", "Medico", "high", True),
)


def _rec(cid: str, system: str, ep: str, status: Status, msg: str, ev: dict[str, Any] | None = None) -> FindingRecord:
    c = next(c for c in CONTROLS if c.control_id == cid)
    s = next(s for s in SYSTEMS if s.system_id == system)
    return FindingRecord(
        cid, c.family, c.severity, "r1", system, f"{system}/{ep}", s.criticality, status, msg, ev or {}
    )


def _waiver(expires: str, active: bool) -> dict[str, Any]:
    return {
        "waiver": {
            "scope": "tag:pacs",
            "reason": "Vendor fix due in spring",
            "approved_by": "CISO Test",
            "approved_on": "2026-06-01",
            "expires": expires,
            "compensating_control": "Reverse proxy, internal only",
            "active": active,
        }
    }


def week(n: int) -> list[FindingRecord]:
    """The records of week n (0, 1, 2 — 2 is the latest)."""
    cert_ev = {
        "tls.leaf.not_after": (NOW + timedelta(days=20)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tls.leaf.subject": HOSTILE,
    }
    return [
        # epj TLS-01: passing, then regressed in the last run
        _rec("TLS-01", "epj", "web", Status.FAIL if n == 2 else (Status.FAIL if n == 0 else Status.PASS), "TLS 1.0 offered"),
        # epj TLS-04: certificate expiring in 20 days (still passing the 14-day policy), hostile subject
        _rec("TLS-04", "epj", "web", Status.PASS, "valid 20 more days", cert_ev),
        # pacs TLS-07: waived, and the waiver expired before the last run → reactivated
        _rec("TLS-07", "pacs", "viewer", Status.WAIVED if n < 2 else Status.FAIL,
             "waived until 2026-11-20" if n < 2 else "no HSTS (waiver expired on 2026-11-20: the finding counts again)",
             _waiver("2026-11-20", n < 2)),
        # pacs TLS-01: waived, expiring in 10 days
        _rec("TLS-01", "pacs", "viewer", Status.WAIVED, "waived until 2026-12-03", _waiver("2026-12-03", True)),
        # pacs LOG-01: stale logs, failing since week 0 (critical SLA breached? high: 30 days — not yet)
        _rec("LOG-01", "pacs", "*", Status.FAIL, "latest access event is 30 h old"),
        # pump TLS-04: critical fail since week 0 → SLA of 7 days breached
        _rec("TLS-04", "pump", "mgmt", Status.FAIL, "certificate expired 3 days ago",
             {"tls.leaf.not_after": (NOW - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")}),
        # pump TLS-07: could not assess in the last run, fixed from fail before
        _rec("TLS-07", "pump", "mgmt", Status.ERROR if n == 2 else Status.PASS, "could not assess: timeout"),
        # epj TLS-07: failing in week 0, fixed since week 1
        _rec("TLS-07", "epj", "web", Status.FAIL if n == 0 else Status.PASS, "HSTS missing" if n == 0 else "HSTS one year"),
    ]  # fmt: skip


def build_history(engine: Engine) -> list[int]:
    """Three weekly runs; returns the run ids (oldest first)."""
    ids = []
    for n in range(3):
        when = NOW - timedelta(weeks=2 - n)
        meta = RunMeta("0.1.0", "c" * 64, "i" * 64, "f" * 64, {}, ["r1"], "h", 1, controls=CONTROLS, systems=SYSTEMS)
        run_id = repo.start_run(engine, meta, when)
        repo.complete_run(engine, run_id, week(n), when + timedelta(minutes=5))
        ids.append(run_id)
    return ids

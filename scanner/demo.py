"""The built-in demo: the loopback lab, the five-region demo inventory, a scan with history, the HTML reports.

History: the lab is probed once (real facts). Those facts are judged at five earlier weekly times and stored as
runs labelled `demo_history: true` in their selection, with a documented, deterministic perturbation (some of
today's failures were passing earlier, some of today's passes were failing earlier) so trends and changes show.
The last run is the real scan judged now. Waivers are written with dates relative to today.
"""

from __future__ import annotations

import dataclasses
import hashlib
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from scanner.app import load_workspace, plan_scan, probe_context, run_meta, store_probes
from scanner.engine import Selection, gather_facts, judge_all
from scanner.fileio import write_private
from scanner.lab import Lab
from scanner.lab.services import ServiceLab
from scanner.models import Status
from scanner.probes.registry import fact_names, make_probes, probe_protocols
from scanner.report.render import render_reports
from scanner.resources import demo_inventory_dir
from scanner.results import FindingRecord
from scanner.store import repo
from scanner.store.db import open_store
from scanner.yamlio import dump_yaml

HISTORY_WEEKS = 5


@dataclass(frozen=True)
class DemoResult:
    store: Path
    index: Path
    exit_code: int


def demo_waivers(today: date) -> dict[str, object]:
    """Demo waivers dated relative to today: active, expiring soon (by tag), and one that expired last week."""

    def w(control: str, days_ago: int, days_left: int, **kw: str) -> dict[str, object]:
        return {
            "control": control,
            **kw,
            "approved_on": (today - timedelta(days=days_ago)).isoformat(),
            "expires": (today + timedelta(days=days_left)).isoformat(),
        }

    return {
        "waivers": [
            w(
                "TLS-07", 60, 150, system="sd-telemedicine",
                reason="Vendor ships HSTS max-age of one day; fixed in release 4.2 in the spring maintenance window.",
                approved_by="CISO Region Syddanmark",
                compensating_control="Reverse proxy redirects all plain HTTP; only reachable on the health data network.",
            ),
            w(
                "AVL-02", 340, 20, tag="epj",
                reason="Second EPJ site is being commissioned; until then one site serves all wards.",
                approved_by="Regional CISO forum",
                compensating_control="Tested restore from backup within 4 hours; downtime procedures on paper.",
            ),
            w(
                "TLS-06", 30, 90, system="nj-dictation",
                reason="Dictation appliance firmware cannot load a 2048-bit key before the Q2 upgrade.",
                approved_by="CISO Region Nordjylland",
                compensating_control="Appliance only reachable from the dictation VLAN.",
            ),
            w(
                "TLS-04", 200, -3, system="hs-pacs-web",
                reason="Certificate renewal waited on the PACS vendor's new load balancer.",
                approved_by="CISO Region Hovedstaden",
                compensating_control="Viewer only reachable from radiology workstations.",
            ),
        ]
    }  # fmt: skip


def write_demo_config(workdir: Path, ca_bundles: list[Path], today: date | None = None) -> Path:
    inventory = demo_inventory_dir()
    waivers = workdir / "waivers.yaml"
    write_private(
        waivers,
        (
            "# Written by `hcscan demo`: dates are relative to the day the demo ran.\n"
            + dump_yaml(demo_waivers(today or datetime.now(UTC).date()))
        ).encode("utf-8"),
    )
    config = {
        "store_url": "sqlite:///hcscan.db",
        "inventory": [str(inventory)],
        "controls": ["builtin"],
        "waivers": [str(waivers.resolve())],
        "scope": {"allowed_networks": ["127.0.0.0/8"]},
        "tls": {"use_system_store": True, "ca_bundles": [str(b.resolve()) for b in ca_bundles]},
        "politeness": {"timeout_s": 10},
        "report": {"out_dir": "reports"},
    }
    path = workdir / "config.yaml"
    write_private(path, ("# Written by `hcscan demo`.\n" + dump_yaml(config)).encode("utf-8"))
    return path


def _bucket(fingerprint: str) -> int:
    return int(hashlib.sha256(fingerprint.encode()).hexdigest()[:8], 16) % 100


def past_records(records: list[FindingRecord], weeks_ago: int) -> list[FindingRecord]:
    """Deterministic demo history: the further back, the more of today's fails were passing (they are new since)
    and the more of today's passes were failing (they were fixed since)."""
    out: list[FindingRecord] = []
    for r in records:
        b = _bucket(r.fingerprint)
        if r.status is Status.FAIL and b < 6 * weeks_ago:
            r = dataclasses.replace(r, status=Status.PASS, message=f"(demo history) {r.control_id} passed", evidence={})
        elif r.status is Status.PASS and b < 4 * weeks_ago:
            r = dataclasses.replace(
                r, status=Status.FAIL, message=f"(demo history) {r.control_id} failed; fixed since", evidence={}
            )
        out.append(r)
    return out


def run_demo(workdir: Path, log: Callable[[str], None] = print) -> DemoResult:
    """Start the lab in demo layout (127.0.10.x), probe every demo region once, store history + now, render."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("hcscan.db*"):
        stale.unlink()  # the demo builds its history from scratch each time
    now = datetime.now(UTC)
    log(f"starting the loopback lab in {workdir / 'lab'} …")
    with Lab(workdir / "lab", layout="demo") as lab, ServiceLab(workdir / "service-lab", layout="demo") as services:
        log(
            f"lab up: {len(lab.endpoints)} TLS/HTTP endpoints on 127.0.10.x, "
            f"{len(services.cases)} SSH/HTTP/DICOM/MLLP/FHIR services on 127.0.20.x"
        )
        config_path = write_demo_config(workdir, [lab.ca_bundle, services.ca_bundle], now.date())
        ws = load_workspace(config_path, fact_names())
        selection = Selection()
        plan, _ = plan_scan(ws, selection, probe_protocols())
        log(f"scanning {len(plan.checks)} control checks on {sum(len(t) for t in plan.targets.values())} targets …")
        engine = open_store(ws.config.resolved_store_url())
        probes = {**store_probes(engine, ws.config, lambda: now), **make_probes(ws.config)}
        facts = gather_facts(plan, probes, probe_context(ws.config), lambda k, n: log(f"  {k}: {n} target(s) done"))
    try:
        host = socket.gethostname()
        for weeks in range(HISTORY_WEEKS, 0, -1):
            when = now - timedelta(weeks=weeks)
            meta = run_meta(ws, plan, selection, host)
            meta = dataclasses.replace(meta, selection={"demo_history": True, "weeks_ago": weeks})
            run_id = repo.start_run(engine, meta, when)
            repo.complete_run(engine, run_id, past_records(judge_all(plan, facts, ws.waivers, when), weeks), when)
        log(f"demo history: {HISTORY_WEEKS} earlier weekly runs judged from the same facts (labelled demo_history)")
        run_id = repo.start_run(engine, run_meta(ws, plan, selection, host), now)
        records = judge_all(plan, facts, ws.waivers, now)
        summary = repo.complete_run(engine, run_id, records, datetime.now(UTC))
        counts = Counter(r.status.value for r in records)
        log(
            f"run #{summary.run_id}: {counts.get('pass', 0)} pass, {counts.get('fail', 0)} fail, "
            f"{counts.get('error', 0)} could not assess, {counts.get('waived', 0)} waived"
        )
        paths = render_reports(
            engine,
            ws.config.resolve(ws.config.report.out_dir),
            language=ws.config.report.language,
            sla_days=ws.config.report.sla_days,
            file_mode=ws.config.report.file_mode_bits,
        )
    finally:
        engine.dispose()
    store = Path(ws.config.resolved_store_url().removeprefix("sqlite:///"))
    return DemoResult(store=store, index=paths[-1], exit_code=1 if counts.get("fail") or counts.get("error") else 0)

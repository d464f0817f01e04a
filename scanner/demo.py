"""The built-in demo: the loopback lab, the five-region demo inventory, one scan, the HTML report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from scanner.app import load_workspace, plan_scan, run_scan
from scanner.lab import Lab
from scanner.probes.registry import fact_names, make_probes, probe_protocols
from scanner.report.render import render_reports
from scanner.resources import demo_inventory_dir
from scanner.store.db import open_store


@dataclass(frozen=True)
class DemoResult:
    store: Path
    index: Path
    exit_code: int


def write_demo_config(workdir: Path, ca_bundle: Path) -> Path:
    inventory = demo_inventory_dir()
    config = {
        "store_url": "sqlite:///hcscan.db",
        "inventory": [str(inventory)],
        "controls": ["builtin"],
        "waivers": [str(inventory / "waivers.yaml")],
        "scope": {"allowed_networks": ["127.0.0.0/8"]},
        "tls": {"use_system_store": True, "ca_bundles": [str(ca_bundle.resolve())]},
        "politeness": {"timeout_s": 10},
        "report": {"out_dir": "reports"},
    }
    path = workdir / "config.yaml"
    path.write_text("# Written by `hcscan demo`.\n" + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_demo(workdir: Path, log: Callable[[str], None] = print) -> DemoResult:
    """Start the lab in demo layout (127.0.10.x), scan every demo region, store, and render reports."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"starting the loopback lab in {workdir / 'lab'} …")
    with Lab(workdir / "lab", layout="demo") as lab:
        log(f"lab up: {len(lab.endpoints)} endpoints on 127.0.10.x")
        config_path = write_demo_config(workdir, lab.ca_bundle)
        ws = load_workspace(config_path, fact_names())
        from scanner.engine import Selection

        selection = Selection()
        plan, _ = plan_scan(ws, selection, probe_protocols())
        log(f"scanning {len(plan.checks)} control checks on {sum(len(t) for t in plan.targets.values())} targets …")
        result = run_scan(ws, plan, make_probes(), selection, progress=lambda k, n: log(f"  {k}: {n} target(s) done"))
    counts = result.summary.counts
    log(
        f"run #{result.summary.run_id}: {counts.get('pass', 0)} pass, {counts.get('fail', 0)} fail, "
        f"{counts.get('error', 0)} could not assess, {counts.get('waived', 0)} waived"
    )
    engine = open_store(ws.config.resolved_store_url())
    try:
        paths = render_reports(engine, ws.config.resolve(ws.config.report.out_dir))
    finally:
        engine.dispose()
    store = Path(ws.config.resolved_store_url().removeprefix("sqlite:///"))
    return DemoResult(store=store, index=paths[-1], exit_code=1 if counts.get("fail") or counts.get("error") else 0)

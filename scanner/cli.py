"""The `hcscan` command. The only module that knows about the terminal.

Exit codes: 0 everything assessed passed (or was waived / not applicable), 1 any fail or could-not-assess,
2 bad input (config, inventory, controls, waivers, command line) — in which case nothing was scanned or stored.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from scanner import __version__
from scanner.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_FINDINGS, EXIT_INPUT = 0, 1, 2

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def _fail_input(exc: InputError) -> NoReturn:
    # Plain echo: rich would wrap long paths, and these lines are read by people and by scripts.
    click.echo(f"error: {len(exc.problems)} problem(s) in the input; nothing was scanned or stored.", err=True)
    for problem in exc.problems:
        click.echo(str(problem), err=True)
    sys.exit(EXIT_INPUT)


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except InputError as exc:
        _fail_input(exc)


def config_option(fn: F) -> F:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="config file (default: $HCSCAN_CONFIG or ./config.yaml)",
    )(fn)


def _workspace(config_path: Path | None) -> Any:
    from scanner.app import load_workspace
    from scanner.config import find_config
    from scanner.probes.registry import fact_names

    return load_workspace(find_config(config_path), fact_names())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hcscan")
def main() -> None:
    """hcscan — compliance scanner for health-sector IT.

    Scans only what the inventory declares, judges it against YAML controls, stores findings with their
    evidence and renders region reports.
    """


@main.command()
@config_option
def validate(config_path: Path | None) -> None:
    """Check config, inventory, controls and waivers; print every problem with file:line."""
    with _user_errors():
        ws = _workspace(config_path)
        from scanner.inventory import check_scope

        scoped = check_scope(ws.inventory, list(ws.config.scope.allowed_networks))
    n_endpoints = sum(len(s.endpoints) for _, s in ws.inventory.systems.values())
    out.print(
        f"ok: {len(ws.inventory.regions)} region(s), {len(ws.inventory.systems)} system(s), {n_endpoints} "
        f"endpoint(s), {len(ws.catalog.controls)} control(s), {len(ws.waivers.items)} waiver(s)"
    )
    for key, reason in scoped.unresolved.items():
        err.print(f"warning: {key}: {reason} (will be reported as could not assess)", markup=False)


def _selection(
    region: tuple[str, ...], system: tuple[str, ...], control: tuple[str, ...], family: tuple[str, ...]
) -> Any:
    from scanner.engine import Selection

    def fs(v: tuple[str, ...]) -> frozenset[str] | None:
        return frozenset(v) if v else None

    return Selection(regions=fs(region), systems=fs(system), controls=fs(control), families=fs(family))


@main.command()
@config_option
@click.option("--region", multiple=True, help="only this region (repeatable)")
@click.option("--system", multiple=True, help="only this system (repeatable)")
@click.option("--control", multiple=True, help="only this control id (repeatable)")
@click.option("--family", multiple=True, help="only this control family (repeatable)")
@click.option("--format", "fmt", type=click.Choice([f.value for f in OutputFormat]), default="table")
def scan(
    config_path: Path | None,
    region: tuple[str, ...],
    system: tuple[str, ...],
    control: tuple[str, ...],
    family: tuple[str, ...],
    fmt: str,
) -> None:
    """Run one scan now: probe the declared endpoints, judge, store, and print a summary."""
    from scanner.app import plan_scan, run_scan
    from scanner.probes.registry import make_probes, probe_protocols

    selection = _selection(region, system, control, family)
    with _user_errors():
        ws = _workspace(config_path)
        plan, _ = plan_scan(ws, selection, probe_protocols())
    if not plan.checks:
        err.print("nothing to scan: no control applies to the selected endpoints")
        sys.exit(EXIT_OK)
    interactive = err.is_terminal and fmt == OutputFormat.TABLE
    n_targets = sum(len(t) for t in plan.targets.values())
    with _progress(interactive) as progress:
        task = (
            progress.add_task(
                f"probing {n_targets} target(s) with {', '.join(sorted(plan.targets))}", total=len(plan.targets) or 1
            )
            if progress
            else None
        )

        def advance(kind: str, n: int) -> None:
            if progress is not None and task is not None:
                progress.advance(task)
                progress.console.print(f"  {kind}: {n} target(s) done")

        result = run_scan(ws, plan, make_probes(), selection, progress=advance)
    _print_records(result.records, fmt)
    counts = Counter(r.status.value for r in result.records)
    if fmt == OutputFormat.TABLE:
        changes = ", ".join(f"{v} {k}" for k, v in sorted(result.summary.changes.items()))
        out.print(
            f"\nrun #{result.summary.run_id}: {len(result.records)} finding(s): {counts['pass']} pass, "
            f"{counts['fail']} fail, {counts['error']} could not assess, {counts['waived']} waived, "
            f"{counts['not_applicable']} not applicable ({changes})"
        )
    sys.exit(EXIT_FINDINGS if counts["fail"] or counts["error"] else EXIT_OK)


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err) as p:
        yield p


def _print_records(records: list[Any], fmt: str) -> None:
    rows = [
        {
            "status": r.status.value,
            "control": r.control_id,
            "severity": r.severity,
            "region": r.region_id,
            "system": r.system_id,
            "endpoint": r.endpoint_key,
            "message": r.message,
        }
        for r in records
    ]
    if fmt == OutputFormat.JSON:
        for r, row in zip(records, rows, strict=True):
            row["evidence"] = r.evidence
            row["fingerprint"] = r.fingerprint
        click.echo(json.dumps(rows, indent=2, default=str, ensure_ascii=False))
        return
    if fmt == OutputFormat.CSV:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["status"], quoting=csv.QUOTE_MINIMAL)
        writer.writeheader()
        writer.writerows(rows)
        return
    order = {"fail": 0, "error": 1, "waived": 2, "pass": 3, "not_applicable": 4}
    table = Table(show_lines=False, header_style="bold")
    for col in ("status", "control", "endpoint", "message"):
        table.add_column(col, overflow="fold")
    style = {"fail": "red", "error": "yellow", "pass": "green", "waived": "magenta", "not_applicable": "dim"}
    for row in sorted(rows, key=lambda r: (order[r["status"]], r["endpoint"], r["control"])):
        table.add_row(f"[{style[row['status']]}]{row['status']}[/]", row["control"], row["endpoint"], row["message"])
    out.print(table)


@main.command()
@config_option
@click.option("--region", multiple=True, help="only this region (repeatable)")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None)
def report(config_path: Path | None, region: tuple[str, ...], out_dir: Path | None) -> None:
    """Render HTML reports from the store (reads the store only)."""
    from scanner.config import find_config, load_config
    from scanner.report.render import render_reports
    from scanner.store.db import open_store

    with _user_errors():
        config = load_config(find_config(config_path))
    engine = open_store(config.resolved_store_url())
    try:
        paths = render_reports(engine, out_dir or config.resolve(config.report.out_dir), list(region) or None)
    finally:
        engine.dispose()
    for p in paths:
        out.print(f"wrote {p}")


@main.group()
def controls() -> None:
    """List, show and test controls."""


@controls.command("list")
@config_option
def controls_list(config_path: Path | None) -> None:
    """Every control in the catalogue."""
    with _user_errors():
        ws = _workspace(config_path)
    table = Table(header_style="bold")
    for col in ("id", "family", "severity", "probe", "title"):
        table.add_column(col)
    for c in ws.catalog.controls.values():
        table.add_row(c.id, c.spec.family, c.spec.severity.value, c.spec.probe, c.spec.title)
    out.print(table)


@controls.command("show")
@config_option
@click.argument("control_id")
def controls_show(config_path: Path | None, control_id: str) -> None:
    """One control in full, as loaded (with effective parameters)."""
    with _user_errors():
        ws = _workspace(config_path)
        control = ws.catalog.controls.get(control_id)
        if control is None:
            raise InputError.single(f"unknown control '{control_id}'", hint="`hcscan controls list` shows them")
    data = control.spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    data["effective_params"] = dict(control.params)
    data["defined_in"] = f"{control.source}:{control.line}"
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@controls.command("test")
@config_option
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, exists=True))
def controls_test(config_path: Path | None, files: tuple[Path, ...]) -> None:
    """Run control test cases (sample facts → expected verdict). Default: the tests/ folders of the control dirs."""
    from scanner.catalog import control_files
    from scanner.controltest import case_files, run_cases
    from scanner.probes.registry import fact_names

    with _user_errors():
        ws = _workspace(config_path)
        if files:
            targets = list(files)
        else:
            dirs = sorted({f.parent for f in control_files(ws.config.controls, ws.config.base_dir)})
            targets = case_files(dirs)
        if not targets:
            raise InputError.single("no control test files found", hint="put cases in controls/tests/*.yaml")
        results = run_cases(targets, ws.catalog, fact_names())
    failed = [r for r in results if not r.ok]
    for r in results:
        mark = "[green]ok  [/]" if r.ok else "[red]FAIL[/]"
        out.print(f"{mark} {r.case.control} {r.case.name}")
        if not r.ok:
            out.print(
                f"     {r.file}:{r.line}: expected {r.case.expect.value}"
                + (f" with message containing {r.case.message_contains!r}" if r.case.message_contains else "")
                + f", got {r.status.value}: {r.message}",
                markup=False,
            )
    out.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    sys.exit(EXIT_FINDINGS if failed else EXIT_OK)


@main.command()
@click.option("--probe", help="only this probe kind")
def facts(probe: str | None) -> None:
    """The facts each probe produces: what a control's `assert` may reference."""
    from scanner.probes.registry import fact_specs

    specs = fact_specs()
    if probe is not None and probe not in specs:
        _fail_input(InputError.single(f"unknown probe '{probe}'", hint=f"probes: {', '.join(specs)}"))
    for kind, items in specs.items():
        if probe and kind != probe:
            continue
        table = Table(title=f"probe: {kind}", header_style="bold", title_justify="left")
        for col in ("fact", "type", "description"):
            table.add_column(col, overflow="fold")
        for s in items:
            table.add_row(s.name, s.type + (" | null" if s.nullable else ""), s.description)
        out.print(table)


@main.command()
@click.argument("kind", type=click.Choice(["config", "inventory", "controls", "waivers", "control-tests"]))
def schema(kind: str) -> None:
    """Print the JSON Schema of a YAML file kind (for editors that validate as you type)."""
    from scanner.schemas import json_schema

    click.echo(json.dumps(json_schema(kind), indent=2))


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path, file_okay=False), default=Path("out/demo"))
def demo(workdir: Path) -> None:
    """Start the loopback lab, scan it with the shipped controls, store findings and write the HTML report."""
    from scanner.demo import run_demo

    started = datetime.now(UTC)
    with _user_errors():
        result = run_demo(workdir, log=lambda m: out.print(m, markup=False))
    out.print(f"\ndemo finished in {(datetime.now(UTC) - started).total_seconds():.1f} s")
    out.print(f"store:  {result.store}")
    out.print(f"report: {result.index}")


if __name__ == "__main__":  # pragma: no cover
    main()

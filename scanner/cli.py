"""The `hcscan` command. The only module that knows about the terminal.

Exit codes: 0 everything assessed passed (or was waived / not applicable), 1 any fail or could-not-assess,
2 bad input (config, inventory, controls, waivers, command line) — in which case nothing was scanned or stored,
3 the command could not complete (a full disk: a scan's run is then stored `interrupted` with the reason, and a
report or export leaves the previous files as they were).
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
from rich.text import Text

from scanner import __version__
from scanner.errors import InputError
from scanner.textsafe import clean_text

F = TypeVar("F", bound=Callable[..., Any])
EXIT_OK, EXIT_FINDINGS, EXIT_INPUT, EXIT_INCOMPLETE = 0, 1, 2, 3

out = Console(highlight=False, emoji=False)  # no ":code:" becomes an emoji (nor loads the 30 ms table)
err = Console(stderr=True, highlight=False, emoji=False)


def _plain(text: object) -> Text:
    """Text for the terminal that rich will not read as markup (``[link=…]``, ``[/]``) and that cannot move the
    cursor, clear the screen or start a new line: target text is cleaned of escapes (scanner/textsafe.py), and a
    newline is shown as ⏎ so a banner cannot print a line of its own."""
    return Text(clean_text(str(text)).replace("\n", "⏎").replace("\t", " "))


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

        with _user_errors():
            probes = make_probes(ws.config, plan.targets.keys())
        result = run_scan(ws, plan, probes, selection, progress=advance)
    _print_records(result.records, fmt)
    counts = Counter(r.status.value for r in result.records)
    if fmt == OutputFormat.TABLE:
        changes = ", ".join(f"{v} {k}" for k, v in sorted(result.summary.changes.items()))
        out.print(
            f"\nrun #{result.summary.run_id}: {len(result.records)} finding(s): {counts['pass']} pass, "
            f"{counts['fail']} fail, {counts['error']} could not assess, {counts['waived']} waived, "
            f"{counts['not_applicable']} not applicable ({changes})"
        )
    _notify(ws.config)
    sys.exit(EXIT_FINDINGS if counts["fail"] or counts["error"] else EXIT_OK)


def _notify(config: Any) -> None:
    """Send due notices (configured webhooks / SMTP), each once; delivery problems are reported, not fatal."""
    if not config.notifications.webhooks and config.notifications.smtp is None:
        return
    from scanner.notify import send_notices
    from scanner.store.db import open_store

    engine = open_store(config.resolved_store_url())
    try:
        report = send_notices(engine, config)
    finally:
        engine.dispose()
    if report.sent:
        err.print(f"sent {len(report.sent)} notice(s)", markup=False)
    for problem in report.errors:
        err.print(f"notification not delivered: {problem}", markup=False)


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
        from scanner.report.exporters.csv_format import defuse_formula  # target text never runs in a spreadsheet

        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["status"], quoting=csv.QUOTE_MINIMAL)
        writer.writeheader()
        writer.writerows({k: defuse_formula(str(v)) for k, v in row.items()} for row in rows)
        return
    order = {"fail": 0, "error": 1, "waived": 2, "pass": 3, "not_applicable": 4}
    table = Table(show_lines=False, header_style="bold")
    for col in ("status", "control", "endpoint", "message"):
        table.add_column(col, overflow="fold")
    style = {"fail": "red", "error": "yellow", "pass": "green", "waived": "magenta", "not_applicable": "dim"}
    for row in sorted(rows, key=lambda r: (order[r["status"]], r["endpoint"], r["control"])):
        table.add_row(
            Text(row["status"], style=style[row["status"]]),
            _plain(row["control"]),
            _plain(row["endpoint"]),
            _plain(row["message"]),
        )
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
        paths = render_reports(
            engine,
            out_dir or config.resolve(config.report.out_dir),
            list(region) or None,
            language=config.report.language,
            sla_days=config.report.sla_days,
            file_mode=config.report.file_mode_bits,
        )
    finally:
        engine.dispose()
    for p in paths:
        out.print(f"wrote {p}")


@main.command()
@config_option
@click.option("--format", "fmt", type=click.Choice(["json", "csv", "sarif", "junit"]), required=True)
@click.option("--region", default=None, help="only this region")
@click.option(
    "--out", "out_file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="file (default: stdout)"
)
def export(config_path: Path | None, fmt: str, region: str | None, out_file: Path | None) -> None:
    """Export the latest findings as JSON, CSV, SARIF 2.1.0 or JUnit XML (schema: docs/export.md)."""
    from scanner.config import find_config, load_config
    from scanner.report.exporters import EXPORTERS, ExportFormat, ExportInput
    from scanner.store.db import open_store

    with _user_errors():
        config = load_config(find_config(config_path))
    engine = open_store(config.resolved_store_url())
    try:
        data = ExportInput.from_store(engine, datetime.now(UTC), __version__, region)
    finally:
        engine.dispose()
    text = EXPORTERS[ExportFormat(fmt)].export(data)
    if out_file is None:
        sys.stdout.write(text)
    else:
        from scanner.fileio import write_output

        write_output(out_file, text.encode("utf-8"), config.report.file_mode_bits)  # never through a symlink
        err.print(f"wrote {len(data.findings)} finding(s) to {out_file}", markup=False)


@main.command()
@config_option
def notify(config_path: Path | None) -> None:
    """Send due notices now (regressions, new critical, SLA breaches, expiring waivers), each once."""
    from scanner.config import find_config, load_config

    with _user_errors():
        config = load_config(find_config(config_path))
    if not config.notifications.webhooks and config.notifications.smtp is None:
        err.print("no notifications configured (notifications.webhooks / notifications.smtp)")
        return
    _notify(config)


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


@main.group()
def data() -> None:
    """Version data (release cycles, end-of-life dates, CISA KEV) that the patching controls judge by."""


def _version_data_target(config_path: Path | None) -> tuple[Any, Path | None]:
    """(config or None, the configured version-data path or None for the shipped data)."""
    from scanner.config import find_config, load_config

    try:
        cfg = load_config(find_config(config_path))
    except InputError:
        if config_path is not None:
            raise
        return None, None
    path = cfg.exposure.version_data.path
    return cfg, (cfg.resolve(path) if path is not None else None)


def _version_data_output(config_path: Path | None, out: Path | None) -> tuple[Any, Path]:
    """(config or None, the file `data import` / `data update` writes: --out, else the configured path)."""
    cfg, configured = _version_data_target(config_path)
    target = out or configured
    if target is None:
        raise InputError.single(
            "nowhere to write the version data",
            hint="set exposure.version_data.path in config.yaml (scans then use it) or pass --out FILE",
        )
    return cfg, target


@data.command("info")
@config_option
@click.option("--json", "as_json", is_flag=True, help="print as JSON")
def data_info(config_path: Path | None, as_json: bool) -> None:
    """Show which version data is used, its date and age, and what it covers."""
    from scanner.versiondata import load_version_data

    with _user_errors():
        cfg, path = _version_data_target(config_path)
        vd = load_version_data(path)
    info = vd.info()
    age = (datetime.now(UTC).date() - vd.file.generated).days
    max_age = cfg.exposure.version_data.max_age_days if cfg is not None else None
    info.update(age_days=age, max_age_days=max_age)
    today = datetime.now(UTC).date()
    info["product_list"] = [
        {
            "id": p.id,
            "name": p.name,
            "cycles": len(p.cycles),
            "as_of": p.as_of.isoformat(),
            "age_days": (today - p.as_of).days,
            "support": p.support,
            "kev_entries": len(vd.kev_for(p.id)),
            "kev_unverified": sum(1 for k in vd.kev_for(p.id) if k.unverified),
            "source": p.source,
            "version_endpoints": [f"GET {e.path}" for e in p.version_endpoints],
        }
        for p in vd.file.products
    ]
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    stale = (
        f" — older than the configured {max_age} days (PAT-06 fails)" if max_age is not None and age > max_age else ""
    )
    out.print(f"version data {info['data_version']} from {info['generated']} ({age} days old){stale}", markup=False)
    out.print(f"file: {info['path']}", markup=False)
    out.print(f"{info['products']} products, {info['kev_entries']} known-exploited CVE entries", markup=False)
    snap = info.get("kev_snapshot")
    if snap:
        kev_age = (today - datetime.fromisoformat(snap["date_released"]).date()).days
        kev_stale = f" — older than the configured {max_age} days" if max_age is not None and kev_age > max_age else ""
        out.print(
            f"CISA KEV catalogue {snap['catalog_version']} of {snap['date_released']} ({kev_age} days old){kev_stale}",
            markup=False,
        )
    else:
        out.print("no dated CISA KEV snapshot: PAT-05 cannot judge known exploitation", markup=False)
    table = Table(header_style="bold")
    for col in ("product", "support", "cycles", "data as of", "KEV entries", "source"):
        table.add_column(col, no_wrap=col in ("product", "data as of"))
    for p in info["product_list"]:
        kev = str(p["kev_entries"]) + (f" ({p['kev_unverified']} unchecked)" if p["kev_unverified"] else "")
        old = max_age is not None and p["age_days"] > max_age
        as_of = f"{p['as_of']} ({p['age_days']} d{', too old' if old else ''})"
        table.add_row(p["id"], p["support"], str(p["cycles"]), as_of, kev, p["source"])
    out.print(table)
    readable = [
        f"{p['id']} ({', '.join(p['version_endpoints'])})" for p in info["product_list"] if p["version_endpoints"]
    ]
    if readable:
        out.print(
            "read from the product's own version endpoint when nmap cannot see the version (declare the product "
            f"under software: without a version): {', '.join(readable)}",
            markup=False,
        )


@data.command("import")
@config_option
@click.option(
    "--endoflife",
    "endoflife",
    multiple=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="endoflife.date API export of one product, named <product>.json (repeatable)",
)
@click.option("--kev", type=click.Path(path_type=Path, dir_okay=False), help="CISA KEV catalogue JSON")
@click.option(
    "--nvd", multiple=True, type=click.Path(path_type=Path, dir_okay=False), help="NVD CVE JSON 2.0 feed (repeatable)"
)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="file to write (default: exposure.version_data.path of the config)",
)
def data_import(
    config_path: Path | None, endoflife: tuple[Path, ...], kev: Path | None, nvd: tuple[Path, ...], out: Path | None
) -> None:
    """Refresh the version data from downloaded exports; the file is replaced atomically."""
    from scanner.versiondata import load_version_data
    from scanner.versiondata.importer import import_data

    with _user_errors():
        _, target = _version_data_output(config_path, out)
        if not endoflife and kev is None:
            raise InputError.single("nothing to import", hint="give --endoflife FILE and/or --kev FILE --nvd FILE")
        base = load_version_data(target if target.is_file() else None)  # first import: start from the shipped data
        result = import_data(base, target, endoflife=list(endoflife), kev=kev, nvd=list(nvd))
    out_info = result.info()
    click.echo(
        f"wrote {target}: data {out_info['data_version']}, {out_info['products']} products, "
        f"{out_info['kev_entries']} known-exploited CVE entries"
    )


@data.command("update")
@config_option
@click.option("--dry-run", is_flag=True, help="read and check every source, show what would change, write nothing")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    help="file to write (default: exposure.version_data.path of the config)",
)
def data_update(config_path: Path | None, dry_run: bool, out: Path | None) -> None:
    """Refresh the version data online: endoflife.date, CISA KEV and NVD (exposure.version_data.update).

    Every answer must be good, or nothing changes (exit 3). The file is replaced atomically; the previous one is
    kept as <file>.prev."""
    from scanner.textsafe import clean_text  # answers from the network are shown cleaned, like target text
    from scanner.versiondata.update import UpdateError, run_update

    with _user_errors():
        cfg, target = _version_data_output(config_path, out)
        try:
            result = run_update(cfg, target, dry_run=dry_run, log=lambda m: click.echo(clean_text(m), err=True))
        except UpdateError as exc:
            click.echo(f"error: data update: {clean_text(str(exc))}", err=True)
            click.echo(f"the version data was not changed: {target}", err=True)
            sys.exit(EXIT_INCOMPLETE)
    for line in result.diff.lines():
        click.echo(clean_text(line))
    for note in result.left_out:
        click.echo(clean_text(f"not taken from endoflife.date: {note}"))
    if result.not_online:
        click.echo(f"kept as they were (not on endoflife.date): {', '.join(result.not_online)}")
    info = result.data.info()
    summary = (
        f"{len(result.refreshed)} products from endoflife.date, KEV catalogue {result.kev_catalogue} "
        f"({result.kev_listed} entries), {result.nvd_requests} NVD records; {info['kev_entries']} KEV entries in the data"
    )
    if not result.written:
        click.echo(f"dry run: {summary}; nothing written to {target}")
        return
    kept = f" (previous file kept as {result.previous})" if result.previous is not None else ""
    click.echo(f"wrote {target}: data {info['data_version']}, {summary}{kept}")


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
            volatile = " Volatile: a reading kept as evidence, not part of the verdict's digest." if s.volatile else ""
            table.add_row(s.name, s.type + (" | null" if s.nullable else ""), s.description + volatile)
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


@main.group(invoke_without_command=True)
@config_option
@click.option("--once", is_flag=True, help="run every due job once and exit (for cron/systemd timers)")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", help="log lines on stderr")
@click.pass_context
def agent(ctx: click.Context, config_path: Path | None, once: bool, log_format: str) -> None:
    """Run the scheduled agent: the jobs under `schedules:` in config.yaml, until SIGTERM/SIGINT."""
    ctx.obj = config_path
    if ctx.invoked_subcommand is not None:
        return
    import logging

    from scanner.agent import JsonLogFormatter, TextLogFormatter, start_agent
    from scanner.config import find_config

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else TextLogFormatter())
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("hcscan").setLevel(logging.INFO)
    with _user_errors():
        outcome = start_agent(find_config(config_path), once)
    sys.exit(outcome.exit_code)


@agent.command("status")
@config_option
@click.option(
    "--format", "fmt", type=click.Choice([OutputFormat.TABLE.value, OutputFormat.JSON.value]), default="table"
)
@click.pass_context
def agent_status_cmd(ctx: click.Context, config_path: Path | None, fmt: str) -> None:
    """Each job's next run time and the last slot it ran, per scope, with the outcome."""
    from dataclasses import asdict

    from scanner.agent import agent_status
    from scanner.config import find_config

    with _user_errors():
        rows = agent_status(find_config(config_path or ctx.obj))
    if fmt == OutputFormat.JSON:
        click.echo(json.dumps([asdict(r) for r in rows], indent=2, default=str, ensure_ascii=False))
        return

    def when(value: datetime | None, tz: str) -> str:
        from zoneinfo import ZoneInfo

        return "-" if value is None else value.astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S %Z")

    table = Table(header_style="bold")
    for col in ("job", "kind", "cron", "next run", "scope", "last slot", "state", "run", "holder"):
        table.add_column(col, overflow="fold")
    for r in rows:
        run = "-" if r.run_id is None else f"#{r.run_id} {r.run_status}"
        table.add_row(
            r.job_id, r.kind, r.cron, when(r.next_run, r.timezone), r.scope or "-", when(r.last_slot, r.timezone),
            _plain(r.state or r.detail), run, r.holder or "-",
        )  # fmt: skip
    out.print(table)


def _pct_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")


@main.command()
@config_option
@click.option("--region", multiple=True, help="only this region (repeatable)")
@click.option("--system", multiple=True, help="only this system (repeatable)")
@click.option(
    "--format", "fmt", type=click.Choice([OutputFormat.TABLE.value, OutputFormat.JSON.value]), default="table"
)
def sample(config_path: Path | None, region: tuple[str, ...], system: tuple[str, ...], fmt: str) -> None:
    """Take one round of availability samples now and store it (the agent runs this every interval).

    Exit 0 when every endpoint answered, 1 when any was down or could not be sampled.
    """
    from scanner.app_availability import run_sample

    with _user_errors():
        ws = _workspace(config_path)
        result = run_sample(ws, _selection(region, system, (), ()))
    if fmt == OutputFormat.JSON:
        rows = [
            {
                "endpoint": s.key,
                "method": s.method,
                "up": s.up,
                "latency_ms": s.latency_ms,
                "reason": s.reason,
                "detail": s.detail,
                "attempts": s.attempts,
            }
            for s in sorted(result.samples, key=lambda s: s.key)
        ]
        click.echo(
            json.dumps(
                {"round": result.round_id, "t": result.t.isoformat(), "samples": rows, "unresolved": result.unresolved},
                indent=2,
                ensure_ascii=False,
            )
        )
    else:
        for s in sorted(result.samples, key=lambda s: s.key):
            if s.up is not True:
                state = "unknown" if s.up is None else "down"
                out.print(Text(state, style="red"), _plain(f"{s.key} ({s.method}): {s.reason}: {s.detail}"))
        for key, why in result.unresolved.items():
            out.print(Text("unknown", style="yellow"), _plain(f"{key}: {why}"))
        out.print(
            f"round #{result.round_id} at {result.t.isoformat(timespec='seconds')}: {result.n_up} up, "
            f"{result.n_down} down, {result.n_unknown + len(result.unresolved)} unknown"
            + (f", {result.n_rejected} ignored (not newer than stored samples)" if result.n_rejected else "")
        )
    bad = result.n_down or result.n_unknown or result.unresolved
    sys.exit(EXIT_FINDINGS if bad else EXIT_OK)


@main.command()
@config_option
@click.option("--region", multiple=True, help="only this region (repeatable)")
@click.option("--system", multiple=True, help="only this system (repeatable)")
@click.option("--window", "windows", multiple=True, help="window like 24h, 7d, 30d (repeatable; default all three)")
@click.option(
    "--format", "fmt", type=click.Choice([OutputFormat.TABLE.value, OutputFormat.JSON.value]), default="table"
)
def availability(
    config_path: Path | None, region: tuple[str, ...], system: tuple[str, ...], windows: tuple[str, ...], fmt: str
) -> None:
    """Measured availability per endpoint, and per redundant service (up while any instance answers), over rolling
    windows against its SLA target (reads the store only).

    Each figure is lower–upper %: lower counts unknown time (no sample) as down, upper as up. Verdict per window:
    pass if lower ≥ target, fail if upper < target, otherwise could not assess (inconclusive).
    """
    from scanner.app_availability import DEFAULT_WINDOWS, availability_table
    from scanner.availability import parse_window

    for w in windows:
        try:
            parse_window(w)
        except ValueError as exc:
            _fail_input(InputError.single(str(exc), hint="e.g. --window 30d"))
    with _user_errors():
        ws = _workspace(config_path)
        table = availability_table(ws, _selection(region, system, (), ()), windows or DEFAULT_WINDOWS)
    if fmt == OutputFormat.JSON:
        data = {
            "now": table.now.isoformat(),
            "heartbeat": {
                "rounds": table.heartbeat_rounds,
                "coverage_percent": table.heartbeat_coverage,
                "last_round_at": table.last_round_at.isoformat() if table.last_round_at else None,
            },
            "endpoints": [
                {
                    "region": r.region_id,
                    "system": r.system_id,
                    "endpoint": r.endpoint_key,
                    "service_instances": r.instances,
                    "criticality": r.criticality,
                    "target_percent": r.target,
                    "target_source": r.target_source,
                    "windows": [
                        {
                            "window": f.window,
                            "lower_percent": f.lower,
                            "upper_percent": f.upper,
                            "coverage_percent": f.coverage,
                            "verdict": f.verdict.value,
                            "outages": f.outages,
                            "down_minutes": f.down_minutes,
                            "p95_ms": list(f.p95_ms) if f.p95_ms else None,
                        }
                        for f in r.windows
                    ],
                    "outages": [o.as_json() for o in r.outages],
                    "last_sample_at": r.last_sample_at.isoformat() if r.last_sample_at else None,
                }
                for r in table.rows
            ],
        }
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    style = {"pass": "green", "fail": "red", "error": "yellow"}
    grid = Table(header_style="bold")
    for col in ("system", "endpoint", "crit.", "target %"):
        grid.add_column(col, overflow="fold")
    for f in table.rows[0].windows if table.rows else ():
        grid.add_column(f"{f.window} % (coverage)")
    grid.add_column("outages (longest window)")
    grid.add_column("p95 ms")
    for r in table.rows:
        name = f"* (service: any of {r.instances})" if r.instances else r.endpoint_key.split("/", 1)[1]
        cells = [r.system_id, name, r.criticality, _pct_text(r.target)]
        for f in r.windows:
            text = f"{_pct_text(f.lower)}–{_pct_text(f.upper)} ({_pct_text(f.coverage)})"
            cells.append(f"[{style.get(f.verdict.value, 'white')}]{text}[/]")
        last = r.windows[-1] if r.windows else None
        cells.append(f"{last.outages}, {last.down_minutes:.1f} min down" if last else "")
        p95 = last.p95_ms if last else None
        cells.append("—" if p95 is None else (f"≤ {p95[1]:g}" if p95[1] is not None else f"> {p95[0]:g}"))
        grid.add_row(*cells)
    out.print(grid)
    beat = table.last_round_at.isoformat(timespec="seconds") if table.last_round_at else "never"
    out.print(
        f"sampler heartbeat: {table.heartbeat_rounds} round(s), {table.heartbeat_coverage:.2f} % of the longest "
        f"window covered; last round {beat}. Green pass, red fail, yellow inconclusive (unknown time decides)."
    )


def entry() -> None:
    """The console entry point: a user error raised anywhere below (e.g. an unreachable store) exits 2; a full disk
    or an output file that cannot be written exits 3 with one line saying which."""
    from scanner.fileio import DiskFull, OutputError

    try:
        main()
    except InputError as exc:
        _fail_input(exc)
    except (DiskFull, OutputError) as exc:
        click.echo(f"error: {exc}", err=True)  # one line, no traceback: it is the machine's state, not a bug
        sys.exit(EXIT_INCOMPLETE)


if __name__ == "__main__":  # pragma: no cover
    entry()

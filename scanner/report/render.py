"""Rendering: view models → self-contained HTML files (autoescaped; nothing loaded from the network)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import Engine

from scanner import __version__
from scanner.fileio import DEFAULT_FILE_MODE, write_output
from scanner.report.i18n import translator
from scanner.report.views import RegionPage, build_trend, region_page
from scanner.resources import templates_dir
from scanner.store import queries
from scanner.textsafe import clean_text


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(templates_dir())),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        # Target text is cleaned before it is stored; a store written by an older hcscan may still hold a lone
        # surrogate or an escape character, and one such string must not stop every report.
        finalize=lambda v: clean_text(v, sys.maxsize) if isinstance(v, str) else v,
    )
    env.filters["dt"] = lambda d: d.strftime("%Y-%m-%d %H:%M UTC") if d else "—"
    env.filters["day"] = lambda d: d.strftime("%Y-%m-%d") if d else "—"
    env.filters["pct"] = lambda v: "—" if v is None else f"{v:.2f} %"
    env.filters["pretty_json"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    return env


def render_reports(
    engine: Engine,
    out_dir: Path,
    regions: list[str] | None = None,
    language: str = "en",
    sla_days: dict[str, int] | None = None,
    now: datetime | None = None,
    file_mode: int = DEFAULT_FILE_MODE,
) -> list[Path]:
    """Write region-<id>.html for each region (default: all with findings) and index.html. Returns the paths.

    Pages are rendered one region at a time so memory stays bounded by the largest region. Each file is written
    whole or not at all (scanner/fileio.py: mode `file_mode`, never through a symlink); a file that cannot be
    written (a full disk) raises OutputError and leaves that file's previous version in place.
    """
    now = now or datetime.now(UTC)
    env = _env()
    wanted = regions if regions is not None else queries.regions_with_findings(engine)
    common: dict[str, Any] = {"version": __version__, "generated_at": now, "t": translator(language), "lang": language}
    region_tpl = env.get_template("region.html.j2")
    summaries: list[dict[str, Any]] = []
    written: list[Path] = []
    for region_id in wanted:
        page: RegionPage = region_page(engine, region_id, now, sla_days)
        path = out_dir / f"region-{page.region_id}.html"
        write_output(path, region_tpl.render(page=page, **common).encode("utf-8"), file_mode)
        written.append(path)
        spark = build_trend(queries.region_history(engine, region_id, 12), width=120, height=28, pad=3)
        summaries.append(
            {
                "region_id": page.region_id,
                "region_name": page.region_name,
                "score": page.score,
                "spark": spark,
                "crit_high_open": page.crit_high_open,
                "systems": len(page.systems),
                "systems_not_assessed": page.systems_not_assessed,
                "waivers_expiring_30": page.waivers_expiring_30,
                "overdue": len(page.overdue),
                "formula": page.formula,
                "latest": page.runs[0].started_at if page.runs else None,
            }
        )
        del page
    index = out_dir / "index.html"
    write_output(index, env.get_template("index.html.j2").render(pages=summaries, **common).encode("utf-8"), file_mode)
    written.append(index)
    return written

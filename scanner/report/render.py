"""Rendering: view models → self-contained HTML files (autoescaped; nothing loaded from the network)."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import Engine

from scanner import __version__
from scanner.report.views import RegionPage, region_page
from scanner.resources import templates_dir
from scanner.store import queries


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(templates_dir())),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dt"] = lambda d: d.strftime("%Y-%m-%d %H:%M UTC") if d else "—"
    env.filters["pretty_json"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str, ensure_ascii=False)
    return env


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def render_reports(engine: Engine, out_dir: Path, regions: list[str] | None = None) -> list[Path]:
    """Write region-<id>.html for each region (default: all with findings) and index.html. Returns the paths."""
    now = datetime.now(UTC)
    env = _env()
    wanted = regions if regions is not None else queries.regions_with_findings(engine)
    pages: list[RegionPage] = [region_page(engine, r, now) for r in wanted]
    written: list[Path] = []
    common: dict[str, Any] = {"version": __version__, "generated_at": now}
    for page in pages:
        path = out_dir / f"region-{page.region_id}.html"
        _write_atomic(path, env.get_template("region.html.j2").render(page=page, **common))
        written.append(path)
    index = out_dir / "index.html"
    _write_atomic(index, env.get_template("index.html.j2").render(pages=pages, **common))
    written.append(index)
    return written

"""Where the built-in controls, templates and demo inventory are: in the wheel, or in the source tree."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_SOURCE_ROOT = _PACKAGE.parent


def _data(name: str, source_relative: str) -> Path:
    packaged = _PACKAGE / "_data" / name
    if packaged.is_dir():
        return packaged
    return _SOURCE_ROOT / source_relative


def builtin_controls_dir() -> Path:
    return _data("controls", "controls")


def templates_dir() -> Path:
    return _data("templates", "reports/templates")


def demo_inventory_dir() -> Path:
    return _data("inventory", "inventory")

"""Small helpers shared by tests: build a throwaway workspace (config + inventory) on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class _NoAliases(yaml.SafeDumper):
    """hcscan refuses YAML anchors/aliases, so test files are written out in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump(data, Dumper=_NoAliases, sort_keys=False), encoding="utf-8")
    return path


def system(
    sid: str, host: str, port: int, protocol: str = "https", server_name: str | None = None, **extra: Any
) -> dict[str, Any]:
    ep: dict[str, Any] = {"id": "ep", "host": host, "port": port, "protocol": protocol}
    if server_name:
        ep["server_name"] = server_name
    return {
        "id": sid,
        "name": f"System {sid}",
        "owner": "Test team",
        "criticality": extra.pop("criticality", "high"),
        "endpoints": [ep],
        **extra,
    }


def make_workspace(
    root: Path,
    systems: list[dict[str, Any]],
    *,
    region: str = "testregion",
    ca_bundles: list[str] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Write config.yaml + inventory/<region>.yaml under root; return the config path."""
    write_yaml(
        root / "inventory" / f"{region}.yaml",
        {"region": {"id": region, "name": f"Region {region}"}, "systems": systems},
    )
    config: dict[str, Any] = {
        "store_url": "sqlite:///hcscan.db",
        "inventory": ["inventory"],
        "controls": ["builtin"],
        "scope": {"allowed_networks": ["127.0.0.0/8"]},
        "tls": {"use_system_store": False, "ca_bundles": ca_bundles or []},
        "politeness": {"timeout_s": 3},
        "report": {"out_dir": "reports"},
    }
    config.update(extra_config or {})
    return write_yaml(root / "config.yaml", config)

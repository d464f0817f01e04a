"""The probe kinds hcscan has: one explicit table from kind to implementation, each imported when first used.

Loading a catalogue needs every kind's fact names and planning needs every kind's protocols, but a scan runs only
the kinds it planned (a TLS scan does not need DICOM associations, log backends or the version data). Those names
and protocols form the probe index: read from the implementations once per version of hcscan's probe sources and
kept in the user's cache directory (a JSON file named by the SHA-256 of those sources), so a start-up imports only
the probe modules it will run. A cache that is missing, unreadable, not the user's own or writable by others is
ignored (the index is built from the implementations, as without a cache).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import stat
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from scanner import __version__
from scanner.probes.base import FactSpec, Probe

if TYPE_CHECKING:
    from scanner.config import Config
    from scanner.probes.service import ServiceSettings

# kind → "module:Class"; the kind must be the class's own `kind` (tests/probes/test_registry.py checks).
PROBE_CLASS_PATHS: dict[str, str] = {
    "tls": "scanner.probes.tls:TlsProbe",
    "http": "scanner.probes.http:HttpProbe",
    "auditlog": "scanner.probes.auditlog:AuditLogProbe",
    "logship": "scanner.probes.auditlog:LogShippingProbe",
    "service": "scanner.probes.service:ServiceProbe",
    "dicom": "scanner.probes.exposure:DicomProbe",
    "mllp": "scanner.probes.exposure:MllpProbe",
    "fhir": "scanner.probes.exposure:FhirProbe",
    "ntp": "scanner.probes.ntp:NtpProbe",
    "uptime": "scanner.probes.uptime:UptimeProbe",
}
SERVICE_KIND = "service"

# Kinds whose facts come from the store, not the network (`sla`: SLA figures from stored availability samples).
# Their implementations need an open store, so the app adds them (scanner.app.store_probes); documented here so
# controls that use them validate. Kind → module holding SLA_FACTS and SLA_PROTOCOLS.
STORE_FACT_MODULES: dict[str, str] = {"sla": "scanner.probes.availability"}
STORE_KINDS: frozenset[str] = frozenset(STORE_FACT_MODULES)

_INDEX_FORMAT = 1
_PACKAGE = Path(__file__).resolve().parent.parent  # scanner/


def probe_class(kind: str) -> type[Probe]:
    """The implementation of a probe kind, imported now."""
    module, name = PROBE_CLASS_PATHS[kind].split(":")
    return cast("type[Probe]", getattr(importlib.import_module(module), name))


def _store_kind(kind: str) -> tuple[tuple[FactSpec, ...], frozenset[str]]:
    module = importlib.import_module(STORE_FACT_MODULES[kind])
    return tuple(module.SLA_FACTS), frozenset(module.SLA_PROTOCOLS)


def make_probes(config: Config | None = None, kinds: Collection[str] | None = None) -> dict[str, Probe]:
    """One probe of each kind, or of each of `kinds` (the plan's: a TLS-only scan imports no other probe and does
    not load the version data). `config` supplies the service probe's sweep ports and version data (without it: the
    defaults and the shipped data). Raises InputError for unreadable version data."""
    wanted = PROBE_CLASS_PATHS.keys() if kinds is None else set(kinds) & PROBE_CLASS_PATHS.keys()
    probes: dict[str, Probe] = {kind: probe_class(kind)() for kind in wanted if kind != SERVICE_KIND}
    if SERVICE_KIND in wanted:
        from scanner.probes.service import ServiceProbe

        probes[SERVICE_KIND] = ServiceProbe(service_settings(config))
    return probes


def service_settings(config: Config | None) -> ServiceSettings:
    from scanner.exposure_config import ExposureConfig
    from scanner.probes.service import ServiceSettings
    from scanner.versiondata import load_version_data

    exposure = config.exposure if config is not None else ExposureConfig()
    path = exposure.version_data.path
    data = load_version_data(config.resolve(path) if config is not None and path is not None else path)
    return ServiceSettings(
        version_data=data,
        sweep_ports=tuple(exposure.sweep_ports),
        version_intensity=exposure.version_intensity,
        max_data_age_days=exposure.version_data.max_age_days,
    )


def fact_specs() -> dict[str, list[FactSpec]]:
    """Probe kind → the facts it documents (what a control's assert may reference). Imports every probe."""
    specs = {kind: list(probe_class(kind).facts) for kind in PROBE_CLASS_PATHS}
    specs.update({kind: list(_store_kind(kind)[0]) for kind in STORE_FACT_MODULES})
    return specs


def fact_names() -> Mapping[str, frozenset[str]]:
    """Probe kind → the names of its facts (the probe index: no probe module is imported when it is cached)."""
    return {kind: frozenset(names) for kind, names in _index()["facts"].items()}


def probe_protocols() -> Mapping[str, frozenset[str]]:
    """Probe kind → the endpoint protocols it can look at (from the probe index)."""
    return {kind: frozenset(protocols) for kind, protocols in _index()["protocols"].items()}


def build_index() -> dict[str, Any]:
    """The probe index from the implementations themselves (imports every probe module)."""
    protocols = {kind: sorted(probe_class(kind).protocols) for kind in PROBE_CLASS_PATHS}
    protocols.update({kind: sorted(_store_kind(kind)[1]) for kind in STORE_FACT_MODULES})
    facts = {kind: sorted({spec.name for spec in specs}) for kind, specs in fact_specs().items()}
    return {"format": _INDEX_FORMAT, "facts": facts, "protocols": protocols}


def sources_digest() -> str | None:
    """SHA-256 of what the index is built from: hcscan's version and its probe and model sources (None when the
    sources are not there to read, e.g. a frozen build: the index is then always built)."""
    digest = hashlib.sha256(f"{_INDEX_FORMAT}\0{__version__}\0".encode())
    try:
        files = sorted([*(_PACKAGE / "probes").rglob("*.py"), _PACKAGE / "models.py"])
        for file in files:
            digest.update(str(file.relative_to(_PACKAGE)).encode() + b"\0" + file.read_bytes() + b"\0")
    except OSError:
        return None
    return digest.hexdigest() if files else None


def cache_dir() -> Path | None:
    """HCSCAN_CACHE_DIR (empty: no cache), else $XDG_CACHE_HOME/hcscan, else ~/.cache/hcscan."""
    configured = os.environ.get("HCSCAN_CACHE_DIR")
    if configured is not None:
        return Path(configured) if configured else None
    xdg = os.environ.get("XDG_CACHE_HOME")
    try:
        return (Path(xdg) if xdg else Path.home() / ".cache") / "hcscan"
    except RuntimeError:  # no home directory
        return None


def _trusted(path: Path) -> bool:
    """The user's own, and neither it nor its directory writable by anyone else."""
    for item in (path.parent, path):
        info = item.lstat()
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or stat.S_ISLNK(info.st_mode):
            return False
    return True


def _valid(index: Any) -> bool:
    if not isinstance(index, dict) or index.get("format") != _INDEX_FORMAT:
        return False
    parts = [index.get("facts"), index.get("protocols")]
    return all(
        isinstance(part, dict)
        and set(part) == set(PROBE_CLASS_PATHS) | STORE_KINDS
        and all(isinstance(v, list) and all(isinstance(s, str) for s in v) for v in part.values())
        for part in parts
    )


@functools.cache
def _index() -> dict[str, Any]:
    folder, key = cache_dir(), sources_digest()
    if folder is None or key is None:
        return build_index()
    path = folder / f"probe-index-{key}.json"
    try:
        if _trusted(path):
            cached = json.loads(path.read_text(encoding="utf-8"))
            if _valid(cached):
                return cast("dict[str, Any]", cached)
    except (OSError, ValueError, RecursionError):
        pass  # not there yet, or unreadable: built below
    index = build_index()
    try:
        from scanner.fileio import write_private

        write_private(path, json.dumps(index, sort_keys=True).encode())
        for old in folder.glob("probe-index-*.json"):  # indexes of earlier sources are never read again
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only home: every start builds the index, as without a cache
    return index

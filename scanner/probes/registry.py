"""The probe kinds hcscan has: one explicit table from kind to implementation."""

from __future__ import annotations

from collections.abc import Mapping

from scanner.probes.base import FactSpec, Probe
from scanner.probes.http import HttpProbe
from scanner.probes.tls import TlsProbe

PROBE_CLASSES: dict[str, type[Probe]] = {
    TlsProbe.kind: TlsProbe,
    HttpProbe.kind: HttpProbe,
}


def make_probes() -> dict[str, Probe]:
    return {kind: cls() for kind, cls in PROBE_CLASSES.items()}


def fact_specs() -> dict[str, list[FactSpec]]:
    """Probe kind → the facts it documents (what a control's assert may reference)."""
    return {kind: list(cls.facts) for kind, cls in PROBE_CLASSES.items()}


def fact_names() -> Mapping[str, frozenset[str]]:
    return {kind: frozenset(spec.name for spec in specs) for kind, specs in fact_specs().items()}


def probe_protocols() -> Mapping[str, frozenset[str]]:
    return {kind: cls.protocols for kind, cls in PROBE_CLASSES.items()}

"""The probe kinds hcscan has: one explicit table from kind to implementation."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from scanner.config import Config
from scanner.probes.auditlog import AuditLogProbe, LogShippingProbe
from scanner.probes.availability import SLA_FACTS, SLA_KIND, SLA_PROTOCOLS
from scanner.probes.base import FactSpec, Probe
from scanner.probes.exposure import DicomProbe, FhirProbe, MllpProbe
from scanner.probes.http import HttpProbe
from scanner.probes.ntp import NtpProbe
from scanner.probes.service import ServiceProbe, ServiceSettings
from scanner.probes.tls import TlsProbe
from scanner.probes.uptime import UptimeProbe

PROBE_CLASSES: dict[str, type[Probe]] = {
    TlsProbe.kind: TlsProbe,
    HttpProbe.kind: HttpProbe,
    AuditLogProbe.kind: AuditLogProbe,
    LogShippingProbe.kind: LogShippingProbe,
    ServiceProbe.kind: ServiceProbe,
    DicomProbe.kind: DicomProbe,
    MllpProbe.kind: MllpProbe,
    FhirProbe.kind: FhirProbe,
    NtpProbe.kind: NtpProbe,
    UptimeProbe.kind: UptimeProbe,
}

# Kinds whose facts come from the store, not the network (`sla`: SLA figures from stored availability samples).
# Their implementations need an open store, so the app adds them (scanner.app.store_probes); documented here so
# controls that use them validate. Kind → (facts, protocols).
STORE_FACT_KINDS: dict[str, tuple[tuple[FactSpec, ...], frozenset[str]]] = {
    SLA_KIND: (SLA_FACTS, SLA_PROTOCOLS),
}


def make_probes(config: Config | None = None, kinds: Collection[str] | None = None) -> dict[str, Probe]:
    """One probe of each kind, or of each of `kinds` (the plan's: a TLS-only scan does not load the version data).
    `config` supplies the service probe's sweep ports and version data (without it: the defaults and the shipped
    data). Raises InputError for unreadable version data."""
    wanted = PROBE_CLASSES.keys() if kinds is None else set(kinds) & PROBE_CLASSES.keys()
    probes: dict[str, Probe] = {kind: PROBE_CLASSES[kind]() for kind in wanted if kind != ServiceProbe.kind}
    if ServiceProbe.kind in wanted:
        probes[ServiceProbe.kind] = ServiceProbe(service_settings(config))
    return probes


def service_settings(config: Config | None) -> ServiceSettings:
    from scanner.exposure_config import ExposureConfig
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
    """Probe kind → the facts it documents (what a control's assert may reference)."""
    specs = {kind: list(cls.facts) for kind, cls in PROBE_CLASSES.items()}
    specs.update({kind: list(facts) for kind, (facts, _) in STORE_FACT_KINDS.items()})
    return specs


def fact_names() -> Mapping[str, frozenset[str]]:
    return {kind: frozenset(spec.name for spec in specs) for kind, specs in fact_specs().items()}


def probe_protocols() -> Mapping[str, frozenset[str]]:
    protocols = {kind: cls.protocols for kind, cls in PROBE_CLASSES.items()}
    protocols.update({kind: protos for kind, (_, protos) in STORE_FACT_KINDS.items()})
    return protocols

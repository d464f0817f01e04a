"""Audit-log probes: ask the place where a system's access log lands (`auditlog`), and check how the
log is shipped there (`logship`). Both look at systems, not endpoints (SYSTEM_LEVEL targets), and read
the system's `audit_log` declaration from the target's declared inventory data.

A backend that cannot be read (missing, empty or non-regular file, garbage lines, unreachable server,
rejected token) gives a typed ProbeError, so LOG-01..03 become `error` with the backend's message. A system
that declares no audit log gets facts saying so: the controls then fail, they do not pass.
"""

from __future__ import annotations

import datetime as dt
import traceback
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from pydantic import ValidationError

from scanner.probes.base import (
    SYSTEM_LEVEL,
    FactSpec,
    JSONValue,
    OutOfScope,
    ProbeContext,
    ProbeError,
    ProbeErrorReason,
    ProbeFacts,
    ProbeOutcome,
    Target,
    resolve_in_scope,
)
from scanner.probes.logbackends.base import EVENT_FIELDS, LogBackend, LogBackendError, LogSnapshot
from scanner.probes.logbackends.fhir_auditevent import FhirAuditEventBackend
from scanner.probes.logbackends.http_json import HttpJsonBackend
from scanner.probes.logbackends.spec import (
    AUDIT_LOG_ADAPTER,
    ENCRYPTED_TRANSPORTS,
    FhirAuditEventSpec,
    HttpJsonSpec,
    ShippingSpec,
    SyslogFilesSpec,
)
from scanner.probes.logbackends.syslog_files import SyslogFilesBackend
from scanner.probes.tls import Handshake, classify_chain, iso_utc, leaf_matches, load_trust, tls_handshake

AuditLogSpecModel = SyslogFilesSpec | FhirAuditEventSpec | HttpJsonSpec

BACKENDS: dict[str, LogBackend] = {
    SyslogFilesBackend.name: SyslogFilesBackend(),
    FhirAuditEventBackend.name: FhirAuditEventBackend(),
    HttpJsonBackend.name: HttpJsonBackend(),
}


def declared_audit_log(target: Target) -> AuditLogSpecModel | None:
    """The system's `audit_log` declaration (validated again: the probe trusts nothing it is handed)."""
    system = target.declared.get("system")
    raw = system.get("audit_log") if isinstance(system, Mapping) else None
    return None if raw is None else AUDIT_LOG_ADAPTER.validate_python(raw)


def _run_all(targets: Sequence[Target], ctx: ProbeContext, one: Any, prefix: str) -> dict[str, ProbeOutcome]:
    """Run `one(target, ctx)` for every target on a thread pool; a crash becomes INTERNAL for that target."""
    results: dict[str, ProbeOutcome] = {}

    def safe(t: Target) -> ProbeOutcome:
        try:
            outcome: ProbeOutcome = one(t, ctx)
            return outcome
        except ValidationError as exc:
            return ProbeError(ProbeErrorReason.INTERNAL, f"invalid audit_log declaration: {exc}"[:1000])
        except Exception:
            return ProbeError(ProbeErrorReason.INTERNAL, traceback.format_exc(limit=6))

    if targets:
        with ThreadPoolExecutor(
            max_workers=max(1, min(ctx.max_workers, len(targets))), thread_name_prefix=prefix
        ) as pool:
            for t, outcome in zip(targets, pool.map(safe, targets), strict=True):
                results[t.key] = outcome
    return results


# -- auditlog ---------------------------------------------------------------------------------------

AUDITLOG_FACTS: tuple[FactSpec, ...] = (
    FactSpec("log.declared", "bool", "The system declares an audit_log backend in the inventory."),
    FactSpec("log.backend", "str", "Backend kind: syslog-files, fhir-auditevent or http-json.", True),
    FactSpec("log.source", "str", "Where the log was read: file path, or URL without query string.", True),
    FactSpec("log.latest_event", "datetime", "Time of the newest event found (UTC).", True, volatile=True),
    FactSpec(
        "log.latest_event_age_hours", "float", "Hours from the newest event to the probe's clock.", True, volatile=True
    ),
    FactSpec("log.oldest_event", "datetime", "Time of the oldest retained event found (UTC).", True, volatile=True),
    FactSpec(
        "log.oldest_event_age_days",
        "float",
        "Days from the oldest retained event to the probe's clock.",
        True,
        volatile=True,
    ),
    FactSpec(
        "log.latest_event_in",
        "str",
        "Where the newest event was found: the current file or a rotated one (syslog-files), else log.source.",
        True,
        volatile=True,
    ),
    FactSpec(
        "log.oldest_event_in", "str", "Where the oldest event was found (as log.latest_event_in).", True, volatile=True
    ),
    FactSpec(
        "log.files_unread",
        "list[str]",
        "Rotated files that could not be read in full, each with why: the newest event may be newer and the "
        "oldest older than shown.",
    ),
    FactSpec(
        "log.year_inferred",
        "bool",
        "Some timestamps had no year (RFC 3164); the inferred year never makes an event look older than it is.",
    ),
    FactSpec(
        "log.sample.size", "int", "Recent events sampled for LOG-03 (at most audit_log.sample_size).", volatile=True
    ),
    FactSpec("log.sample.complete", "int", "Sampled events that carry time, user, subject and action.", volatile=True),
    FactSpec(
        "log.sample.missing_fields",
        "list[str]",
        "Of time, user, subject, action: those missing in at least one sampled event.",
    ),
    FactSpec(
        "log.sample.malformed", "int", "Lines/records in the sampled window that could not be parsed.", volatile=True
    ),
    FactSpec(
        "log.sample.first_incomplete",
        "str",
        "The newest incomplete event: its time and what it lacks (no user or patient values are kept).",
        True,
        volatile=True,
    ),
)


def snapshot_facts(backend: str, snap: LogSnapshot, now: dt.datetime) -> dict[str, JSONValue]:
    """Facts from a backend snapshot (pure)."""
    missing = sorted({f for e in snap.sample for f in e.missing()}, key=EVENT_FIELDS.index)
    incomplete = next((e for e in snap.sample if e.missing()), None)
    first_incomplete = None
    if incomplete is not None:
        when = iso_utc(incomplete.time) if incomplete.time else "no time"
        first_incomplete = f"event at {when} lacks {', '.join(incomplete.missing())}"
    return {
        "log.declared": True,
        "log.backend": backend,
        "log.source": snap.source,
        "log.latest_event": iso_utc(snap.latest) if snap.latest else None,
        "log.latest_event_age_hours": round((now - snap.latest).total_seconds() / 3600, 3) if snap.latest else None,
        "log.oldest_event": iso_utc(snap.oldest) if snap.oldest else None,
        "log.oldest_event_age_days": round((now - snap.oldest).total_seconds() / 86400, 3) if snap.oldest else None,
        "log.latest_event_in": (snap.latest_in or snap.source) if snap.latest else None,
        "log.oldest_event_in": (snap.oldest_in or snap.source) if snap.oldest else None,
        "log.files_unread": list(snap.unread),
        "log.year_inferred": snap.year_inferred,
        "log.sample.size": len(snap.sample),
        "log.sample.complete": sum(not e.missing() for e in snap.sample),
        "log.sample.missing_fields": missing,
        "log.sample.malformed": snap.malformed,
        "log.sample.first_incomplete": first_incomplete,
    }


def undeclared_facts(names: Sequence[FactSpec], prefix: str) -> dict[str, JSONValue]:
    facts: dict[str, JSONValue] = {spec.name: None for spec in names}
    facts[f"{prefix}.declared"] = False
    return facts


class AuditLogProbe:
    """Newest event, oldest event and a sample of recent events from each system's declared log backend."""

    kind: ClassVar[str] = "auditlog"
    protocols: ClassVar[frozenset[str]] = frozenset({SYSTEM_LEVEL})
    facts: ClassVar[Sequence[FactSpec]] = AUDITLOG_FACTS

    def __init__(self, backends: Mapping[str, LogBackend] | None = None) -> None:
        self._backends = dict(BACKENDS if backends is None else backends)

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        """Query every system's backend concurrently. Never raises."""
        return _run_all(targets, ctx, self._one, "hcscan-auditlog")

    def _one(self, target: Target, ctx: ProbeContext) -> ProbeOutcome:
        spec = declared_audit_log(target)
        if spec is None:
            facts = undeclared_facts(AUDITLOG_FACTS, "log")
            facts.update({"log.year_inferred": False, "log.sample.size": 0, "log.sample.complete": 0})
            facts.update({"log.sample.missing_fields": [], "log.sample.malformed": 0, "log.files_unread": []})
            return ProbeFacts(facts)
        backend = self._backends.get(spec.backend)
        if backend is None:
            return ProbeError(ProbeErrorReason.TOOL_MISSING, f"no log backend '{spec.backend}' is available")
        try:
            snap = backend.snapshot(spec, timeout_s=target.politeness.timeout_s, ctx=ctx)
        except LogBackendError as exc:
            return ProbeError(exc.reason, f"{spec.backend}: {exc.detail}")
        return ProbeFacts(snapshot_facts(spec.backend, snap, dt.datetime.now(dt.UTC)))


# -- logship ----------------------------------------------------------------------------------------

LOGSHIP_FACTS: tuple[FactSpec, ...] = (
    FactSpec(
        "logship.declared", "bool", "The system's audit_log declares how the log is shipped (audit_log.shipping)."
    ),
    FactSpec(
        "logship.transport",
        "str",
        "Declared transport: syslog-tls, syslog-tcp, syslog-udp, relp-tls, relp, https or http.",
        True,
    ),
    FactSpec("logship.collector", "str", "The collector as declared, host:port.", True),
    FactSpec("logship.encrypted", "bool", "The declared transport is encrypted (syslog-tls, relp-tls, https).", True),
    FactSpec(
        "logship.tls.offered",
        "bool",
        "The collector's port answered a TLS handshake (null: not checked because the transport is plaintext).",
        True,
    ),
    FactSpec(
        "logship.tls.protocol", "str", "TLS version negotiated with the collector (nmap name, e.g. TLSv1.3).", True
    ),
    FactSpec("logship.tls.chain_trusted", "bool", "The collector's certificate chain builds to a trusted root.", True),
    FactSpec("logship.tls.chain_error", "str", "Why the chain is not trusted (see tls.chain.error).", True),
    FactSpec("logship.tls.hostname_matches", "bool", "The certificate covers the declared collector name.", True),
    FactSpec(
        "logship.tls.client_cert_required",
        "bool",
        "The collector demanded a client certificate (mutual TLS, as IHE ATNA asks).",
        True,
    ),
    FactSpec("logship.tls.detail", "str", "Why the handshake failed, when it did.", True),
)


def shipping_facts(spec: ShippingSpec, ctx: ProbeContext, timeout_s: float) -> ProbeOutcome:
    """Declared transport; for an encrypted one, one TLS handshake with the collector and its certificate."""
    facts = undeclared_facts(LOGSHIP_FACTS, "logship")
    encrypted = spec.transport in ENCRYPTED_TRANSPORTS
    facts.update(
        {
            "logship.declared": True,
            "logship.transport": spec.transport,
            "logship.collector": f"{spec.host}:{spec.port}",
            "logship.encrypted": encrypted,
        }
    )
    if not encrypted:
        return ProbeFacts(facts)
    name = spec.server_name or spec.host
    try:
        address = resolve_in_scope(spec.host, ctx)
    except OutOfScope as exc:
        return ProbeError(ProbeErrorReason.UNREACHABLE, str(exc))
    except (OSError, UnicodeError) as exc:
        return ProbeError(ProbeErrorReason.UNREACHABLE, f"collector {spec.host} does not resolve ({exc})")
    outcome = tls_handshake(address, spec.port, name, timeout_s)
    if not isinstance(outcome, Handshake):
        # A plaintext syslog listener takes a ClientHello as log data and never answers it: TCP was accepted
        # and the handshake timed out. That is "does not speak TLS", not "could not reach".
        silent = outcome.kind == "timeout" and outcome.detail.startswith("no TLS handshake")
        if outcome.kind == "not_tls" or silent:
            detail = f"TCP accepted, but no TLS answer ({outcome.detail})" if silent else outcome.detail
            facts.update({"logship.tls.offered": False, "logship.tls.detail": detail})
            return ProbeFacts(facts)
        reason = {"refused": ProbeErrorReason.REFUSED, "timeout": ProbeErrorReason.TIMEOUT}.get(
            outcome.kind, ProbeErrorReason.UNREACHABLE
        )
        return ProbeError(reason, f"collector {spec.host}:{spec.port}: {outcome.detail}")
    try:
        trust = load_trust(ctx.trust.use_system_store, ctx.trust.ca_bundles)
    except (OSError, ValueError) as exc:
        return ProbeError(ProbeErrorReason.INTERNAL, f"cannot read trust bundles: {exc}")
    chain = classify_chain(outcome.chain, trust)
    facts.update(
        {
            "logship.tls.offered": True,
            "logship.tls.protocol": outcome.protocol,
            "logship.tls.chain_trusted": chain.trusted,
            "logship.tls.chain_error": chain.error,
            "logship.tls.hostname_matches": leaf_matches(outcome.chain[0], name) if outcome.chain else None,
            "logship.tls.client_cert_required": not outcome.completed,
            "logship.tls.detail": outcome.detail,
        }
    )
    return ProbeFacts(facts)


class LogShippingProbe:
    """How each system ships its log: the declared transport and, for TLS, the collector's TLS port itself."""

    kind: ClassVar[str] = "logship"
    protocols: ClassVar[frozenset[str]] = frozenset({SYSTEM_LEVEL})
    facts: ClassVar[Sequence[FactSpec]] = LOGSHIP_FACTS

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        """One handshake per system that declares encrypted shipping. Never raises."""
        return _run_all(targets, ctx, self._one, "hcscan-logship")

    @staticmethod
    def _one(target: Target, ctx: ProbeContext) -> ProbeOutcome:
        spec = declared_audit_log(target)
        if spec is None or spec.shipping is None:
            return ProbeFacts(undeclared_facts(LOGSHIP_FACTS, "logship"))
        return shipping_facts(spec.shipping, ctx, target.politeness.timeout_s)

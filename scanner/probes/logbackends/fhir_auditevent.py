"""The `fhir-auditevent` backend: a FHIR server's AuditEvent search, the IHE BALP way.

`GET [base]/AuditEvent?_sort=-date&_count=N` gives the newest events (freshness and the LOG-03
sample), `_sort=date&_count=1` the oldest (retention). An event has its time in `recorded`, the user
in an `agent` (the requestor first), the patient in an `entity.what` and the action in `action`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from scanner.probes.base import ProbeContext, ProbeErrorReason
from scanner.probes.logbackends.base import LogBackendError, LogEvent, LogSnapshot, has_value, newest_first, parse_time
from scanner.probes.logbackends.httpjson import public_url, request_json, token_from_env
from scanner.probes.logbackends.spec import FhirAuditEventSpec

FHIR_JSON = "application/fhir+json"


def _reference_present(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    identifier = value.get("identifier")
    return (
        has_value(value.get("reference"))
        or (isinstance(identifier, dict) and has_value(identifier.get("value")))
        or has_value(value.get("display"))
    )


def audit_event(resource: Any) -> tuple[LogEvent, bool]:
    """An AuditEvent resource → (event, readable); `readable` is False when it has no usable `recorded`."""
    if not isinstance(resource, dict):
        return LogEvent(None, False, False, False), False
    when = parse_time(resource.get("recorded"))
    agents = [a for a in resource.get("agent") or [] if isinstance(a, dict)]
    requestors = [a for a in agents if a.get("requestor") is True] or agents
    user = any(_reference_present(a.get("who")) or has_value(a.get("altId")) for a in requestors)
    entities = [e for e in resource.get("entity") or [] if isinstance(e, dict)]
    subject = any(_reference_present(e.get("what")) for e in entities)
    raw_subtypes = resource.get("subtype")
    subtypes: list[Any] = raw_subtypes if isinstance(raw_subtypes, list) else []
    action = has_value(resource.get("action")) or any(
        isinstance(s, dict) and has_value(s.get("code")) for s in subtypes
    )
    return LogEvent(when, user, subject, action), when is not None


def bundle_resources(bundle: Any, source: str) -> list[Any]:
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        kind = bundle.get("resourceType") if isinstance(bundle, dict) else type(bundle).__name__
        raise LogBackendError(ProbeErrorReason.PROTOCOL, f"{source}: expected a FHIR Bundle, got {kind!s:.60}")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise LogBackendError(ProbeErrorReason.PROTOCOL, f"{source}: Bundle.entry is not a list")
    resources = [e.get("resource") for e in entries if isinstance(e, dict)]
    return [r for r in resources if isinstance(r, dict) and r.get("resourceType") == "AuditEvent"]


class FhirAuditEventBackend:
    name: ClassVar[str] = "fhir-auditevent"

    def snapshot(self, spec: Any, *, timeout_s: float, ctx: ProbeContext) -> LogSnapshot:
        assert isinstance(spec, FhirAuditEventSpec)
        token = token_from_env(spec.token_env)
        url = f"{spec.base_url}/AuditEvent"
        source = public_url(url)

        def search(sort: str, count: int) -> list[Any]:
            params = {**spec.search, "_sort": sort, "_count": str(count)}
            answer = request_json(
                url, ctx=ctx, timeout_s=timeout_s, params=params, token=token, accept=FHIR_JSON, verify=spec.verify_tls
            )
            return bundle_resources(answer, source)

        newest = search("-date", spec.sample_size)
        events: list[LogEvent] = []
        malformed = 0
        for resource in newest:
            event, readable = audit_event(resource)
            events.append(event)
            malformed += not readable
        times = [e.time for e in events if e.time is not None]
        if newest and not times:
            raise LogBackendError(ProbeErrorReason.PROTOCOL, f"{source}: no AuditEvent has a readable 'recorded' time")
        oldest: dt.datetime | None = None
        if times:
            first = [audit_event(r)[0].time for r in search("date", 1)]
            oldest = min((t for t in first if t is not None), default=None)
        return LogSnapshot(
            source=source,
            latest=max(times, default=None),
            oldest=oldest,
            sample=newest_first(events),
            malformed=malformed,
        )

"""The availability sampler: one up/down sample per endpoint per round — TCP connect, TLS handshake, HTTP status and
optional body keyword, FHIR ``/metadata``, DICOM association + C-ECHO (in the clear or over TLS) — with latency and
error.

DICOM: the sample calls from the endpoint's declared `calling_ae_title` (default HCSCAN) to its declared `ae_title`
(default ANY-SCP). An A-ASSOCIATE-RJ is an answer from a live DICOM application — a PACS that checks AE titles
rejects a caller it does not know — so it is *up*, with the rejection in the sample's detail; accepted with a
successful C-ECHO is up, and so is a C-ECHO the node refuses by aborting the association it had accepted (Orthanc with
DicomAlwaysAllowEcho false does that to a caller it does not know); no connection, no answer in time, anything that
is not DICOM, or a C-ECHO answered with a failure status is down (`dicom`, or the TCP reason).

A failed attempt is retried once after a short delay; only a failure that repeats counts as *down*. A sample that
could not be taken because of hcscan itself (a bug) is *unknown* (``up is None``) and is never stored as a
measurement. All sockets of a round share one asyncio loop, so a round over a thousand endpoints costs one thread.

This module also declares the ``sla`` facts (computed by the store from the samples, see
``scanner.store.availability``) so that controls can be validated without touching the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

from scanner.availability import EndpointCheck, SampleMethod, SystemAvailability, default_method
from scanner.models import EndpointProtocol
from scanner.probes.base import SYSTEM_LEVEL, FactSpec, Target
from scanner.probes.dicom_assoc import Association, associate
from scanner.probes.http import declared_base_path, lenient_tls_context

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
MAX_DETAIL = 200
USER_AGENT = "hcscan/0.1 (availability sample; +declared-inventory-only)"
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] ([1-5][0-9][0-9])(?: |\r|$)")
_UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN})

# Why a sample is down. The first four are ProbeErrorReason values.
DOWN_REASONS = ("refused", "timeout", "unreachable", "protocol", "status", "keyword", "dicom")
DEFAULT_CALLING_AET = "HCSCAN"  # the sample's calling AE title unless the endpoint declares calling_ae_title
_DEFAULT_CALLED_AET = "ANY-SCP"  # as EXP-02: the called AE title unless the endpoint declares ae_title
_DICOM_OVER_TLS = frozenset({EndpointProtocol.DICOM_TLS.value, EndpointProtocol.TLS.value})


@dataclass(frozen=True)
class SamplerSettings:
    timeout_s: float = 5.0  # per attempt (the system's politeness timeout applies if shorter)
    retry_delay_s: float = 1.0  # pause before the confirming retry of a failed attempt
    max_concurrency: int = 200  # connections open at once across all systems


@dataclass(frozen=True)
class Sample:
    """One endpoint in one round. up None: no measurement (hcscan's own failure): counts as unknown."""

    key: str
    system_id: str
    method: SampleMethod
    up: bool | None
    latency_ms: float | None  # of the successful attempt
    reason: str | None  # one of DOWN_REASONS when down, "internal" when up is None
    detail: str | None
    attempts: int


class _Down(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail[:MAX_DETAIL]


@dataclass(frozen=True)
class _Plan:
    target: Target
    method: SampleMethod
    check: EndpointCheck
    tls: bool  # http/fhir/dicom over TLS


def _system_availability(target: Target) -> SystemAvailability:
    raw = (target.declared.get("system") or {}).get("availability")
    return SystemAvailability.model_validate(raw) if raw else SystemAvailability()


def plan_for(target: Target) -> _Plan:
    """How a target is sampled: the system's `availability.checks` entry for the endpoint, else by protocol."""
    endpoint = target.declared.get("endpoint") or {}
    endpoint_id = endpoint.get("id") or f"{target.protocol}-{target.port}"
    check = _system_availability(target).checks.get(endpoint_id, EndpointCheck())
    method = check.method or default_method(target.protocol)
    if method == "dicom":
        return _Plan(target, method, check, tls=target.protocol in _DICOM_OVER_TLS)
    return _Plan(target, method, check, tls=target.protocol != EndpointProtocol.HTTP.value)


def _classify(exc: BaseException) -> _Down:
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, _Down):
        return exc
    if isinstance(exc, ConnectionRefusedError):
        return _Down("refused", "connection refused")
    if isinstance(exc, TimeoutError):
        return _Down("timeout", "no answer in time")
    if isinstance(exc, ssl.SSLError | ConnectionResetError | BrokenPipeError | asyncio.IncompleteReadError):
        return _Down("protocol", text)
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return _Down("unreachable", text)
    if isinstance(exc, OSError):
        return _Down("protocol", text)
    raise exc  # anything else is a bug in hcscan: the caller turns it into an unknown sample


class AvailabilitySampler:
    """Takes one round of samples. Construct once per round or reuse; `sample` never raises for a target's sake."""

    def __init__(self, settings: SamplerSettings | None = None) -> None:
        self.settings = settings or SamplerSettings()
        # Availability, not trust: any handshake the server completes counts (the TLS probe judges certificates).
        self._ctx = lenient_tls_context()

    def sample(self, targets: Sequence[Target]) -> dict[str, Sample]:
        """Sample every endpoint target once (system-level targets are ignored); key is Target.key."""
        wanted = [t for t in targets if t.protocol != SYSTEM_LEVEL]
        if not wanted:
            return {}
        return asyncio.run(self._round(wanted))

    async def _round(self, targets: Sequence[Target]) -> dict[str, Sample]:
        overall = asyncio.Semaphore(self.settings.max_concurrency)
        per_system: dict[str, asyncio.Semaphore] = {}
        for t in targets:
            if t.system_id not in per_system:
                limit = 1 if t.politeness.fragile else max(1, t.politeness.max_concurrency)
                per_system[t.system_id] = asyncio.Semaphore(limit)
        tasks = [asyncio.create_task(self._one(t, overall, per_system[t.system_id])) for t in targets]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        out: dict[str, Sample] = {}
        for t, r in zip(targets, results, strict=True):
            if isinstance(r, BaseException):
                out[t.key] = Sample(t.key, t.system_id, "tcp", None, None, "internal", repr(r)[:MAX_DETAIL], 0)
            else:
                out[t.key] = r
        return out

    async def _one(self, target: Target, overall: asyncio.Semaphore, system: asyncio.Semaphore) -> Sample:
        try:
            plan = plan_for(target)
        except ValueError as exc:  # declared data the loader accepted but we cannot read: our problem, not the target's
            return Sample(target.key, target.system_id, "tcp", None, None, "internal", str(exc)[:MAX_DETAIL], 0)
        down: _Down | None = None
        for attempt in (1, 2):
            if attempt == 2:
                await asyncio.sleep(self.settings.retry_delay_s)
            async with overall, system:
                started = time.perf_counter()
                try:
                    note = await self._attempt(plan)
                except Exception as exc:
                    try:
                        down = _classify(exc)
                    except Exception as bug:
                        detail = f"{type(bug).__name__}: {bug}"[:MAX_DETAIL]
                        return Sample(
                            target.key, target.system_id, plan.method, None, None, "internal", detail, attempt
                        )
                    continue
                latency = round((time.perf_counter() - started) * 1000, 3)
                return Sample(target.key, target.system_id, plan.method, True, latency, None, note, attempt)
        assert down is not None
        return Sample(target.key, target.system_id, plan.method, False, None, down.reason, down.detail, 2)

    def _timeout(self, target: Target) -> float:
        return min(self.settings.timeout_s, target.politeness.timeout_s)

    async def _attempt(self, plan: _Plan) -> str | None:
        """One attempt: returns normally when up (with a note worth keeping, e.g. a DICOM rejection), raises if not."""
        if plan.method == "dicom":
            return await self._dicom(plan)
        async with asyncio.timeout(self._timeout(plan.target)):
            use_tls = plan.method == "tls" or (plan.method in ("http", "fhir") and plan.tls)
            t = plan.target
            reader, writer = await asyncio.open_connection(
                t.address,
                t.port,
                ssl=self._ctx if use_tls else None,
                server_hostname=(t.server_name or "") if use_tls else None,
            )
            try:
                if plan.method in ("http", "fhir"):
                    await _http_check(plan, reader, writer)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
        return None

    async def _connect(self, plan: _Plan) -> None:
        """A TCP (and TLS) connection only: how an association that never connected is classified."""
        async with asyncio.timeout(self._timeout(plan.target)):
            t = plan.target
            _reader, writer = await asyncio.open_connection(
                t.address,
                t.port,
                ssl=self._ctx if plan.tls else None,
                server_hostname=(t.server_name or "") if plan.tls else None,
            )
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _dicom(self, plan: _Plan) -> str | None:
        # The association bounds itself: each step (connect with the TLS handshake, the A-ASSOCIATE answer, C-ECHO,
        # A-RELEASE) waits at most the timeout, as a TCP or TLS sample's connect does, and hung sockets are shut down
        # after four of them; the thread ends by then, and the wait here only adds slack for that.
        timeout = self._timeout(plan.target)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(4 * timeout + 2.0):
            seen = await loop.run_in_executor(None, _dicom_association, plan, timeout, self._ctx)
        if seen is None:  # pynetdicom is not installed: a TCP (TLS) connect stands in
            await self._connect(plan)
            return "pynetdicom not installed: TCP connect only"
        return await self._judge_dicom(plan, seen)

    async def _judge_dicom(self, plan: _Plan, seen: Association) -> str | None:
        """Up (returns the note to keep) or down (raises _Down) from what the association saw."""
        check = plan.check
        sent = (
            f"calling {check.calling_ae_title or DEFAULT_CALLING_AET} to called {check.ae_title or _DEFAULT_CALLED_AET}"
        )
        if seen.rejection is not None:  # the DICOM application is there and said no: up, and say what it said
            return f"association rejected: {seen.rejection.describe()}; {sent}"
        if seen.outcome == "accepted":
            if not seen.established:
                return f"association accepted, then aborted (Verification not accepted); {sent}"
            if seen.echo_refused:  # the node knows it does not know us: a live, strict node (Orthanc does this)
                return f"association accepted, C-ECHO refused (the node aborted the association); {sent}"
            if seen.echo_status != 0x0000:
                status = "not answered" if seen.echo_status is None else f"status 0x{seen.echo_status:04X}"
                raise _Down("dicom", f"association accepted but C-ECHO {status}; {sent}")
            return None
        if not seen.connected:  # say why as every other sample does: refused, timeout, unreachable, not TLS
            if seen.timed_out:
                raise _Down("timeout", f"no connection in time; {sent}")
            await self._connect(plan)  # raises the classified error; if it connects now, the association still failed
        raise _Down("timeout" if seen.timed_out else "dicom", f"{seen.detail}; {sent}")


async def _http_check(plan: _Plan, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    t = plan.target
    fhir = plan.method == "fhir"
    path = plan.check.path or (declared_base_path(t) + "/metadata" if fhir else "/")
    host = t.server_name or (f"[{t.address}]" if ":" in t.address else t.address)
    accept = "application/fhir+json, application/json;q=0.9" if fhir else "*/*"
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{t.port}\r\nUser-Agent: {USER_AGENT}\r\nAccept: {accept}\r\n"
        "Accept-Encoding: identity\r\nConnection: close\r\n\r\n"
    )
    writer.write(request.encode("ascii"))
    await writer.drain()
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise _Down("protocol", "response head too long") from exc
    except asyncio.IncompleteReadError as exc:
        raise _Down("protocol", "connection closed before a complete HTTP response head") from exc
    if len(head) > MAX_HEAD_BYTES:
        raise _Down("protocol", "response head too long")
    m = _STATUS_LINE.match(head)
    if m is None:
        raise _Down("protocol", f"not an HTTP response: {head[:60]!r}")
    status = int(m.group(1))
    expected = plan.check.expect_status or ([200] if fhir else None)
    if (expected is not None and status not in expected) or (expected is None and status >= 500):
        want = ", ".join(str(s) for s in expected) if expected else "< 500"
        raise _Down("status", f"HTTP {status}; up means {want}")
    keyword = plan.check.keyword or ("CapabilityStatement" if fhir and plan.check.path is None else None)
    if keyword is None:
        return
    body = b""
    while len(body) < MAX_BODY_BYTES and keyword.encode() not in body:
        chunk = await reader.read(MAX_BODY_BYTES - len(body))
        if not chunk:
            break
        body += chunk
    if keyword.encode() not in body:
        raise _Down("keyword", f"'{keyword}' not in the first {len(body)} bytes of the body")


def _dicom_association(plan: _Plan, step_s: float, ctx: ssl.SSLContext) -> Association | None:
    """One association (A-ASSOCIATE, C-ECHO, A-RELEASE) with the declared AE titles; None without pynetdicom."""
    try:
        import pynetdicom  # noqa: F401  optional dependency
    except ImportError:
        return None
    t, check = plan.target, plan.check
    return associate(
        t.address,
        t.port,
        calling=check.calling_ae_title or DEFAULT_CALLING_AET,
        called=check.ae_title or _DEFAULT_CALLED_AET,
        timeout_s=step_s,
        tls=(ctx, t.server_name) if plan.tls else None,
    )


# -- the facts the store's `sla` provider computes from samples ----------------------------------------

SLA_KIND = "sla"
SLA_PROTOCOLS: frozenset[str] = frozenset({p.value for p in EndpointProtocol} | {SYSTEM_LEVEL})
SLA_FACTS: tuple[FactSpec, ...] = (
    FactSpec(
        "sla.window",
        "str",
        "The measurement window, e.g. '30d' (config availability.window). The figures below "
        "are the endpoint's, or at system level (sla.basis 'service') the redundant service's.",
    ),
    FactSpec("sla.window_start", "datetime", "Start of the window (UTC).", volatile=True),
    FactSpec("sla.window_end", "datetime", "End of the window: when the facts were computed (UTC).", volatile=True),
    FactSpec("sla.target_percent", "float", "SLA target: the system's sla_percent, else by criticality.", True),
    FactSpec("sla.target_source", "str", "Where the target came from: 'system' or 'criticality:<level>'."),
    FactSpec(
        "sla.measured_seconds",
        "float",
        "Window length minus declared maintenance (the SLA denominator).",
        volatile=True,
    ),
    FactSpec("sla.maintenance_seconds", "float", "Declared maintenance inside the window (removed).", volatile=True),
    FactSpec("sla.up_seconds", "float", "Time covered by up samples, outside maintenance.", volatile=True),
    FactSpec(
        "sla.down_seconds", "float", "Time covered by confirmed-down samples, outside maintenance.", volatile=True
    ),
    FactSpec(
        "sla.unknown_seconds", "float", "Time no sample covers (scanner not running, endpoint new).", volatile=True
    ),
    FactSpec(
        "sla.lower_percent", "float", "up / measured: availability if all unknown time was down.", True, volatile=True
    ),
    FactSpec(
        "sla.upper_percent", "float", "(up + unknown) / measured: availability if it was all up.", True, volatile=True
    ),
    FactSpec(
        "sla.coverage_percent", "float", "(up + down) / measured: how much of the window was seen.", True, volatile=True
    ),
    FactSpec(
        "sla.samples", "int", "Samples stored for the endpoint in the hours overlapping the window.", volatile=True
    ),
    FactSpec("sla.last_sample_at", "datetime", "Time of the endpoint's newest sample.", True, volatile=True),
    FactSpec("sla.outage_count", "int", "Down periods (consecutive confirmed downs) overlapping the window."),
    FactSpec(
        "sla.longest_outage_seconds", "float", "Longest outage inside the window (maintenance removed).", volatile=True
    ),
    FactSpec(
        "sla.outages",
        "list[object]",
        "Up to 20 longest outages: {start, end, seconds, ongoing, ended_by: up|unknown}, clipped to the window.",
        volatile=True,
    ),
    FactSpec("sla.latency_budget_ms", "int", "The system's declared p95 latency budget (AVL-03).", True),
    FactSpec(
        "sla.latency_samples", "int", "Up samples with a latency in the hours overlapping the window.", volatile=True
    ),
    FactSpec(
        "sla.latency_p95_low_ms",
        "float",
        "p95 latency is above this (histogram bucket lower edge).",
        True,
        volatile=True,
    ),
    FactSpec(
        "sla.latency_p95_high_ms",
        "float",
        "p95 latency is at most this (bucket upper edge); null when above the largest bucket edge.",
        True,
        volatile=True,
    ),
    FactSpec(
        "sla.basis",
        "str",
        "What the SLA figures describe: 'endpoint'; 'instance' (one of ≥ 2 declared instances: the service is "
        "judged at system level); at system level 'service' (up while any instance answers, down while all are "
        "down) or 'none' (fewer than 2 instances declared: no service figures).",
    ),
    FactSpec("sla.instances_declared", "int", "System level: redundant instances declared (AVL-02)."),
    FactSpec("sla.sites_declared", "int", "System level: distinct sites among the declared instances."),
    FactSpec(
        "sla.instances",
        "list[object]",
        "System level: {endpoint, site, state: up|down|unknown, last_sample_at} per declared instance; "
        "state is unknown when the newest sample is older than 2 × the sampling interval.",
        volatile=True,
    ),
    FactSpec("sla.instances_up", "int", "System level: instances whose newest (fresh) sample is up."),
    FactSpec("sla.instances_down", "int", "System level: instances whose newest (fresh) sample is down."),
    FactSpec("sla.instances_unknown", "int", "System level: instances without a fresh sample."),
)

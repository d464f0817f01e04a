"""Health-protocol exposure probes: DICOM (EXP-02), HL7 v2 over MLLP (EXP-03) and FHIR (EXP-04, LOG-06).

Each sends as little as it can: DICOM gets one association request with an unknown calling AE title — through
nmap's safe `dicom-ping` in the clear (forced with `+` on ports outside its portrule), through pynetdicom over TLS
(A-ASSOCIATE, a C-ECHO on non-fragile systems, A-RELEASE) — never a C-STORE, never `dicom-brute`; MLLP gets a TLS
handshake attempt and, on non-fragile systems, one HL7 ACK frame (an acknowledgement, which a receiver does not
file as clinical data); FHIR gets `GET <base>/metadata`, `GET <base>/.well-known/smart-configuration` and one
`_summary=count` search under the declared base without credentials.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import socket
import ssl
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import requests
import urllib3
from urllib3.exceptions import InsecureRequestWarning

from scanner.availability import AE_TITLE, AE_TITLE_PATTERN
from scanner.probes.availability import plan_for
from scanner.probes.base import (
    FactSpec,
    JSONValue,
    ProbeContext,
    ProbeError,
    ProbeErrorReason,
    ProbeFacts,
    ProbeOutcome,
    Target,
)
from scanner.probes.dicom_assoc import Association, Rejection, associate
from scanner.probes.http import (
    bounded_session,
    declared_base_path,
    lenient_tls_context,
    read_capped,
    shutdown_socket,
)
from scanner.probes.nmap import NmapArgumentError, NmapError, NseValue, parse_nmap_xml, run_nmap

USER_AGENT = "hcscan/0.1 (compliance scanner; +declared-inventory-only)"
MAX_BODY = 2 * 1024 * 1024
_VB, _FS, _CR = b"\x0b", b"\x1c", b"\x0d"


def tls_handshake(address: str, port: int, timeout_s: float, server_name: str | None) -> bool | ProbeError:
    """True if a TLS handshake completes, False if the port answers but not with TLS; ProbeError if no TCP."""
    try:
        sock = socket.create_connection((address, port), timeout=timeout_s)
    except ConnectionRefusedError:
        return ProbeError(ProbeErrorReason.REFUSED, "connection refused")
    except TimeoutError:
        return ProbeError(ProbeErrorReason.TIMEOUT, f"no TCP answer within {timeout_s:g}s")
    except OSError as exc:
        return ProbeError(ProbeErrorReason.UNREACHABLE, f"{type(exc).__name__}: {exc}")
    # Trust is the TLS family's job; here we only ask "does it speak TLS" (the lenient context talks to old servers).
    # Wrapping detaches `sock`: the handshake runs on the wrapped socket, so that is the one the timer shuts down.
    try:
        tls = lenient_tls_context().wrap_socket(sock, server_hostname=server_name, do_handshake_on_connect=False)
    except BaseException:
        sock.close()
        raise
    # One overall limit, whatever the peer drips (CPython bounds do_handshake by the socket timeout as well). A
    # handshake the timer ended is a timeout, never "not TLS": the flag is set before the socket is shut down.
    fired = threading.Event()

    def hang_up() -> None:
        fired.set()
        shutdown_socket(tls)

    timer = threading.Timer(timeout_s, hang_up)
    timer.daemon = True
    timer.start()
    try:
        tls.do_handshake()
        return True
    except TimeoutError:
        return ProbeError(ProbeErrorReason.TIMEOUT, f"no TLS handshake within {timeout_s:g}s (tarpit?)")
    except (ssl.SSLError, OSError):
        if fired.is_set():
            return ProbeError(ProbeErrorReason.TIMEOUT, f"no complete TLS handshake within {timeout_s:g}s")
        return False
    finally:
        timer.cancel()
        tls.close()


def _concurrently(
    targets: Sequence[Target], ctx: ProbeContext, fn: Callable[[Target], ProbeOutcome]
) -> dict[str, ProbeOutcome]:
    """One worker per target, but a system's targets one after another (fragile devices: one connection)."""
    by_system: dict[str, list[Target]] = {}
    for t in targets:
        by_system.setdefault(t.system_id, []).append(t)

    def lane(items: list[Target]) -> dict[str, ProbeOutcome]:
        out: dict[str, ProbeOutcome] = {}
        for t in items:
            try:
                out[t.key] = fn(t)
            except Exception:
                out[t.key] = ProbeError(ProbeErrorReason.INTERNAL, traceback.format_exc(limit=3))
        return out

    results: dict[str, ProbeOutcome] = {}
    if not targets:
        return results
    with ThreadPoolExecutor(max_workers=max(1, min(ctx.max_workers, len(by_system)))) as pool:
        for part in pool.map(lane, by_system.values()):
            results.update(part)
    return results


# ---------------------------------------------------------------------------------------------
# DICOM

# The ports nmap 7.93's dicom-ping runs on by itself (its portrule); elsewhere it is forced with "+dicom-ping".
DICOM_PING_PORTS: frozenset[int] = frozenset({104, 2345, 2761, 2762, 4242, 11112})
PROBE_CALLING_AET = "HCSCAN-UNKNOWN"  # a calling AE title no archive has any reason to know
DEFAULT_CALLED_AET = "ANY-SCP"  # nmap's default called AE title, used when the node's own is not declared
# A-ASSOCIATE-RJ "rejected-permanent" (result 1) by the "service-user" (source 1), with these diagnostics:
_RJ_NO_REASON, _RJ_CALLING_AET, _RJ_CALLED_AET = 1, 3, 7
_METHOD_TLS = "A-ASSOCIATE over TLS (pynetdicom)"
_DECLARE_AET = "availability.checks.<endpoint>.ae_title"


def declared_called_aet(t: Target) -> str | None:
    """The node's own AE title, if the inventory declares it (`availability.checks.<endpoint>.ae_title`).

    The loader refuses a title hcscan cannot send (`AE_TITLE_PATTERN`); ValueError if one got here regardless."""
    called = plan_for(t).check.ae_title or None
    if called is not None and not AE_TITLE.match(called):
        raise ValueError(f"declared AE title {called!r} cannot be sent (it must match {AE_TITLE_PATTERN})")
    return called


def _unknown_rejection_hint(called: str | None) -> str:
    """Why a rejection whose reason is not known to be the calling AE title proves nothing, and what to do."""
    if called is None:
        return (
            f" — the node's own AE title is not declared, so {DEFAULT_CALLED_AET} was called and the rejection may be"
            f" of that called AE title, not of the unknown calling one: declare the node's AE title ({_DECLARE_AET})"
        )
    return ""


def dicom_ping_facts(data: NseValue, output: str, called: str | None = None) -> dict[str, JSONValue]:
    """Facts from nmap's dicom-ping result: {dicom: "DICOM Service Provider discovered!", config: ...}.

    `called` is the node's declared AE title (sent as dicom.called_aet), None when ANY-SCP was called.

    What dicom-ping can tell: "Any AET is accepted (Insecure)" means the association (from our unknown calling AE
    title) was accepted. "Called AET check enabled" means only that an A-ASSOCIATE-RJ came back: dicom-ping reports
    it for every rejection and never says why (calling or called AE title, no reason, or a transient limit). That
    is read like a rejection "with no reason given" over TLS: `rejected` when the node's own AE title was called,
    else null (the rejection may be of ANY-SCP, the called title). It cannot tell a wrong declared called AE title
    or a transient rejection from a calling AE-title check. Without either line: not assessed. (Plaintext DICOM
    fails EXP-02 whatever this says: these facts are its evidence.)
    """
    fields = data if isinstance(data, dict) else {}
    config = str(fields.get("config", ""))[:200]
    discovered = "discovered" in str(fields.get("dicom", "")).lower() or "discovered" in output.lower()
    lowered = config.lower()
    check = "accepted" if "any aet is accepted" in lowered else "rejected" if "aet check enabled" in lowered else None
    detail = config or "no answer to the association request (not DICOM, or the association was aborted)"
    if check == "rejected":
        detail = (
            f"rejected ({config}: dicom-ping does not report the reason); calling {PROBE_CALLING_AET} to called "
            f"{called or DEFAULT_CALLED_AET}{_unknown_rejection_hint(called)}"
        )
        if called is None:
            check = None
    return {
        "dicom.service": discovered,
        "dicom.any_aet_accepted": None if check is None else check == "accepted",
        "dicom.aet_check": check,
        "dicom.aet_check_detail": detail,
        "dicom.reject_reason": None,
        "dicom.echo_status": None,
        "dicom.ping_output": output.strip()[:500],
    }


def dicom_tls_association(t: Target, called: str | None) -> dict[str, JSONValue]:
    """Ask for one association over TLS with an unknown calling AE title: A-ASSOCIATE, then C-ECHO (not on fragile
    systems) and A-RELEASE (`scanner.probes.dicom_assoc`). Never anything that stores. Certificates are not judged
    here (the TLS family does). Each step waits at most the system's timeout; the whole exchange at most four."""
    called_aet = called or DEFAULT_CALLED_AET
    timeout = t.politeness.timeout_s
    facts: dict[str, JSONValue] = {
        "dicom.aet_check_method": _METHOD_TLS,
        "dicom.calling_aet": PROBE_CALLING_AET,
        "dicom.called_aet": called_aet,
        "dicom.service": None,
        "dicom.any_aet_accepted": None,
        "dicom.aet_check": None,
        "dicom.reject_reason": None,
        "dicom.echo_status": None,
        "dicom.ping_output": None,
    }
    fragile = t.politeness.fragile
    seen = associate(
        t.address,
        t.port,
        calling=PROBE_CALLING_AET,
        called=called_aet,
        timeout_s=timeout,
        tls=(lenient_tls_context(), t.server_name),  # server name None: no SNI, as for the handshake test
        echo=not fragile,
    )
    if seen.outcome == "accepted":
        facts |= _accepted(seen, called_aet, fragile)
    elif seen.rejection is not None:
        facts |= _rejected(seen.rejection, called)
    else:
        facts["dicom.aet_check_detail"] = f"no A-ASSOCIATE answer over TLS: {seen.detail}"[:300]
    return facts


def _accepted(seen: Association, called_aet: str, fragile: bool) -> dict[str, JSONValue]:
    # Short, the essentials first: control messages show the first 120 characters (the evidence keeps it all).
    detail = f"accepted: calling {PROBE_CALLING_AET} to called {called_aet}"
    if not seen.established:
        detail += " (then aborted: Verification was not among the accepted presentation contexts)"
    elif fragile:
        detail += "; no C-ECHO sent (fragile system)"
    else:
        echo = seen.echo_status
        answer = "refused (A-ABORT)" if seen.echo_refused else "not answered"
        detail += "; C-ECHO " + (f"status 0x{echo:04X}" if echo is not None else answer)
    return {
        "dicom.service": True,
        "dicom.any_aet_accepted": True,
        "dicom.aet_check": "accepted",
        "dicom.aet_check_detail": detail,
        "dicom.echo_status": seen.echo_status,
    }


def _rejected(answer: Rejection, called: str | None) -> dict[str, JSONValue]:
    """An A-ASSOCIATE-RJ proves a calling AE-title check only when it says so (diagnostic 3), or gives no reason
    (diagnostic 1) to a request addressed to the node's own, declared AE title. "Called AE title not recognised"
    (7) says the request never got as far as the calling AE title: not assessed, whatever was called."""
    result, source, diagnostic = answer.result, answer.source, answer.diagnostic
    why = answer.describe()
    called_aet = called or DEFAULT_CALLED_AET
    sent = f"calling {PROBE_CALLING_AET} to called {called_aet}"
    facts: dict[str, JSONValue] = {"dicom.service": True, "dicom.reject_reason": answer.reason}
    by_user = result == 0x01 and source == 0x01  # rejected-permanent, by the service user (not ACSE or presentation)
    if by_user and (diagnostic == _RJ_CALLING_AET or (diagnostic == _RJ_NO_REASON and called is not None)):
        return facts | {
            "dicom.any_aet_accepted": False,
            "dicom.aet_check": "rejected",
            "dicom.aet_check_detail": f"rejected: {why}; {sent}",
        }
    if by_user and diagnostic == _RJ_NO_REASON:
        detail = f"rejected: {why}; {sent}{_unknown_rejection_hint(called)}"
    elif by_user and diagnostic == _RJ_CALLED_AET:
        which = "the declared one" if called is not None else "the default: the node's own is not declared"
        detail = (
            f"rejected: {why}; {sent} — the called AE title {called_aet} ({which}) is not the node's, so the calling"
            f" AE title was never judged: declare the node's right AE title ({_DECLARE_AET})"
        )
    else:
        detail = f"rejected for a reason other than AE titles: {why}"
    return facts | {"dicom.aet_check_detail": detail}


class DicomProbe:
    """Is DICOM spoken in the clear, and does it accept an association from an unknown calling AE title?

    Plaintext: nmap's safe `dicom-ping` (forced with `+` on ports outside its portrule). TLS: one association
    with pynetdicom over TLS (dicom-ping cannot speak TLS). Only A-ASSOCIATE, C-ECHO and A-RELEASE are sent.
    """

    kind: ClassVar[str] = "dicom"
    protocols: ClassVar[frozenset[str]] = frozenset({"dicom", "dicom-tls"})
    facts: ClassVar[Sequence[FactSpec]] = (
        FactSpec("dicom.tls", "bool", "The port completed a TLS handshake (DICOM over TLS, usually port 2762)."),
        FactSpec("dicom.service", "bool", "A DICOM service provider answered the association request.", True),
        FactSpec(
            "dicom.any_aet_accepted",
            "bool",
            "An association from an unknown calling AE title was accepted (true) or rejected (false); "
            "null: could not be assessed.",
            True,
        ),
        FactSpec(
            "dicom.aet_check",
            "str",
            "'accepted' (the node accepted an unknown calling AE title) or 'rejected' (A-ASSOCIATE-RJ 'calling AE "
            "title not recognised', or 'no reason given' to the declared called AE title); null: could not be "
            "assessed (no answer, aborted, called AE title not recognised, no reason given to ANY-SCP, rejected for "
            "another reason) — dicom.aet_check_detail says why and what to declare.",
            True,
        ),
        FactSpec("dicom.aet_check_detail", "str", "What the association attempt saw, in words (evidence)."),
        FactSpec(
            "dicom.aet_check_method",
            "str",
            "How: 'nmap dicom-ping', 'nmap +dicom-ping (non-standard port)' or 'A-ASSOCIATE over TLS (pynetdicom)'.",
        ),
        FactSpec("dicom.calling_aet", "str", "The calling AE title hcscan sent (one the node should not know)."),
        FactSpec(
            "dicom.called_aet",
            "str",
            "The called AE title sent: the declared availability.checks.<endpoint>.ae_title, else ANY-SCP.",
        ),
        FactSpec(
            "dicom.reject_reason",
            "str",
            "Reason of an A-ASSOCIATE-RJ over TLS (e.g. 'Calling AE title not recognised').",
            True,
        ),
        FactSpec(
            "dicom.echo_status", "int", "Status of the C-ECHO over an accepted TLS association (0: success).", True
        ),
        FactSpec("dicom.ping_output", "str", "nmap dicom-ping output (evidence).", True, volatile=True),
        FactSpec(
            "dicom.nmap_xml_sha256", "str", "SHA-256 of the raw nmap XML of the dicom-ping run.", True, volatile=True
        ),
    )

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        # One lane per system (one connection at a time to a fragile device), systems side by side.
        return _concurrently(targets, ctx, lambda t: self._one(t, ctx))

    @staticmethod
    def _one(t: Target, ctx: ProbeContext) -> ProbeOutcome:
        try:
            called = declared_called_aet(t)
        except ValueError as exc:  # the loader refuses such a title: never sent, never replaced by ANY-SCP
            return ProbeError(ProbeErrorReason.INTERNAL, f"{exc}; fix {_DECLARE_AET} in the inventory")
        tls = tls_handshake(t.address, t.port, t.politeness.timeout_s, t.server_name)
        if isinstance(tls, ProbeError):
            return tls
        if tls:
            return ProbeFacts({"dicom.tls": True, **dicom_tls_association(t, called)})
        ping = DicomProbe._ping(t, ctx, called)
        return ping if isinstance(ping, ProbeError) else ProbeFacts({"dicom.tls": False, **ping})

    @staticmethod
    def _ping(t: Target, ctx: ProbeContext, called: str | None) -> dict[str, JSONValue] | ProbeError:
        """One small nmap dicom-ping run for one endpoint, with its own system's politeness."""
        forced = t.port not in DICOM_PING_PORTS
        args = {"dicom.calling_aet": PROBE_CALLING_AET}
        called_aet = called or DEFAULT_CALLED_AET
        if called is not None:  # AE_TITLE_PATTERN is what nmap's --script-args carry: no silent fallback to ANY-SCP
            args["dicom.called_aet"] = called
        try:
            run = run_nmap(
                [t.address],
                [t.port],
                scripts=["+dicom-ping" if forced else "dicom-ping"],
                script_args=args,
                politeness=t.politeness,
                timeout_s=max(10.0, t.politeness.timeout_s * 2),
                nmap_path=ctx.nmap_path,
            )
            scan = parse_nmap_xml(run.xml)
        except NmapError as exc:
            return ProbeError(exc.reason, exc.detail)
        except NmapArgumentError as exc:
            return ProbeError(ProbeErrorReason.INTERNAL, str(exc))
        port = scan.ports.get((t.address, t.port))
        if port is None or port.state != "open":
            state = port.state if port else "missing"
            return ProbeError(ProbeErrorReason.REFUSED if state == "closed" else ProbeErrorReason.TIMEOUT, state)
        facts: dict[str, JSONValue] = {
            "dicom.aet_check_method": "nmap +dicom-ping (non-standard port)" if forced else "nmap dicom-ping",
            "dicom.calling_aet": PROBE_CALLING_AET,
            "dicom.called_aet": called_aet,
            "dicom.nmap_xml_sha256": run.xml_sha256,
        }
        script = port.scripts.get("dicom-ping")
        if script is None:  # dicom-ping says nothing when the association neither succeeded nor was rejected
            return facts | dicom_ping_facts({}, "", called) | {"dicom.service": False, "dicom.ping_output": None}
        return facts | dicom_ping_facts(script.data, script.output, called)


# ---------------------------------------------------------------------------------------------
# HL7 v2 over MLLP


def mllp_ack_frame(now: dt.datetime) -> bytes:
    """An MLLP-framed HL7 v2.5 ACK with no patient data: the most harmless message a receiver can get."""
    ts = now.strftime("%Y%m%d%H%M%S")
    msh = f"MSH|^~\\&|HCSCAN|HCSCAN|||{ts}||ACK|HCSCAN{ts}|P|2.5\rMSA|AA|HCSCAN-PROBE"
    return _VB + msh.encode("ascii") + _FS + _CR


def parse_mllp_reply(data: bytes) -> tuple[bool, str | None]:
    """(framed, MSA-1 acknowledgement code) of what an MLLP peer answered."""
    start, end = data.find(_VB), data.find(_FS)
    if start < 0 or end < start:
        return False, None
    text = data[start + 1 : end].decode("latin-1", errors="replace")
    for segment in text.replace("\n", "\r").split("\r"):
        if segment.startswith("MSA|"):
            fields = segment.split("|")
            return True, fields[1] if len(fields) > 1 else None
    return True, None


class MllpProbe:
    """Does an HL7 v2 endpoint speak MLLP in the clear (no TLS)?"""

    kind: ClassVar[str] = "mllp"
    protocols: ClassVar[frozenset[str]] = frozenset({"mllp", "mllp-tls"})
    facts: ClassVar[Sequence[FactSpec]] = (
        FactSpec("mllp.tls", "bool", "The port completed a TLS handshake."),
        FactSpec("mllp.plaintext", "bool", "The port accepted TCP and did not speak TLS."),
        FactSpec("mllp.responded", "bool", "An MLLP-framed reply came back to our HL7 ACK frame.", True),
        FactSpec("mllp.ack_code", "str", "MSA-1 of that reply (AA, AE, AR, CA ...).", True),
    )

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        return _concurrently(targets, ctx, self._one)

    @staticmethod
    def _one(t: Target) -> ProbeOutcome:
        tls = tls_handshake(t.address, t.port, t.politeness.timeout_s, t.server_name)
        if isinstance(tls, ProbeError):
            return tls
        facts: dict[str, JSONValue] = {"mllp.tls": tls, "mllp.plaintext": not tls, "mllp.responded": None}
        facts["mllp.ack_code"] = None
        if tls or t.politeness.fragile:
            return ProbeFacts(facts)
        buf = b""
        try:
            with socket.create_connection((t.address, t.port), timeout=t.politeness.timeout_s) as sock:
                sock.sendall(mllp_ack_frame(dt.datetime.now(dt.UTC)))
                give_up = time.monotonic() + 2 * t.politeness.timeout_s  # a reply dripped byte by byte ends here
                while _FS not in buf and len(buf) < 65536 and time.monotonic() < give_up:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
        except OSError:
            pass  # what arrived before the error is judged; nothing is `framed` without its end byte
        framed, code = parse_mllp_reply(buf)
        facts["mllp.responded"], facts["mllp.ack_code"] = framed, code
        return ProbeFacts(facts)


# ---------------------------------------------------------------------------------------------
# FHIR

_SMART_CODES = frozenset({"smart-on-fhir", "oauth"})
_RESOURCE_TYPE = re.compile(r"^[A-Z][A-Za-z]{0,63}$")  # a FHIR resource type name, nothing a path could hide
_SMART_EXTENSION = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def capability_facts(doc: Any) -> dict[str, JSONValue]:
    """Facts from a CapabilityStatement: security services, SMART/OAuth, supported resource types."""
    ok = isinstance(doc, dict) and doc.get("resourceType") == "CapabilityStatement"
    services: list[str] = []
    resources: list[str] = []
    smart = False
    if ok:
        for rest in doc.get("rest") or []:
            if not isinstance(rest, dict):
                continue
            security = rest.get("security") or {}
            for service in security.get("service") or [] if isinstance(security, dict) else []:
                for coding in (service.get("coding") or []) if isinstance(service, dict) else []:
                    code = str(coding.get("code", "")) if isinstance(coding, dict) else ""
                    if code:
                        services.append(code)
                        smart |= code.lower() in _SMART_CODES
                if isinstance(service, dict) and service.get("text"):
                    services.append(str(service["text"])[:100])
            if isinstance(security, dict):
                smart |= any(
                    isinstance(e, dict) and e.get("url") == _SMART_EXTENSION for e in security.get("extension") or []
                )
            for res in rest.get("resource") or []:
                if isinstance(res, dict) and isinstance(res.get("type"), str):
                    resources.append(res["type"])
    return {
        "fhir.capability": ok,
        "fhir.fhir_version": str(doc.get("fhirVersion")) if ok and doc.get("fhirVersion") else None,
        "fhir.security_services": services,
        "fhir.smart_oauth": smart,
        "fhir.resources": sorted(set(resources)),
        "fhir.audit_event_supported": "AuditEvent" in resources,
    }


class FhirProbe:
    """FHIR CapabilityStatement (security, AuditEvent) and whether an unauthenticated search is refused."""

    kind: ClassVar[str] = "fhir"
    protocols: ClassVar[frozenset[str]] = frozenset({"fhir"})
    facts: ClassVar[Sequence[FactSpec]] = (
        FactSpec("fhir.base_path", "str", "The FHIR base the requests went under: the endpoint's `path`, else '/'."),
        FactSpec("fhir.metadata_status", "int", "HTTP status of GET <base>/metadata."),
        FactSpec("fhir.capability", "bool", "GET <base>/metadata returned a CapabilityStatement."),
        FactSpec("fhir.fhir_version", "str", "fhirVersion of the CapabilityStatement.", True),
        FactSpec("fhir.security_services", "list[str]", "rest[].security.service codes and texts."),
        FactSpec(
            "fhir.smart_oauth", "bool", "Security service SMART-on-FHIR/OAuth, or the SMART oauth-uris extension."
        ),
        FactSpec("fhir.resources", "list[str]", "Resource types the server declares."),
        FactSpec("fhir.audit_event_supported", "bool", "AuditEvent is among the declared resource types."),
        FactSpec(
            "fhir.smart_configuration_status", "int", "HTTP status of <base>/.well-known/smart-configuration.", True
        ),
        FactSpec(
            "fhir.unauth_search_path",
            "str",
            "The search sent without credentials, under the base (e.g. /fhir/Patient?_summary=count).",
        ),
        FactSpec("fhir.unauth_search_status", "int", "HTTP status of that search (401/403: refused).", True),
        FactSpec("fhir.unauth_search_total", "int", "Bundle.total the unauthenticated search returned, if any.", True),
    )

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        # Not verifying here is deliberate (certificates are the TLS controls' job): no warning per request.
        warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        return _concurrently(targets, ctx, self._one)

    @staticmethod
    def _one(t: Target) -> ProbeOutcome:
        host = f"[{t.address}]" if ":" in t.address else t.address
        base_path = declared_base_path(t)  # "" for "/": every request below goes under the declared FHIR base
        base = f"https://{host}:{t.port}{base_path}"
        headers = {"Accept": "application/fhir+json", "User-Agent": USER_AGENT}
        if t.server_name:
            headers["Host"] = t.server_name if t.port == 443 else f"{t.server_name}:{t.port}"
        timeout = (t.politeness.timeout_s, t.politeness.timeout_s)

        overall_s = 6 * t.politeness.timeout_s  # three requests; a byte-dripping server ends here
        with bounded_session(None, overall_s) as (session, deadline):

            def get(path: str) -> tuple[int, bytes]:
                # Certificates are judged by the TLS controls; this probe only needs the answers. The body is
                # read up to MAX_BODY: an endless body is cut, never buffered whole.
                with session.get(
                    base + path, headers=headers, timeout=timeout, allow_redirects=False, verify=False, stream=True
                ) as response:
                    return response.status_code, read_capped(response, MAX_BODY)

            outcome = FhirProbe._ask(get, t.politeness.timeout_s, base_path)
            if deadline.fired:
                return ProbeError(
                    ProbeErrorReason.TIMEOUT, f"no complete answers within {overall_s:g}s (overall limit)"
                )
            return outcome

    @staticmethod
    def _ask(get: Callable[[str], tuple[int, bytes]], timeout_s: float, base_path: str = "") -> ProbeOutcome:
        """The three requests, each relative to the FHIR base (`get` prefixes it; `base_path` is for the facts)."""
        try:
            meta_status, meta_body = get("/metadata")
            try:
                doc = json.loads(meta_body) if meta_status == 200 else None
            except (ValueError, RecursionError):  # a target's answer may nest deeper than the parser's stack
                doc = None
            facts: dict[str, JSONValue] = {
                "fhir.base_path": base_path or "/",
                "fhir.metadata_status": meta_status,
                **capability_facts(doc),
            }
            smart_status, _ = get("/.well-known/smart-configuration")
            facts["fhir.smart_configuration_status"] = smart_status
            resources = [r for r in facts["fhir.resources"] if _RESOURCE_TYPE.match(r)]  # names from the target
            resource = "Patient" if not resources or "Patient" in resources else resources[0]
            path = f"/{resource}?_summary=count"
            search_status, search_body = get(path)
            facts["fhir.unauth_search_path"] = base_path + path
            facts["fhir.unauth_search_status"] = search_status
            total = None
            if search_status == 200:
                with contextlib.suppress(ValueError, AttributeError, RecursionError):
                    value = json.loads(search_body).get("total")
                    total = value if isinstance(value, int) else None
            facts["fhir.unauth_search_total"] = total
            return ProbeFacts(facts)
        except requests.exceptions.ConnectionError as exc:
            refused = "refused" in str(exc).lower()
            reason = ProbeErrorReason.REFUSED if refused else ProbeErrorReason.PROTOCOL
            return ProbeError(reason, f"{type(exc).__name__}: {exc}"[:300])
        except (requests.Timeout, urllib3.exceptions.ReadTimeoutError):
            return ProbeError(ProbeErrorReason.TIMEOUT, f"no answer within {timeout_s:g}s")
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:  # reading the body
            return ProbeError(ProbeErrorReason.PROTOCOL, f"{type(exc).__name__}: {exc}"[:300])

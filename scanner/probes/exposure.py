"""Health-protocol exposure probes: DICOM (EXP-02), HL7 v2 over MLLP (EXP-03) and FHIR (EXP-04, LOG-06).

Each sends as little as it can: DICOM gets one association request through nmap's safe `dicom-ping`
(never a C-STORE, never `dicom-brute`); MLLP gets a TLS handshake attempt and, on non-fragile systems, one
HL7 ACK frame (an acknowledgement, which a receiver does not file as clinical data); FHIR gets
`GET /metadata`, `GET /.well-known/smart-configuration` and one `_summary=count` search without credentials.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
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
from scanner.probes.http import bounded_session, read_capped
from scanner.probes.nmap import NmapArgumentError, NmapError, NseValue, parse_nmap_xml, run_nmap

USER_AGENT = "hcscan/0.1 (compliance scanner; +declared-inventory-only)"
MAX_BODY = 2 * 1024 * 1024
_VB, _FS, _CR = b"\x0b", b"\x1c", b"\x0d"


def _lenient_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # trust is TLS-0x's job; here we only ask "does it speak TLS"
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with contextlib.suppress(ssl.SSLError):
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


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
    # One overall limit: a per-read timeout never fires on a server that drips a byte a second.
    timer = threading.Timer(timeout_s, _shutdown, (sock,))
    timer.daemon = True
    timer.start()
    started = time.monotonic()
    try:
        with _lenient_context().wrap_socket(sock, server_hostname=server_name) as tls:
            tls.version()
        return True
    except TimeoutError:
        return ProbeError(ProbeErrorReason.TIMEOUT, f"no TLS handshake within {timeout_s:g}s (tarpit?)")
    except (ssl.SSLError, OSError):
        if time.monotonic() - started >= timeout_s:
            return ProbeError(ProbeErrorReason.TIMEOUT, f"no complete TLS handshake within {timeout_s:g}s")
        return False
    finally:
        timer.cancel()
        sock.close()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


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


def dicom_ping_facts(data: NseValue, output: str) -> dict[str, JSONValue]:
    """Facts from nmap's dicom-ping result: {dicom: "DICOM Service Provider discovered!", config: ...}."""
    fields = data if isinstance(data, dict) else {}
    config = str(fields.get("config", ""))
    discovered = "discovered" in str(fields.get("dicom", "")).lower() or "discovered" in output.lower()
    any_aet = None
    if config:
        any_aet = "any aet is accepted" in config.lower()
    return {
        "dicom.service": discovered,
        "dicom.any_aet_accepted": any_aet,
        "dicom.ping_output": output.strip()[:500],
    }


class DicomProbe:
    """Is DICOM spoken in the clear, and does it accept any calling/called AE title (nmap dicom-ping)?"""

    kind: ClassVar[str] = "dicom"
    protocols: ClassVar[frozenset[str]] = frozenset({"dicom", "dicom-tls"})
    facts: ClassVar[Sequence[FactSpec]] = (
        FactSpec("dicom.tls", "bool", "The port completed a TLS handshake (DICOM over TLS, usually port 2762)."),
        FactSpec("dicom.service", "bool", "A DICOM service provider answered the association request.", True),
        FactSpec(
            "dicom.any_aet_accepted",
            "bool",
            "nmap dicom-ping: an association with an arbitrary AE title was accepted (no AE title check).",
            True,
        ),
        FactSpec("dicom.ping_output", "str", "nmap dicom-ping output (evidence).", True),
        FactSpec("dicom.nmap_xml_sha256", "str", "SHA-256 of the raw nmap XML of the dicom-ping run.", True),
    )

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        tls: dict[str, bool] = {}
        results: dict[str, ProbeOutcome] = {}
        for key, outcome in _concurrently(targets, ctx, self._tls).items():
            if isinstance(outcome, ProbeError):
                results[key] = outcome
            else:
                tls[key] = bool(outcome.facts["dicom.tls"])
        plain = [t for t in targets if t.key in tls and not tls[t.key]]
        pings = self._ping(plain, ctx)
        for t in targets:
            if t.key in results:
                continue
            if tls[t.key]:
                # nmap 7.93's dicom-ping does not speak TLS; the association is not tried over TLS.
                results[t.key] = ProbeFacts(
                    {
                        "dicom.tls": True,
                        "dicom.service": None,
                        "dicom.any_aet_accepted": None,
                        "dicom.ping_output": None,
                    }
                )
            else:
                ping = pings.get(t.key)
                if isinstance(ping, ProbeError):
                    results[t.key] = ping
                else:
                    results[t.key] = ProbeFacts({"dicom.tls": False, **(ping or {})})
        return results

    @staticmethod
    def _tls(t: Target) -> ProbeOutcome:
        r = tls_handshake(t.address, t.port, t.politeness.timeout_s, t.server_name)
        return r if isinstance(r, ProbeError) else ProbeFacts({"dicom.tls": r})

    @staticmethod
    def _ping(targets: Sequence[Target], ctx: ProbeContext) -> dict[str, dict[str, JSONValue] | ProbeError]:
        out: dict[str, dict[str, JSONValue] | ProbeError] = {}
        for t in targets:  # one small nmap run per endpoint: each keeps its own system's politeness
            try:
                run = run_nmap(
                    [t.address],
                    [t.port],
                    scripts=["dicom-ping"],
                    politeness=t.politeness,
                    timeout_s=max(10.0, t.politeness.timeout_s * 2),
                    nmap_path=ctx.nmap_path,
                )
                scan = parse_nmap_xml(run.xml)
            except NmapError as exc:
                out[t.key] = ProbeError(exc.reason, exc.detail)
                continue
            except NmapArgumentError as exc:
                out[t.key] = ProbeError(ProbeErrorReason.INTERNAL, str(exc))
                continue
            port = scan.ports.get((t.address, t.port))
            if port is None or port.state != "open":
                state = port.state if port else "missing"
                out[t.key] = ProbeError(
                    ProbeErrorReason.REFUSED if state == "closed" else ProbeErrorReason.TIMEOUT, state
                )
                continue
            script = port.scripts.get("dicom-ping")
            if script is None:
                out[t.key] = {"dicom.service": False, "dicom.any_aet_accepted": None, "dicom.ping_output": None}
            else:
                out[t.key] = dicom_ping_facts(script.data, script.output) | {"dicom.nmap_xml_sha256": run.xml_sha256}
        return out


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
        FactSpec("fhir.metadata_status", "int", "HTTP status of GET /metadata."),
        FactSpec("fhir.capability", "bool", "GET /metadata returned a CapabilityStatement."),
        FactSpec("fhir.fhir_version", "str", "fhirVersion of the CapabilityStatement.", True),
        FactSpec("fhir.security_services", "list[str]", "rest[].security.service codes and texts."),
        FactSpec(
            "fhir.smart_oauth", "bool", "Security service SMART-on-FHIR/OAuth, or the SMART oauth-uris extension."
        ),
        FactSpec("fhir.resources", "list[str]", "Resource types the server declares."),
        FactSpec("fhir.audit_event_supported", "bool", "AuditEvent is among the declared resource types."),
        FactSpec("fhir.smart_configuration_status", "int", "HTTP status of /.well-known/smart-configuration.", True),
        FactSpec(
            "fhir.unauth_search_path", "str", "The search sent without credentials (e.g. /Patient?_summary=count)."
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
        base = f"https://{host}:{t.port}"
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

            outcome = FhirProbe._ask(get, t.politeness.timeout_s)
            if deadline.fired:
                return ProbeError(
                    ProbeErrorReason.TIMEOUT, f"no complete answers within {overall_s:g}s (overall limit)"
                )
            return outcome

    @staticmethod
    def _ask(get: Callable[[str], tuple[int, bytes]], timeout_s: float) -> ProbeOutcome:
        try:
            meta_status, meta_body = get("/metadata")
            try:
                doc = json.loads(meta_body) if meta_status == 200 else None
            except ValueError:
                doc = None
            facts: dict[str, JSONValue] = {"fhir.metadata_status": meta_status, **capability_facts(doc)}
            smart_status, _ = get("/.well-known/smart-configuration")
            facts["fhir.smart_configuration_status"] = smart_status
            resources = facts["fhir.resources"]
            resource = "Patient" if not resources or "Patient" in resources else str(resources[0])
            path = f"/{resource}?_summary=count"
            search_status, search_body = get(path)
            facts["fhir.unauth_search_path"] = path
            facts["fhir.unauth_search_status"] = search_status
            total = None
            if search_status == 200:
                with contextlib.suppress(ValueError, AttributeError):
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

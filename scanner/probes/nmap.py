"""The one place hcscan runs nmap: argument building from validated parts, running, and XML parsing.

Arguments are built only from validated pieces (IP addresses, port numbers, allowlisted scripts and
flags), so nothing a control or inventory says can smuggle an option into the command line. The raw
XML is kept as evidence and parsed with a hardened parser, because script output comes from targets.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeAlias
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
import nmap

from scanner.probes.base import Politeness, ProbeErrorReason

NseValue: TypeAlias = str | list["NseValue"] | dict[str, "NseValue"]

# Script → its categories as nmap 7.93's script.db lists them (tests compare with the installed db).
ALLOWED_SCRIPTS: Mapping[str, frozenset[str]] = {
    "ssl-enum-ciphers": frozenset({"discovery", "intrusive"}),
    "ssl-cert": frozenset({"default", "discovery", "safe"}),
    "ssl-date": frozenset({"default", "discovery", "safe"}),
    "sslv2": frozenset({"default", "safe"}),
    "tls-alpn": frozenset({"default", "discovery", "safe"}),
    "tls-nextprotoneg": frozenset({"default", "discovery", "safe"}),
    "ssl-dh-params": frozenset({"safe", "vuln"}),
    "dicom-ping": frozenset({"auth", "default", "discovery", "safe"}),
    "banner": frozenset({"discovery", "safe"}),
    "http-headers": frozenset({"discovery", "safe"}),
    "http-title": frozenset({"default", "discovery", "safe"}),
    "http-server-header": frozenset({"version"}),
    "http-security-headers": frozenset({"discovery", "safe"}),
    "http-date": frozenset({"discovery", "safe"}),
    "http-methods": frozenset({"default", "safe"}),
    "ssh-hostkey": frozenset({"default", "discovery", "safe"}),
    "ssh2-enum-algos": frozenset({"discovery", "safe"}),
    "ntp-info": frozenset({"default", "discovery", "safe"}),
    "ldap-rootdse": frozenset({"discovery", "safe"}),
    "rdp-enum-encryption": frozenset({"discovery", "safe"}),
    "smb-protocols": frozenset({"discovery", "safe"}),
    "smb2-security-mode": frozenset({"default", "discovery", "safe"}),
    "telnet-encryption": frozenset({"discovery", "safe"}),
    "vnc-info": frozenset({"default", "discovery", "safe"}),
}

REFUSED_CATEGORIES: frozenset[str] = frozenset({"brute", "dos", "exploit", "intrusive", "malware", "fuzzer"})

# Reviewed exceptions to REFUSED_CATEGORIES, with the reason. nmap files ssl-enum-ciphers under
# "intrusive" only because it makes many (ordinary, complete) handshakes; TLS-01/02 need it.
REVIEWED_EXCEPTIONS: Mapping[str, str] = {
    "ssl-enum-ciphers": "many ordinary TLS handshakes, nothing else; needed for protocol/cipher facts",
}

# Scripts that may be forced with nmap's "+" prefix (`--script +dicom-ping`): run on a declared port whatever the
# script's portrule says (dicom-ping only looks at 104, 2345, 2761, 2762, 4242 and 11112 by itself). Forcing is
# for reviewed `safe` scripts only; a script in any category below is never forced, even if listed here.
FORCEABLE_SCRIPTS: frozenset[str] = frozenset({"dicom-ping"})
FORCE_REFUSED_CATEGORIES: frozenset[str] = REFUSED_CATEGORIES | {"vuln"}

# Scripts that write into a DICOM archive (C-STORE) are refused whatever the allowlist says.
_DICOM_WRITING = re.compile(r"dicom-(store|put|upload|send)", re.IGNORECASE)
_SCRIPT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*(\.[a-z0-9-]+)*$")
_ARG_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_ARG_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+-]*$")
_SCAN_DELAY = re.compile(r"^\d{1,5}(ms|s)?$")

# Extra flags a caller may add: bare flags, and flags taking one validated value.
EXTRA_FLAGS: frozenset[str] = frozenset({"-sV", "--version-light", "--reason", "--open", "-O"})
EXTRA_VALUED: Mapping[str, re.Pattern[str]] = {
    "--version-intensity": re.compile(r"^[0-9]$"),
    "--max-os-tries": re.compile(r"^[1-5]$"),
    "--max-retries": re.compile(r"^(10|[0-9])$"),
    "--max-rate": re.compile(r"^\d{1,6}(\.\d{1,3})?$"),
    "--scan-delay": _SCAN_DELAY,
    "--max-scan-delay": _SCAN_DELAY,
}


SCRIPT_TIMEOUT_SHARE = 0.8  # of the host timeout: scripts give up first

# nmap processes running at once in this hcscan process, over every probe (service, uptime, TLS, exposure run
# side by side): nmap mostly waits on the network, but each process holds sockets and the machine may be small.
NMAP_MAX_PROCESSES = 3
_PROCESS_SLOTS = threading.BoundedSemaphore(NMAP_MAX_PROCESSES)
# --max-parallelism of one run is the sum of its systems' caps, but never more than this (a chunk of 64 systems
# at 4 each is 256 probes in flight: already more than one nmap process keeps busy on a small machine).
MAX_RUN_PARALLELISM = 256
MAX_HOSTGROUP = 1024


def _ber(tag: int, content: bytes) -> bytes:
    """One BER element with a short-form length (every element below is under 128 bytes)."""
    if len(content) > 127:
        raise ValueError("short-form BER only")
    return bytes((tag, len(content))) + content


def _snmpv3_discovery() -> bytes:
    """An SNMPv3 engine-discovery request (RFC 3414 4.): a GetRequest with no variables, no user, no community.

    An agent answers it with a Report (unknown engine ID) whatever its access rules: proof of life, no data."""
    integer, octets, sequence = 0x02, 0x04, 0x30
    header = _ber(
        sequence,
        _ber(integer, b"\x2a\x17") + _ber(integer, b"\x05\xdc") + _ber(octets, b"\x04") + _ber(integer, b"\x03"),
    )  # msgID, msgMaxSize 1500, flags: reportable only, USM
    usm = _ber(sequence, _ber(octets, b"") + _ber(integer, b"\x00") * 2 + _ber(octets, b"") * 3)
    pdu = _ber(0xA0, _ber(integer, b"\x2a\x17") + _ber(integer, b"\x00") * 2 + _ber(sequence, b""))
    scoped = _ber(sequence, _ber(octets, b"") * 2 + pdu)
    return _ber(sequence, _ber(integer, b"\x03") + header + _ber(octets, usm) + scoped)


# The UDP sweep (-sU, root only): the reviewed ports and the one datagram each gets. Sent with --data (or an empty
# datagram with --data-length 0), never from nmap's own payload list: for 161 that list also holds an SNMPv1 walk
# with the community "public", which nmap 7.93 sends as well — a guessed community string.
UDP_PAYLOADS: Mapping[int, bytes] = {
    123: b"\x23" + bytes(47),  # NTP v4 client request (mode 3), all timestamps zero: a server answers with its time
    161: _snmpv3_discovery(),
    514: b"",  # syslog never answers; an empty datagram is no log message
}


class NmapArgumentError(ValueError):
    """An nmap argument did not pass validation (not an IP, bad port, unknown flag ...)."""


class ScriptRefused(NmapArgumentError):
    """An NSE script is not on the allowlist or belongs to a refused category."""


@dataclass(frozen=True)
class NmapError(Exception):
    """nmap could not run or produced nothing usable; `reason` maps straight to a ProbeError."""

    reason: ProbeErrorReason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@dataclass(frozen=True)
class NmapRun:
    """One nmap process: the raw XML (evidence), its hash, the exact argv and the wall time.

    `cut_short`: why the process was stopped before it finished (only with `run_nmap(keep_partial=True)`); the XML
    then holds the hosts nmap had finished (nmap writes each host when it is done) and no `<runstats>`."""

    xml: str
    xml_sha256: str
    command: list[str]
    elapsed_s: float
    cut_short: str | None = None


@dataclass(frozen=True)
class NmapScript:
    """One NSE script result: the flat text and the structured `<table>/<elem>` tree."""

    id: str
    output: str
    data: NseValue


@dataclass(frozen=True)
class NmapPort:
    """One scanned (host, port)."""

    address: str
    port: int
    protocol: str
    state: str  # open, closed, filtered, open|filtered ...
    reason: str
    service: str | None
    scripts: Mapping[str, NmapScript] = field(default_factory=dict)


@dataclass(frozen=True)
class NmapScan:
    """A parsed nmap XML document."""

    ports: Mapping[tuple[str, int], NmapPort]
    hosts_up: frozenset[str]
    hosts_timed_out: frozenset[str]
    finished_ok: bool
    error_message: str | None


# ---------------------------------------------------------------------------------------------
# validation and argument building (pure)


def validate_host(host: str) -> str:
    """Return the canonical text of an IP address; refuse names, ranges and anything else."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError as exc:
        raise NmapArgumentError(f"not an IP address: {host!r}") from exc


def validate_port(port: int) -> int:
    """Return the port if it is an int in 1..65535."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise NmapArgumentError(f"not a TCP port number: {port!r}")
    return port


def validate_script(name: str) -> str:
    """Return the script name if allowlisted and in no refused category; else raise ScriptRefused.

    `+name` (run regardless of the script's portrule) is accepted only for FORCEABLE_SCRIPTS that are `safe` and
    in no FORCE_REFUSED_CATEGORIES.
    """
    if isinstance(name, str) and name.startswith("+"):
        bare = name[1:]
        if not _SCRIPT_NAME.match(bare):  # "++x", "+", "+a,b": only one "+" before one plain name
            raise ScriptRefused(f"not a plain NSE script name: {name!r}")
        of_bare = ALLOWED_SCRIPTS[validate_script(bare)]
        if bare not in FORCEABLE_SCRIPTS:
            raise ScriptRefused(f"script {bare!r} may not be forced with '+' (only {sorted(FORCEABLE_SCRIPTS)})")
        if of_bare & FORCE_REFUSED_CATEGORIES or "safe" not in of_bare:
            raise ScriptRefused(f"script {bare!r} is not safe to force (categories {sorted(of_bare)})")
        return name
    if not isinstance(name, str) or not _SCRIPT_NAME.match(name):
        raise ScriptRefused(f"not a plain NSE script name: {name!r}")
    if _DICOM_WRITING.search(name):
        raise ScriptRefused(f"script {name!r} would write into a DICOM archive")
    categories = ALLOWED_SCRIPTS.get(name)
    if categories is None:
        raise ScriptRefused(f"script {name!r} is not on hcscan's allowlist")
    refused = categories & REFUSED_CATEGORIES
    if refused and name not in REVIEWED_EXCEPTIONS:
        raise ScriptRefused(f"script {name!r} is in refused categories {sorted(refused)}")
    return name


def validate_script_args(script_args: Mapping[str, str]) -> str | None:
    """Render `--script-args` from plain keys and values (no commas, braces, quotes or spaces)."""
    parts: list[str] = []
    for key, value in sorted(script_args.items()):
        if not _ARG_KEY.match(key) or not isinstance(value, str) or not _ARG_VALUE.match(value):
            raise NmapArgumentError(f"script argument refused: {key!r}={value!r}")
        parts.append(f"{key}={value}")
    return ",".join(parts) if parts else None


def validate_extra(extra: Sequence[str]) -> list[str]:
    """Accept only allowlisted extra flags, each valued flag followed by a value matching its pattern."""
    out: list[str] = []
    i = 0
    while i < len(extra):
        flag = extra[i]
        if flag in EXTRA_FLAGS:
            out.append(flag)
            i += 1
        elif flag in EXTRA_VALUED:
            if i + 1 >= len(extra) or not EXTRA_VALUED[flag].match(extra[i + 1]):
                raise NmapArgumentError(f"flag {flag} needs a valid value")
            out += [flag, extra[i + 1]]
            i += 2
        else:
            raise NmapArgumentError(f"nmap flag not allowed: {flag!r}")
    return out


def udp_scan_possible() -> bool:
    """nmap's UDP scan sends raw packets: only as root."""
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _seconds(value: float) -> str:
    return f"{max(1, round(value))}s"


def run_parallelism(politeness: Politeness, systems: int) -> int:
    """The `--max-parallelism` of one nmap run covering `systems` systems that share `politeness`.

    `politeness.max_concurrency` is a per-system limit, but nmap's `--max-parallelism` counts the probes in
    flight across the whole run. A run over k systems gets max_concurrency × k: the total the k systems may
    take together (nmap does not split it evenly, so one host of the run may get more than its share). A
    system whose limit must hold for itself (`politeness.strict`: fragile, or a max_concurrency declared in
    the inventory) is planned into runs of its own, where the cap is exactly its max_concurrency.
    """
    if isinstance(systems, bool) or not isinstance(systems, int) or systems < 1:
        raise NmapArgumentError(f"a run covers at least one system, got {systems!r}")
    if politeness.strict and systems != 1:
        raise NmapArgumentError(f"a system with a hard concurrency limit must have its own run, not one of {systems}")
    return min(MAX_RUN_PARALLELISM, max(1, int(politeness.max_concurrency)) * systems)


def build_arguments(
    ports: Sequence[int],
    *,
    scripts: Sequence[str],
    script_args: Mapping[str, str],
    politeness: Politeness,
    extra: Sequence[str],
    timeout_s: float,
    systems: int = 1,
    udp: bool = False,
    hostgroup: int | None = None,
) -> list[str]:
    """The nmap options (without hosts and -oX) for one run over `systems` systems; everything validated.

    `udp`: a UDP scan (-sU) of one port of UDP_PAYLOADS with its reviewed datagram, no scripts. `hostgroup`: scan
    at most that many hosts side by side (`--max-hostgroup`); nmap writes each group's hosts when the group is
    done, so a run stopped early still holds every group it finished."""
    valid = sorted({validate_port(p) for p in ports})
    port_list = ",".join(str(p) for p in valid)
    if not port_list:
        raise NmapArgumentError("no ports to scan")
    if udp and (len(valid) != 1 or valid[0] not in UDP_PAYLOADS or scripts or script_args):
        raise NmapArgumentError(f"a UDP run scans one of {sorted(UDP_PAYLOADS)} without scripts, got {valid}")
    timing = politeness.timing
    if isinstance(timing, bool) or not isinstance(timing, int) or not 0 <= timing <= 5:
        raise NmapArgumentError(f"timing template must be 0..5, got {timing!r}")
    args = ["-sU" if udp else "-sT", "-Pn", "-n", f"-T{timing}", "-p", port_list]
    args += ["--host-timeout", _seconds(timeout_s)]
    args += ["--max-parallelism", str(run_parallelism(politeness, systems))]
    if hostgroup is not None:
        if isinstance(hostgroup, bool) or not isinstance(hostgroup, int) or not 1 <= hostgroup <= MAX_HOSTGROUP:
            raise NmapArgumentError(f"host group must be 1..{MAX_HOSTGROUP}, got {hostgroup!r}")
        args += ["--max-hostgroup", str(hostgroup)]
    if udp:
        payload = UDP_PAYLOADS[valid[0]]
        args += ["--data", payload.hex()] if payload else ["--data-length", "0"]
        args += ["--max-retries", "1"]  # a silent port (open|filtered) costs two datagrams, not ten
    if scripts:
        args += ["--script", ",".join(validate_script(s) for s in scripts)]
        # Scripts give up before the host does, so a slow port does not cost the host's other ports.
        args += ["--script-timeout", _seconds(timeout_s * SCRIPT_TIMEOUT_SHARE)]
        rendered = validate_script_args(script_args)
        if rendered:
            args += ["--script-args", rendered]
    elif script_args:
        raise NmapArgumentError("script arguments given without scripts")
    args += validate_extra(extra)
    return args


# ---------------------------------------------------------------------------------------------
# running (I/O)


@lru_cache(maxsize=8)
def _nmap_binary(search: tuple[str, ...]) -> str:
    """The nmap executable python-nmap finds on `search` (it checks `nmap -V` answers as nmap); looked up once."""
    try:
        scanner: Any = nmap.PortScanner(nmap_search_path=search)
    except nmap.PortScannerError as exc:
        raise NmapError(ProbeErrorReason.TOOL_MISSING, str(exc).strip()[:500]) from exc
    return str(scanner._nmap_path)


def process_limit(timeout_s: float) -> float:
    """The default backstop for one nmap process whose hosts nmap scans side by side under `--host-timeout`."""
    return timeout_s * 1.5 + 15


def run_time_limit(host_timeout: float, hosts: int, hostgroup: int) -> float:
    """The backstop for a run over `hosts` hosts that nmap scans `hostgroup` at a time (`--max-hostgroup`): each
    group ends by nmap's `--host-timeout` (plus its output), the groups one after another, so the limit follows
    the run's size. Not the usual end of a run: nmap's host timeout ends it first."""
    groups = max(1, -(-hosts // max(1, hostgroup)))
    return groups * (host_timeout + 15) + process_limit(host_timeout) - host_timeout - 15


def run_nmap(
    hosts: Sequence[str],
    ports: Sequence[int],
    *,
    scripts: Sequence[str] = (),
    script_args: Mapping[str, str] | None = None,
    politeness: Politeness,
    extra: Sequence[str] = (),
    timeout_s: float,
    nmap_path: str | None = None,
    systems: int = 1,
    udp: bool = False,
    hostgroup: int | None = None,
    process_timeout_s: float | None = None,
    keep_partial: bool = False,
) -> NmapRun:
    """Run nmap once over `hosts` × `ports` (belonging to `systems` systems) and return its XML.

    Raises NmapArgumentError/ScriptRefused for invalid input (before anything runs) and NmapError
    (TOOL_MISSING, TOOL_FAILED or TIMEOUT) when nmap cannot deliver a complete XML document. `udp`: see
    build_arguments; it needs root (`udp_scan_possible`), else TOOL_FAILED before anything runs.

    The process is stopped after `process_timeout_s` (default `process_limit(timeout_s)`: nmap's own
    `--host-timeout` ends a run first; this is a backstop for a wedged nmap). With `keep_partial` a stopped run is
    returned with `cut_short` set and the XML nmap had written (each finished host); without, it is a TIMEOUT.
    At most NMAP_MAX_PROCESSES nmap processes run at once in this process; a run waits for a slot.

    python-nmap finds and checks the nmap binary; the process itself is started here with the validated argv
    (python-nmap's `scan()` discards everything when it stops a process and parses the XML a second time).
    """
    if udp and not udp_scan_possible():
        raise NmapError(ProbeErrorReason.TOOL_FAILED, "a UDP scan (nmap -sU) needs root")
    host_list = sorted({validate_host(h) for h in hosts}, key=ipaddress.ip_address)
    if not host_list:
        raise NmapArgumentError("no hosts to scan")
    args = build_arguments(
        ports,
        scripts=scripts,
        script_args=script_args or {},
        politeness=politeness,
        extra=extra,
        timeout_s=timeout_s,
        systems=systems,
        udp=udp,
        hostgroup=hostgroup,
    )
    if any(":" in h for h in host_list):
        if not all(":" in h for h in host_list):
            raise NmapArgumentError("IPv4 and IPv6 hosts must be scanned in separate runs")
        args.append("-6")
    search = (nmap_path,) if nmap_path else ("nmap", "/usr/bin/nmap", "/usr/local/bin/nmap")
    command = [_nmap_binary(search), "-oX", "-", *host_list, *args]
    limit = process_limit(timeout_s) if process_timeout_s is None else process_timeout_s
    cut_short: str | None = None
    with _PROCESS_SLOTS:
        started = time.monotonic()
        try:
            proc = subprocess.Popen(  # argv built from validated parts only, no shell
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            raise NmapError(ProbeErrorReason.TOOL_FAILED, f"{type(exc).__name__}: {exc}") from exc
        try:
            out, err = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()  # what nmap wrote before it was stopped: every host it had finished
            cut_short = f"nmap did not finish within {limit:.0f}s"
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        elapsed = time.monotonic() - started
    if cut_short is not None and not keep_partial:
        raise NmapError(ProbeErrorReason.TIMEOUT, cut_short)
    xml = out.decode("utf-8", errors="replace")
    if cut_short is None and (proc.returncode != 0 or "<nmaprun" not in xml):
        detail = err.decode("utf-8", errors="replace").strip() or f"nmap exited with status {proc.returncode}"
        raise NmapError(ProbeErrorReason.TOOL_FAILED, detail[:500])
    return NmapRun(
        xml=xml,
        xml_sha256=hashlib.sha256(xml.encode("utf-8")).hexdigest(),
        command=command,
        elapsed_s=elapsed,
        cut_short=cut_short,
    )


# ---------------------------------------------------------------------------------------------
# parsing (pure)


def nse_tree(node: Element) -> NseValue:
    """Convert a `<script>` or `<table>` element's children into nested dicts/lists.

    All children keyed → dict; none keyed → list; mixed → dict with the unkeyed ones under "_items".
    `<elem>` becomes its text. An element without children is an empty dict.
    """
    children = [c for c in node if c.tag in ("table", "elem")]
    keyed: dict[str, NseValue] = {}
    unkeyed: list[NseValue] = []
    for child in children:
        value: NseValue = (child.text or "") if child.tag == "elem" else nse_tree(child)
        key = child.get("key")
        if key is None:
            unkeyed.append(value)
        else:
            keyed[key] = value
    if keyed and unkeyed:
        keyed["_items"] = unkeyed
        return keyed
    if unkeyed:
        return unkeyed
    return keyed


def parse_nmap_xml(xml: str) -> NmapScan:
    """Parse nmap's XML (hardened: no entities, no external references) into per-(host, port) results."""
    try:
        root = SafeET.fromstring(xml)
    except Exception as exc:  # defusedxml raises several types; all mean "unusable output"
        raise NmapError(ProbeErrorReason.TOOL_FAILED, f"unreadable nmap XML: {exc}") from exc
    if root.tag != "nmaprun":
        raise NmapError(ProbeErrorReason.TOOL_FAILED, f"not an nmap XML document: <{root.tag}>")
    ports: dict[tuple[str, int], NmapPort] = {}
    up: set[str] = set()
    timed_out: set[str] = set()
    for host in root.iter("host"):
        address = next(
            (a.get("addr", "") for a in host.findall("address") if a.get("addrtype") in ("ipv4", "ipv6")),
            "",
        )
        if not address:
            continue
        status = host.find("status")
        if status is not None and status.get("state") == "up":
            up.add(address)
        if host.get("timedout") == "true":
            timed_out.add(address)
        for port in host.iter("port"):
            try:
                portid = int(port.get("portid", "0"))
            except ValueError:  # damaged output: this port is not reported (its target becomes `error`)
                continue
            state_el = port.find("state")
            service_el = port.find("service")
            scripts = {
                s.get("id", ""): NmapScript(id=s.get("id", ""), output=s.get("output", ""), data=nse_tree(s))
                for s in port.findall("script")
            }
            ports[(address, portid)] = NmapPort(
                address=address,
                port=portid,
                protocol=port.get("protocol", "tcp"),
                state=state_el.get("state", "unknown") if state_el is not None else "unknown",
                reason=state_el.get("reason", "") if state_el is not None else "",
                service=service_el.get("name") if service_el is not None else None,
                scripts=scripts,
            )
    finished = root.find("runstats/finished")
    finished_ok = finished is not None and finished.get("exit", "success") == "success"
    error_message = finished.get("errormsg") if finished is not None else "nmap output cut short"
    return NmapScan(
        ports=ports,
        hosts_up=frozenset(up),
        hosts_timed_out=frozenset(timed_out),
        finished_ok=finished_ok,
        error_message=error_message,
    )

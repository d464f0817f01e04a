"""The uptime probe: how long each host of a system has run since its last boot, estimated by nmap's OS
detection from the host's TCP timestamp clock (PAT-04: a host that has not rebooted for months cannot have
applied its kernel patches).

The estimate is only as good as the clock it reads. nmap measures how fast the TCP timestamp of the host's
answers advances (``<tcptssequence class="1000HZ">``) and divides the current value by that rate. A host that
sends no timestamps, or randomises them per connection (Linux since 4.10 by default: nmap then reports class
``other`` and still prints an "uptime" that means nothing), gives no usable estimate; this probe records why,
and PAT-04 is then not applicable to the host rather than judged on noise. OS detection sends raw packets, so
nmap needs root (or CAP_NET_RAW/CAP_NET_ADMIN with NMAP_PRIVILEGED set); without that the probe says so and
every PAT-04 finding is `error`. It is never run against `fragile: true` systems.

Traffic: a connect scan of the system's declared ports on its declared hosts, then nmap's OS probes (about
16 packets per host, a few of them to one closed TCP and one closed UDP port nmap picks). A host that does
not answer, times out or has no open declared port is `error`, never "no estimate".
"""

from __future__ import annotations

import io
import os
import re
import traceback
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import defusedxml.ElementTree as SafeET

from scanner.probes.base import (
    SYSTEM_LEVEL,
    FactSpec,
    JSONValue,
    Politeness,
    ProbeContext,
    ProbeError,
    ProbeErrorReason,
    ProbeFacts,
    ProbeOutcome,
    Target,
    declared_ports,
    system_hosts,
)
from scanner.probes.nmap import NmapArgumentError, NmapError, run_nmap

NMAP_MAX_PROCESSES = 3
SECONDS_PER_DAY = 86_400
_CLOCK_CLASS = re.compile(r"^\d+HZ$")  # nmap's name for a timestamp clock advancing at a steady rate
OS_DETECTION_ARGS = ("-O", "--max-os-tries", "1")
PRIVILEGE_HINT = (
    "uptime is estimated by nmap OS detection, which sends raw packets: run hcscan as root, or give nmap "
    "CAP_NET_RAW and CAP_NET_ADMIN and set NMAP_PRIVILEGED=1 (or waive PAT-04 for this region)"
)

FACTS: tuple[FactSpec, ...] = (
    FactSpec("uptime.estimated", "bool", "At least one host of the system gave a usable uptime estimate."),
    FactSpec("uptime.max_days", "float", "Longest estimated uptime among the system's hosts, in days.", True),
    FactSpec("uptime.longest_host", "str", "The host with the longest estimated uptime.", True),
    FactSpec("uptime.last_boot", "str", "nmap's last-boot time of that host (its clock, as nmap prints it).", True),
    FactSpec(
        "uptime.hosts",
        "list[object]",
        "Per host: address, estimated, seconds, last_boot, timestamp_clock (nmap's tcptssequence class), why.",
    ),
    FactSpec("uptime.unestimated", "list[str]", "Hosts without a usable estimate, each with the reason."),
    FactSpec("uptime.nmap_xml_sha256", "str", "SHA-256 of the raw nmap XML the estimates come from."),
)


# ---------------------------------------------------------------------------------------------
# parsing and judging the estimate's worth (pure)


@dataclass(frozen=True)
class HostUptime:
    """What nmap's OS detection said about one host's clock."""

    address: str
    up: bool
    seconds: int | None = None
    last_boot: str | None = None
    clock: str | None = None  # tcptssequence class: "1000HZ", "other", "none returned (unsupported)", ...
    open_ports: int = 0
    timed_out: bool = False


def parse_uptime_xml(xml: str) -> dict[str, HostUptime]:
    """Per host address: status, `<uptime>` and `<tcptssequence>` of an `nmap -O` run (hardened parser)."""
    hosts: dict[str, HostUptime] = {}
    try:
        for _event, elem in SafeET.iterparse(io.StringIO(xml), events=("end",)):
            if elem.tag != "host":
                continue
            address = next(
                (a.get("addr", "") for a in elem.findall("address") if a.get("addrtype") in ("ipv4", "ipv6")), ""
            )
            if address:
                status, uptime, clock = elem.find("status"), elem.find("uptime"), elem.find("tcptssequence")
                seconds = uptime.get("seconds", "") if uptime is not None else ""
                hosts[address] = HostUptime(
                    address=address,
                    up=status is not None and status.get("state") == "up",
                    seconds=int(seconds) if seconds.isdigit() else None,
                    last_boot=uptime.get("lastboot") if uptime is not None else None,
                    clock=clock.get("class") if clock is not None else None,
                    open_ports=sum(1 for s in elem.iterfind("ports/port/state") if s.get("state") == "open"),
                    timed_out=elem.get("timedout") == "true",
                )
            elem.clear()
    except Exception as exc:  # defusedxml and expat raise several types; all mean "unusable output"
        raise NmapError(ProbeErrorReason.TOOL_FAILED, f"unreadable nmap XML: {exc}") from exc
    return hosts


def why_not_looked(address: str, host: HostUptime | None) -> str | None:
    """Why nmap could not read the host's clock at all (the finding is then `error`), or None."""
    if host is None or not host.up:
        return f"{address} did not answer"
    if host.timed_out:
        return f"nmap gave up on {address} (host timeout)"
    if host.open_ports == 0:
        return f"no declared port of {address} is open; OS detection needs one to read the TCP timestamp clock"
    if host.clock is None:
        return f"nmap collected no TCP timestamp sequence from {address}"
    return None


def why_no_estimate(host: HostUptime) -> str | None:
    """None when the clock nmap read gives a usable estimate; otherwise why not, in words a reader can act on."""
    if host.clock == "other":
        return (
            "the host randomises its TCP timestamps (nmap class 'other'), as Linux does by default since 4.10, "
            "so its uptime cannot be estimated from the network"
        )
    if host.clock is None or not _CLOCK_CLASS.match(host.clock):
        return f"the host sends no usable TCP timestamps (nmap: {host.clock})"
    if host.seconds is None:
        return f"nmap gave no uptime for a {host.clock} timestamp clock"
    return None


def system_outcome(hosts: Sequence[str], parsed: Mapping[str, HostUptime], xml_sha256: str) -> ProbeOutcome:
    """The system's facts from the per-host results of one nmap run; `error` if any host could not be looked at."""
    problems = [p for p in (why_not_looked(a, parsed.get(a)) for a in sorted(hosts)) if p is not None]
    if problems:
        return ProbeError(ProbeErrorReason.UNREACHABLE, "; ".join(problems))
    rows: list[dict[str, JSONValue]] = []
    unestimated: list[str] = []
    best: HostUptime | None = None
    for address in sorted(hosts):
        host = parsed[address]
        why = why_no_estimate(host)
        rows.append(
            {
                "address": address,
                "estimated": why is None,
                "seconds": host.seconds if why is None else None,
                "last_boot": host.last_boot if why is None else None,
                "timestamp_clock": host.clock,
                "why": why,
            }
        )
        if why is not None:
            unestimated.append(f"{address}: {why}")
        elif best is None or (host.seconds or 0) > (best.seconds or 0):
            best = host
    return ProbeFacts(
        {
            "uptime.estimated": best is not None,
            "uptime.max_days": round((best.seconds or 0) / SECONDS_PER_DAY, 1) if best is not None else None,
            "uptime.longest_host": best.address if best is not None else None,
            "uptime.last_boot": best.last_boot if best is not None else None,
            "uptime.hosts": rows,
            "uptime.unestimated": unestimated,
            "uptime.nmap_xml_sha256": xml_sha256,
        }
    )


def nmap_may_send_raw_packets() -> bool:
    """Whether nmap can run OS detection here: root, or an nmap told it has the capabilities."""
    return os.geteuid() == 0 or os.environ.get("NMAP_PRIVILEGED", "") not in ("", "0")


@dataclass(frozen=True)
class UptimeRun:
    """One nmap -O process: these systems' hosts × these (declared) ports, with one politeness."""

    politeness: Politeness
    ports: frozenset[int]
    targets: tuple[Target, ...]

    @property
    def systems(self) -> int:
        return len({t.system_id for t in self.targets})


def plan_runs(targets: Sequence[Target], privileged: bool) -> tuple[dict[str, ProbeOutcome], list[UptimeRun]]:
    """Targets that cannot be probed (with why), and the nmap runs for the rest: one per politeness and port
    set, and a run of its own for a system with a hard concurrency limit (fragile systems are never probed)."""
    results: dict[str, ProbeOutcome] = {}
    groups: dict[tuple[Politeness, frozenset[int], str], list[Target]] = defaultdict(list)
    for t in targets:
        ports = frozenset(declared_ports(t))
        if t.protocol != SYSTEM_LEVEL:
            results[t.key] = ProbeError(ProbeErrorReason.INTERNAL, "the uptime probe looks at systems only")
        elif t.politeness.fragile:
            results[t.key] = ProbeError(
                ProbeErrorReason.REFUSED, "OS detection is never run against a fragile system (fragile: true)"
            )
        elif not privileged:
            results[t.key] = ProbeError(ProbeErrorReason.TOOL_FAILED, PRIVILEGE_HINT)
        elif not system_hosts(t):
            results[t.key] = ProbeError(ProbeErrorReason.UNREACHABLE, "no declared host address for this system")
        elif not ports:
            results[t.key] = ProbeError(
                ProbeErrorReason.PROTOCOL, "the system declares no TCP port to read the timestamp clock on"
            )
        else:
            groups[(t.politeness, ports, t.system_id if t.politeness.strict else "")].append(t)
    runs = [UptimeRun(politeness, ports, tuple(group)) for (politeness, ports, _), group in groups.items()]
    return results, runs


# ---------------------------------------------------------------------------------------------
# the probe


class UptimeProbe:
    """nmap -O over the declared ports of each non-fragile system's hosts; PAT-04 facts."""

    kind: ClassVar[str] = "uptime"
    protocols: ClassVar[frozenset[str]] = frozenset({SYSTEM_LEVEL})
    facts: ClassVar[Sequence[FactSpec]] = FACTS

    def __init__(self, privileged: bool | None = None) -> None:
        self.privileged = nmap_may_send_raw_packets() if privileged is None else privileged

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        results, runs = plan_runs(targets, self.privileged)
        with ThreadPoolExecutor(max_workers=NMAP_MAX_PROCESSES, thread_name_prefix="hcscan-uptime") as pool:
            futures = [(run.targets, pool.submit(self._run, run, ctx)) for run in runs]
            for group, future in futures:
                try:
                    results.update(future.result())
                except NmapError as exc:
                    results.update({t.key: ProbeError(exc.reason, exc.detail) for t in group})
                except NmapArgumentError as exc:
                    error = ProbeError(ProbeErrorReason.INTERNAL, f"nmap arguments refused: {exc}")
                    results.update({t.key: error for t in group})
                except Exception:  # a bug must not take the run down
                    error = ProbeError(ProbeErrorReason.INTERNAL, traceback.format_exc(limit=3))
                    results.update({t.key: error for t in group})
        return results

    @staticmethod
    def _run(planned: UptimeRun, ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        hosts = sorted(set().union(*(system_hosts(t) for t in planned.targets)))
        try:
            run = run_nmap(
                hosts,
                sorted(planned.ports),
                politeness=planned.politeness,
                extra=OS_DETECTION_ARGS,
                timeout_s=max(30.0, planned.politeness.timeout_s * 6),
                nmap_path=ctx.nmap_path,
                systems=planned.systems,
            )
        except NmapError as exc:
            if "privileges" in exc.detail:  # nmap: "TCP/IP fingerprinting (for OS scan) requires root privileges."
                raise NmapError(exc.reason, f"{PRIVILEGE_HINT} (nmap: {exc.detail})") from exc
            raise
        parsed = parse_uptime_xml(run.xml)
        return {t.key: system_outcome(sorted(system_hosts(t)), parsed, run.xml_sha256) for t in planned.targets}

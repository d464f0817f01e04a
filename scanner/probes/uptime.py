"""The uptime probe: how long each host of a system has run since its last boot, estimated by nmap's OS
detection from the host's TCP timestamp clock (PAT-04: a host that has not rebooted for months cannot have
applied its kernel patches).

The estimate is only as good as the clock it reads. nmap measures how fast the TCP timestamp of the host's
answers advances (``<tcptssequence class="1000HZ">``) and divides the current value by that rate. Three limits:

- A host that sends no timestamps, or randomises them per connection (nmap class ``other``: it still prints an
  "uptime" that means nothing), gives no estimate. PAT-04 is not applicable to a system none of whose hosts gives
  one, and cannot pass for a system where some host gives none.
- The timestamp is a 32-bit counter: at 1000 Hz it wraps every 49.7 days, so a reading of 3 days may be 52.7 or
  102.4. A reading proves a *lower* bound on the uptime (enough for a fail); only a clock that wraps no sooner
  than a year (≤ 136 Hz) also bounds it from above (needed for a pass). Otherwise the finding is `error`.
- Kernels that add a fixed random offset per address pair (Linux 4.13 up to the per-connection change) show a
  steady clock with a meaningless value; nothing on the network tells them apart, which is why the control has
  low severity and every finding carries the clock class, rate and raw XML hash as evidence.

OS detection sends raw packets, so nmap needs root (or CAP_NET_RAW/CAP_NET_ADMIN with NMAP_PRIVILEGED set);
without that the probe says so and every PAT-04 finding is `error`. It is never run against fragile systems.

Traffic: a connect scan of exactly the ports the inventory declares on each host, then nmap's OS probes (about
16 raw packets per host, a few of them to one closed TCP and one closed UDP port nmap picks, possibly an
undeclared port number). A host that does not answer, times out or has no open declared port is `error`.
"""

from __future__ import annotations

import io
import ipaddress
import logging
import os
import re
import time
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
from scanner.probes.nmap import NMAP_MAX_PROCESSES, NmapArgumentError, NmapError, run_nmap, run_time_limit

MAX_HOSTS_PER_RUN = 64
UPTIME_HOSTGROUP = 16  # hosts nmap looks at side by side; it writes each group when done (kept if a run is cut)
log = logging.getLogger("hcscan.probes.uptime")
SECONDS_PER_DAY = 86_400
COUNTER_RANGE = 2**32  # TCP timestamps are 32-bit
BOUNDING_WRAP_DAYS = 365  # a clock that wraps sooner cannot rule out that the host has run a whole wrap longer
DAY_DECIMALS = 6  # facts in days keep a millionth of a day (0.09 s): finer than a reading, which is whole seconds
_CLOCK_CLASS = re.compile(r"^(\d+)HZ$")  # nmap's name for a timestamp clock advancing at a steady rate
OS_DETECTION_ARGS = ("-O", "--max-os-tries", "1")
PRIVILEGE_HINT = (
    "uptime is estimated by nmap OS detection, which sends raw packets: run hcscan as root, or give nmap "
    "CAP_NET_RAW and CAP_NET_ADMIN and set NMAP_PRIVILEGED=1 (or waive PAT-04 for this region)"
)

FACTS: tuple[FactSpec, ...] = (
    FactSpec("uptime.estimated", "bool", "At least one host of the system gave an uptime reading."),
    FactSpec(
        "uptime.min_days",
        "float",
        "The longest uptime the readings prove (a lower bound), in days, rounded down (6 decimals): an hour is 0.041666.",
        True,
        volatile=True,
    ),
    FactSpec(
        "uptime.max_days",
        "float",
        "The longest uptime of the system's hosts, in days, when the readings bound every host from above "
        "(every host read, on clocks that wrap no sooner than a year), rounded up (6 decimals); null otherwise.",
        True,
        volatile=True,
    ),
    FactSpec("uptime.longest_host", "str", "The host with the longest reading.", True, volatile=True),
    FactSpec(
        "uptime.last_boot",
        "str",
        "nmap's last-boot time of that host (its clock, as nmap prints it).",
        True,
        volatile=True,
    ),
    FactSpec("uptime.unbounded", "list[str]", "Why the uptime cannot be bounded from above, per host.", volatile=True),
    FactSpec(
        "uptime.hosts",
        "list[object]",
        "Per host: address, estimated, seconds, last_boot, timestamp_clock (nmap's tcptssequence class), "
        "wraps_after_days, why.",
        volatile=True,
    ),
    FactSpec("uptime.unestimated", "list[str]", "Hosts without a reading, each with the reason."),
    FactSpec(
        "uptime.nmap_xml_sha256", "list[str]", "SHA-256 of each raw nmap XML the readings come from.", volatile=True
    ),
)


# ---------------------------------------------------------------------------------------------
# parsing and judging the reading's worth (pure)


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

    @property
    def hz(self) -> int | None:
        match = _CLOCK_CLASS.match(self.clock or "")
        return int(match.group(1)) if match and int(match.group(1)) > 0 else None

    @property
    def wraps_after_days(self) -> float | None:
        return COUNTER_RANGE / self.hz / SECONDS_PER_DAY if self.hz else None


@dataclass(frozen=True)
class UptimeScan:
    hosts: Mapping[str, HostUptime]
    finished_ok: bool
    error_message: str | None


def parse_uptime_xml(xml: str) -> UptimeScan:
    """Per host address: status, `<uptime>` and `<tcptssequence>` of an `nmap -O` run (hardened parser)."""
    hosts: dict[str, HostUptime] = {}
    finished_ok: bool = False
    error_message: str | None = "nmap output cut short"
    try:
        for _event, elem in SafeET.iterparse(io.StringIO(xml), events=("end",)):
            if elem.tag == "finished":
                finished_ok = elem.get("exit", "success") == "success"
                error_message = elem.get("errormsg")
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
        if not hosts:
            raise NmapError(ProbeErrorReason.TOOL_FAILED, f"unreadable nmap XML: {exc}") from exc
        # Output cut short (a run stopped at its time limit): the hosts written in full hold, the run is unfinished.
        finished_ok, error_message = False, f"nmap XML cut short: {exc}"
    return UptimeScan(hosts, finished_ok, error_message)


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
    """None when the clock nmap read gives a reading; otherwise why not, in words a reader can act on."""
    if host.clock == "other":
        return (
            "the host randomises its TCP timestamps per connection (nmap class 'other'), so its uptime cannot be "
            "estimated from the network"
        )
    if host.hz is None:
        return f"the host sends no usable TCP timestamps (nmap: {host.clock})"
    if host.seconds is None:
        return f"nmap gave no uptime for a {host.clock} timestamp clock"
    return None


def days_at_least(seconds: int, decimals: int = DAY_DECIMALS) -> float:
    """Seconds as days, rounded down: all a lower bound may claim (round() would make 0.05 days 0.1)."""
    scale: int = 10**decimals
    return (seconds * scale // SECONDS_PER_DAY) / scale


def duration_at_least(seconds: int) -> str:
    """A reading in words, rounded down like the lower bound it is: "14 min", "5.2 h", "49.7 days"."""
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * SECONDS_PER_DAY:
        return f"{seconds * 10 // 3600 / 10:.1f} h"
    return f"{days_at_least(seconds, 1):.1f} days"


def days_at_most(seconds: int, decimals: int = DAY_DECIMALS) -> float:
    """Seconds as days, rounded up: an upper bound never claims less than the reading."""
    scale: int = 10**decimals
    return -(-seconds * scale // SECONDS_PER_DAY) / scale


def system_outcome(hosts: Sequence[str], found: Mapping[str, HostUptime], xml_sha256: Sequence[str]) -> ProbeOutcome:
    """The system's facts from the per-host readings; `error` if any host could not be looked at."""
    problems = [p for p in (why_not_looked(a, found.get(a)) for a in sorted(hosts)) if p is not None]
    if problems:
        return ProbeError(ProbeErrorReason.UNREACHABLE, "; ".join(problems))
    rows: list[dict[str, JSONValue]] = []
    unestimated: list[str] = []
    unbounded: list[str] = []
    longest: HostUptime | None = None
    for address in sorted(hosts):
        host = found[address]
        why = why_no_estimate(host)
        wrap = host.wraps_after_days
        rows.append(
            {
                "address": address,
                "estimated": why is None,
                "seconds": host.seconds if why is None else None,
                "last_boot": host.last_boot if why is None else None,
                "timestamp_clock": host.clock,
                "wraps_after_days": round(wrap, 1) if wrap is not None else None,
                "why": why,
            }
        )
        if why is not None:
            unestimated.append(f"{address}: {why}")
            unbounded.append(f"{address}: no reading")
            continue
        if wrap is not None and wrap < BOUNDING_WRAP_DAYS:
            seconds = host.seconds or 0
            unbounded.append(
                f"{address}: its {host.hz} Hz timestamp clock wraps every {wrap:.1f} days, so the reading of "
                f"{duration_at_least(seconds)} may also be "
                f"{duration_at_least(seconds + int(wrap * SECONDS_PER_DAY))} or more"
            )
        if longest is None or (host.seconds or 0) > (longest.seconds or 0):
            longest = host
    reading = (longest.seconds or 0) if longest is not None else None
    return ProbeFacts(
        {
            "uptime.estimated": longest is not None,
            "uptime.min_days": days_at_least(reading) if reading is not None else None,
            "uptime.max_days": days_at_most(reading) if reading is not None and not unbounded else None,
            "uptime.longest_host": longest.address if longest is not None else None,
            "uptime.last_boot": longest.last_boot if longest is not None else None,
            "uptime.unbounded": unbounded,
            "uptime.hosts": rows,
            "uptime.unestimated": unestimated,
            "uptime.nmap_xml_sha256": sorted(set(xml_sha256)),
        }
    )


def nmap_may_send_raw_packets() -> bool:
    """Whether nmap can run OS detection here: root, or an nmap told it has the capabilities."""
    return os.geteuid() == 0 or os.environ.get("NMAP_PRIVILEGED", "") not in ("", "0")


# ---------------------------------------------------------------------------------------------
# planning the nmap runs (pure)


@dataclass(frozen=True)
class UptimeRun:
    """One nmap -O process: these hosts × these (declared) ports, with one politeness."""

    politeness: Politeness
    ports: tuple[int, ...]
    hosts: tuple[str, ...]
    systems: int


def host_ports(target: Target) -> dict[str, set[int]]:
    """The ports the inventory declares on each of the system's hosts."""
    declared = target.declared.get("host_ports")
    if isinstance(declared, Mapping) and declared:
        return {str(a): {int(p) for p in ports} for a, ports in declared.items()}
    ports = declared_ports(target)  # no per-host map given: every host of the system with the system's ports
    return {a: set(ports) for a in system_hosts(target)}


_RunKey = tuple[Politeness, tuple[int, ...], int, str]  # politeness, declared ports, IP version, own-run system


@dataclass(frozen=True)
class UptimePlan:
    skipped: Mapping[str, ProbeOutcome]  # target key → why it is not probed
    runs: tuple[UptimeRun, ...]
    members: Mapping[str, tuple[tuple[str, int], ...]]  # target key → (host, index of the run covering it)


def plan_runs(targets: Sequence[Target], privileged: bool) -> UptimePlan:
    """Targets that cannot be probed (with why), and the nmap runs for the rest: hosts grouped by politeness,
    declared ports and IP version, at most MAX_HOSTS_PER_RUN a run; a system with a hard concurrency limit gets
    runs of its own; fragile systems are never probed."""
    skipped: dict[str, ProbeOutcome] = {}
    groups: dict[_RunKey, dict[str, set[str]]] = defaultdict(dict)
    wanted: dict[str, list[tuple[str, _RunKey]]] = {}
    for t in targets:
        by_host = host_ports(t)
        if t.protocol != SYSTEM_LEVEL:
            skipped[t.key] = ProbeError(ProbeErrorReason.INTERNAL, "the uptime probe looks at systems only")
        elif t.politeness.fragile:
            skipped[t.key] = ProbeError(
                ProbeErrorReason.REFUSED, "OS detection is never run against a fragile system (fragile: true)"
            )
        elif not privileged:
            skipped[t.key] = ProbeError(ProbeErrorReason.TOOL_FAILED, PRIVILEGE_HINT)
        elif not by_host:
            skipped[t.key] = ProbeError(ProbeErrorReason.UNREACHABLE, "no declared host address for this system")
        elif not all(by_host.values()):
            skipped[t.key] = ProbeError(
                ProbeErrorReason.PROTOCOL, "a host of the system declares no TCP port to read the timestamp clock on"
            )
        else:
            wanted[t.key] = []
            for address, ports in sorted(by_host.items()):
                key: _RunKey = (
                    t.politeness,
                    tuple(sorted(ports)),
                    ipaddress.ip_address(address).version,
                    t.system_id if t.politeness.strict else "",
                )
                groups[key].setdefault(address, set()).add(t.system_id)
                wanted[t.key].append((address, key))
    runs: list[UptimeRun] = []
    run_of: dict[tuple[_RunKey, str], int] = {}
    for group_key, members in groups.items():
        addresses = sorted(members, key=ipaddress.ip_address)
        for i in range(0, len(addresses), MAX_HOSTS_PER_RUN):
            chunk = addresses[i : i + MAX_HOSTS_PER_RUN]
            systems = set().union(*(members[a] for a in chunk))
            for address in chunk:
                run_of[(group_key, address)] = len(runs)
            runs.append(UptimeRun(group_key[0], group_key[1], tuple(chunk), len(systems)))
    members_of = {k: tuple((a, run_of[(key, a)]) for a, key in pairs) for k, pairs in wanted.items()}
    return UptimePlan(skipped, tuple(runs), members_of)


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
        plan = plan_runs(targets, self.privileged)
        results: dict[str, ProbeOutcome] = dict(plan.skipped)
        done: list[tuple[UptimeScan, str, str | None] | ProbeError] = []
        runs = len(plan.runs)
        with ThreadPoolExecutor(max_workers=NMAP_MAX_PROCESSES, thread_name_prefix="hcscan-uptime") as pool:
            for future in [pool.submit(self._run, r, ctx, f"{i}/{runs}") for i, r in enumerate(plan.runs, start=1)]:
                try:
                    done.append(future.result())
                except NmapError as exc:
                    done.append(ProbeError(exc.reason, exc.detail))
                except NmapArgumentError as exc:
                    done.append(ProbeError(ProbeErrorReason.INTERNAL, f"nmap arguments refused: {exc}"))
                except Exception:  # a bug must not take the run down
                    done.append(ProbeError(ProbeErrorReason.INTERNAL, traceback.format_exc(limit=3)))
        for key, members in plan.members.items():
            found: dict[str, HostUptime] = {}
            hashes: list[str] = []
            failure: ProbeError | None = None
            for address, i in members:
                outcome = done[i]
                if isinstance(outcome, ProbeError):
                    failure = failure or outcome
                    continue
                scan, sha, cut_short = outcome
                if address in scan.hosts:
                    found[address] = scan.hosts[address]
                elif cut_short is not None:  # the run was stopped before nmap had finished this host
                    failure = failure or ProbeError(
                        ProbeErrorReason.TIMEOUT, f"{cut_short}; it had not finished {address}"
                    )
                hashes.append(sha)
            results[key] = failure or system_outcome([a for a, _ in members], found, hashes)
        return results

    @staticmethod
    def _run(planned: UptimeRun, ctx: ProbeContext, label: str = "1/1") -> tuple[UptimeScan, str, str | None]:
        host_timeout = max(30.0, planned.politeness.timeout_s * 6)
        started = time.monotonic()
        try:
            run = run_nmap(
                planned.hosts,
                planned.ports,
                politeness=planned.politeness,
                extra=OS_DETECTION_ARGS,
                timeout_s=host_timeout,
                nmap_path=ctx.nmap_path,
                systems=planned.systems,
                hostgroup=UPTIME_HOSTGROUP,
                process_timeout_s=run_time_limit(host_timeout, len(planned.hosts), UPTIME_HOSTGROUP),
                keep_partial=True,
            )
        except NmapError as exc:
            if "privileges" in exc.detail:  # nmap: "TCP/IP fingerprinting (for OS scan) requires root privileges."
                raise NmapError(exc.reason, f"{PRIVILEGE_HINT} (nmap: {exc.detail})") from exc
            raise
        try:
            scan = parse_uptime_xml(run.xml)
        except NmapError:
            if run.cut_short is None:
                raise
            scan = UptimeScan({}, False, run.cut_short)  # stopped before nmap wrote any host
        if run.cut_short is None and not scan.finished_ok:
            raise NmapError(ProbeErrorReason.TOOL_FAILED, scan.error_message or "nmap did not finish")
        unfinished = len(set(planned.hosts) - set(scan.hosts)) if run.cut_short else 0
        log.log(
            logging.WARNING if unfinished else logging.INFO,
            "uptime run %s: %d hosts in %.1f s%s",
            label,
            len(planned.hosts),
            time.monotonic() - started,
            f"; {run.cut_short}, {unfinished} hosts unfinished" if unfinished else "",
        )
        return scan, run.xml_sha256, run.cut_short

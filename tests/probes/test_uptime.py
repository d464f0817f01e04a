"""The uptime probe (PAT-04): recorded nmap output for the pure parts, and real `nmap -O` against a listener in
a network namespace of the test's own, whose kernel sends plain, randomised or no TCP timestamps."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scanner.probes.base import SYSTEM_LEVEL, Politeness, ProbeContext, ProbeError, ProbeFacts, Target
from scanner.probes.nmap import NmapError
from scanner.probes.uptime import (
    PRIVILEGE_HINT,
    HostUptime,
    UptimeProbe,
    days_at_least,
    parse_uptime_xml,
    plan_runs,
    system_outcome,
)
from tests.helpers import make_workspace, system, write_yaml

ROOT = Path(__file__).resolve().parents[2]


def _host(address: str, clock: str | None, uptime: str = "", open_port: bool = True, up: bool = True) -> str:
    state = "open" if open_port else "closed"
    return (
        f'<host><status state="{"up" if up else "down"}" reason="user-set"/>'
        f'<address addr="{address}" addrtype="ipv4"/>'
        f'<ports><port protocol="tcp" portid="8081"><state state="{state}" reason="syn-ack"/></port></ports>'
        f"{uptime}" + (f'<tcptssequence class="{clock}" values="88EA9C,88EB00"/>' if clock else "") + "</host>"
    )


def _xml(*hosts: str) -> str:
    return f'<?xml version="1.0"?><nmaprun>{"".join(hosts)}<runstats><finished exit="success"/></runstats></nmaprun>'


# Shapes of real nmap 7.93 output seen on this kernel: plain clock, randomised clock (nmap still prints a
# meaningless "uptime"), and no timestamps at all.
PLAIN = _host("127.0.0.1", "1000HZ", '<uptime seconds="8973" lastboot="Sun Nov 22 23:56:04 2026"/>')
RANDOM = _host("127.0.0.2", "other", '<uptime seconds="17" lastboot="Mon Nov 23 02:25:29 2026"/>')
NONE = _host("127.0.0.3", "none returned (unsupported)")


def test_parse_reads_uptime_clock_and_open_ports() -> None:
    scan = parse_uptime_xml(_xml(PLAIN, RANDOM, NONE))
    assert scan.finished_ok
    parsed = scan.hosts
    assert parsed["127.0.0.1"] == HostUptime(
        "127.0.0.1", True, 8973, "Sun Nov 22 23:56:04 2026", "1000HZ", open_ports=1, timed_out=False
    )
    assert parsed["127.0.0.2"].clock == "other" and parsed["127.0.0.2"].seconds == 17
    assert parsed["127.0.0.3"].seconds is None
    assert parsed["127.0.0.1"].hz == 1000 and round(parsed["127.0.0.1"].wraps_after_days or 0, 1) == 49.7
    assert not parse_uptime_xml(_xml(PLAIN).replace('exit="success"', 'exit="error"')).finished_ok


def test_output_of_a_run_stopped_at_its_limit_keeps_the_hosts_nmap_wrote_in_full() -> None:
    """nmap writes each host group when it is done; a stopped run's XML ends inside the next host."""
    cut = _xml(PLAIN, RANDOM).split("<runstats>")[0]
    cut = cut[: cut.index("127.0.0.2") + 5]
    scan = parse_uptime_xml(cut)
    assert set(scan.hosts) == {"127.0.0.1"} and scan.hosts["127.0.0.1"].seconds == 8973
    assert not scan.finished_ok and (scan.error_message or "").startswith("nmap XML cut short")
    with pytest.raises(NmapError):  # nothing written in full: unusable output
        parse_uptime_xml(cut[: cut.index("127.0.0.1")])


def _outcome(hosts: list[str], *xml_hosts: str) -> ProbeFacts | ProbeError:
    outcome = system_outcome(hosts, parse_uptime_xml(_xml(*xml_hosts)).hosts, ["sha"])
    assert isinstance(outcome, ProbeFacts | ProbeError)
    return outcome


def test_a_fast_clock_proves_a_lower_bound_but_no_upper_one() -> None:
    outcome = _outcome(["127.0.0.1"], PLAIN)
    assert isinstance(outcome, ProbeFacts)
    assert outcome.facts["uptime.estimated"] is True
    assert outcome.facts["uptime.min_days"] == 0.103854 and outcome.facts["uptime.max_days"] is None  # 8973 s
    assert "1000 Hz timestamp clock wraps every 49.7 days" in outcome.facts["uptime.unbounded"][0]
    assert "the reading of 2.4 h may also be 49.8 days or more" in outcome.facts["uptime.unbounded"][0]
    assert outcome.facts["uptime.longest_host"] == "127.0.0.1" and outcome.facts["uptime.unestimated"] == []


def test_a_slow_clock_bounds_the_uptime() -> None:
    slow = _host("127.0.0.5", "100HZ", '<uptime seconds="864000" lastboot="Fri Nov 13 00:00:00 2026"/>')
    outcome = _outcome(["127.0.0.5"], slow)
    assert isinstance(outcome, ProbeFacts)
    assert outcome.facts["uptime.min_days"] == outcome.facts["uptime.max_days"] == 10.0
    assert outcome.facts["uptime.unbounded"] == []
    assert outcome.facts["uptime.hosts"][0]["wraps_after_days"] == 497.1


@pytest.mark.parametrize(
    ("seconds", "at_least", "at_most"),
    [
        (4320, 0.05, 0.05),  # round(…, 1) made this 0.1: more than the reading proves
        (4321, 0.050011, 0.050012),  # a lower bound is only ever rounded down, an upper bound up
        (60, 0.000694, 0.000695),  # a host booted a minute ago reads more than nothing
        (1, 0.000011, 0.000012),
    ],
)
def test_a_lower_bound_is_rounded_down_and_an_upper_bound_up(seconds: int, at_least: float, at_most: float) -> None:
    slow = _host("127.0.0.5", "100HZ", f'<uptime seconds="{seconds}" lastboot="Mon Nov 23 02:25:29 2026"/>')
    outcome = _outcome(["127.0.0.5"], slow)
    assert isinstance(outcome, ProbeFacts)
    assert (outcome.facts["uptime.min_days"], outcome.facts["uptime.max_days"]) == (at_least, at_most)
    assert outcome.facts["uptime.min_days"] * 86_400 <= seconds <= outcome.facts["uptime.max_days"] * 86_400


def test_randomised_clock_is_no_reading_even_though_nmap_prints_one() -> None:
    outcome = _outcome(["127.0.0.2"], RANDOM)
    assert isinstance(outcome, ProbeFacts)
    assert outcome.facts["uptime.estimated"] is False and outcome.facts["uptime.min_days"] is None
    assert outcome.facts["uptime.max_days"] is None
    assert "randomises its TCP timestamps" in outcome.facts["uptime.unestimated"][0]


def test_one_host_without_a_reading_leaves_the_system_unbounded() -> None:
    slow = _host("127.0.0.5", "100HZ", '<uptime seconds="864000" lastboot="Fri Nov 13 00:00:00 2026"/>')
    longer = _host("127.0.0.4", "100HZ", '<uptime seconds="8640000" lastboot="Wed Jul 15 00:00:00 2026"/>')
    outcome = _outcome(["127.0.0.3", "127.0.0.4", "127.0.0.5"], NONE, longer, slow)
    assert isinstance(outcome, ProbeFacts)
    assert outcome.facts["uptime.min_days"] == 100.0 and outcome.facts["uptime.longest_host"] == "127.0.0.4"
    assert outcome.facts["uptime.max_days"] is None  # 127.0.0.3 may have run longer still
    assert outcome.facts["uptime.unbounded"] == ["127.0.0.3: no reading"]
    assert outcome.facts["uptime.unestimated"] == ["127.0.0.3: the host sends no usable TCP timestamps "
                                                   "(nmap: none returned (unsupported))"]  # fmt: skip


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        ([_host("127.0.0.1", "1000HZ", up=False)], "did not answer"),
        ([], "did not answer"),
        ([_host("127.0.0.1", None, open_port=False)], "no declared port of 127.0.0.1 is open"),
        ([_host("127.0.0.1", None)], "no TCP timestamp sequence"),
    ],
)
def test_a_host_nmap_could_not_look_at_is_an_error_not_a_missing_estimate(hosts: list[str], expected: str) -> None:
    outcome = _outcome(["127.0.0.1"], *hosts)
    assert isinstance(outcome, ProbeError) and expected in outcome.detail


def test_one_silent_host_makes_the_whole_system_an_error() -> None:
    outcome = _outcome(["127.0.0.1", "127.0.0.9"], PLAIN)
    assert isinstance(outcome, ProbeError) and "127.0.0.9 did not answer" in outcome.detail


def _target(*, fragile: bool = False, ports: tuple[int, ...] = (8081,)) -> Target:
    return Target(
        key="sys/*",
        system_id="sys",
        address="127.0.0.1",
        port=0,
        protocol=SYSTEM_LEVEL,
        politeness=Politeness(fragile=fragile),
        declared={"addresses": ["127.0.0.1"], "endpoints": [{"id": "ep", "port": p} for p in ports]},
    )


def test_without_raw_socket_privilege_every_system_is_an_error_that_says_how_to_fix_it() -> None:
    outcome = UptimeProbe(privileged=False).gather([_target()], ProbeContext())["sys/*"]
    assert isinstance(outcome, ProbeError) and outcome.detail == PRIVILEGE_HINT


def test_fragile_systems_and_systems_without_ports_are_never_probed() -> None:
    probe = UptimeProbe(privileged=True)
    fragile = probe.gather([_target(fragile=True)], ProbeContext())["sys/*"]
    assert isinstance(fragile, ProbeError) and "fragile" in fragile.detail
    portless = probe.gather([_target(ports=())], ProbeContext())["sys/*"]
    assert isinstance(portless, ProbeError) and "no TCP port" in portless.detail


def _system(system_id: str, politeness: Politeness, host_ports: dict[str, list[int]]) -> Target:
    return Target(
        key=f"{system_id}/*",
        system_id=system_id,
        address=min(host_ports),
        port=0,
        protocol=SYSTEM_LEVEL,
        politeness=politeness,
        declared={
            "addresses": sorted(host_ports),
            "endpoints": [{"id": f"ep{p}", "port": p} for ports in host_ports.values() for p in ports],
            "host_ports": host_ports,
        },
    )


def test_runs_group_hosts_by_declared_ports_and_a_system_with_its_own_limit_runs_alone() -> None:
    plain, own = Politeness(), Politeness(max_concurrency=2, own_concurrency=True)
    targets = [
        _system("a", plain, {"127.0.0.1": [443]}),
        _system("b", plain, {"127.0.0.2": [443], "127.0.0.3": [22]}),  # each host only on its own port
        _system("c", plain, {"::1": [443]}),  # IPv6 apart
        _system("d", own, {"127.0.0.4": [443]}),
        _system("e", own, {"127.0.0.5": [443]}),
        _system("f", Politeness(fragile=True), {"127.0.0.6": [443]}),
    ]
    plan = plan_runs(targets, privileged=True)
    assert set(plan.skipped) == {"f/*"}
    shape = sorted((r.hosts, r.ports, r.systems) for r in plan.runs)
    assert shape == [
        (("127.0.0.1", "127.0.0.2"), (443,), 2),
        (("127.0.0.3",), (22,), 1),
        (("127.0.0.4",), (443,), 1),
        (("127.0.0.5",), (443,), 1),
        (("::1",), (443,), 1),
    ]
    runs_of_b = {address: plan.runs[i].ports for address, i in plan.members["b/*"]}
    assert runs_of_b == {"127.0.0.2": (443,), "127.0.0.3": (22,)}


def test_large_groups_are_cut_into_runs_of_at_most_64_hosts() -> None:
    targets = [_system(f"s{i}", Politeness(), {f"127.0.1.{i}": [443]}) for i in range(1, 151)]
    plan = plan_runs(targets, privileged=True)
    assert sorted(len(r.hosts) for r in plan.runs) == [22, 64, 64]
    assert sum(r.systems for r in plan.runs) == 150


# ---------------------------------------------------------------------------------------------
# live: real nmap -O inside a network namespace of the test's own


def _netns_ready() -> str | None:
    if os.geteuid() != 0:
        return "needs root for a network namespace and nmap OS detection (make test runs as root in CI)"
    for tool in ("unshare", "ip", "nmap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make test installs it)"
    return None


needs_netns = pytest.mark.skipif(_netns_ready() is not None, reason=_netns_ready() or "")


def _in_netns(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = ["unshare", "--net", sys.executable, str(ROOT / "tests" / "probes" / "uptime_netns.py"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def _probe_in_netns(timestamps: int) -> dict[str, Any]:
    done = _in_netns("probe", str(timestamps))
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@needs_netns
def test_live_plain_timestamp_clock_estimates_the_kernels_real_uptime() -> None:
    result = _probe_in_netns(2)
    facts = result["facts"]
    assert facts["uptime.estimated"] is True
    (host,) = facts["uptime.hosts"]
    assert host["timestamp_clock"] == "1000HZ" and host["wraps_after_days"] == 49.7
    # The namespace shares the kernel, so the reading is this machine's uptime (nmap reads it a moment earlier),
    # modulo the 1000 Hz clock's wrap on a machine up for longer than 49.7 days.
    assert abs(host["seconds"] - _expected_reading_s(result["uptime_s"])) < 60
    assert facts["uptime.min_days"] == days_at_least(host["seconds"])
    assert facts["uptime.max_days"] is None  # a 1000 Hz clock wraps every 49.7 days: no upper bound
    (sha,) = facts["uptime.nmap_xml_sha256"]
    assert len(sha) == 64


@needs_netns
@pytest.mark.parametrize(("timestamps", "why"), [(1, "randomises its TCP timestamps"), (0, "no usable TCP timestamps")])
def test_live_randomised_or_absent_timestamps_give_no_estimate(timestamps: int, why: str) -> None:
    facts = _probe_in_netns(timestamps)["facts"]
    assert facts["uptime.estimated"] is False and facts["uptime.min_days"] is None
    assert why in facts["uptime.unestimated"][0]


def _pat04_variant(control_id: str, max_days: float) -> dict[str, Any]:
    """The shipped PAT-04 with another limit, as a site would write it."""
    return {
        "id": control_id,
        "title": f"Hosts rebooted within {max_days} days",
        "family": "patching",
        "severity": "low",
        "rationale": "Kernel fixes need a reboot to take effect.",
        "remediation": "Reboot into the patched kernel.",
        "applies_to": {"level": "system", "fragile": False},
        "probe": "uptime",
        "when": {"fact": "uptime.estimated", "equals": True},
        "assert": {"all": [{"fact": "uptime.min_days", "lte": max_days}, {"fact": "uptime.max_days", "lte": max_days}]},
    }


def _verdicts(workspace: Path) -> dict[str, tuple[str, str]]:
    with sqlite3.connect(workspace / "hcscan.db") as db:
        rows = db.execute("SELECT control_id, status, message FROM finding").fetchall()
    return {control: (status, message) for control, status, message in rows}


def _expected_reading_s(uptime_s: float) -> float:
    """What a 1000 Hz 32-bit timestamp clock started at boot reads after `uptime_s` seconds."""
    return uptime_s % (2**32 / 1000)


@needs_netns
@pytest.mark.parametrize("timestamps", [2, 1])
def test_live_scan_judges_pat04_end_to_end(tmp_path: Path, timestamps: int) -> None:
    """Whatever this machine's uptime (a minute after boot, or months): the reading proves 'longer than half of
    itself', so a site limit of half the expected reading fails and the shipped PAT-04 cannot pass (1000 Hz clock)."""
    reading_s = _expected_reading_s(float(Path("/proc/uptime").read_text().split()[0]))
    limit_days = days_at_least(int(reading_s / 2))
    write_yaml(
        tmp_path / "site-controls" / "uptime.yaml",
        {"controls": [_pat04_variant("SITE-UP-SHORT", limit_days)]},
    )
    config = make_workspace(
        tmp_path,
        [system("host", "127.0.0.1", 65000, protocol="other")],
        extra_config={"controls": ["builtin", "site-controls"]},
    )
    done = _in_netns("scan", str(timestamps), str(config), "--control", "PAT-04", "--control", "SITE-UP-SHORT")
    assert done.returncode in (0, 1), done.stderr
    verdicts = _verdicts(tmp_path)
    if timestamps == 2:  # a real reading on a 1000 Hz clock: proves "longer than half of itself", bounds nothing
        assert verdicts["PAT-04"][0] == "error", verdicts
        assert "not bounded" in verdicts["PAT-04"][1], verdicts
        assert verdicts["SITE-UP-SHORT"][0] == "fail", verdicts
        assert "uptime.min_days is" in verdicts["SITE-UP-SHORT"][1], verdicts
    else:  # randomised clock: no estimate, so neither control is judged on noise
        assert verdicts["PAT-04"][0] == "not_applicable", verdicts
        assert verdicts["SITE-UP-SHORT"][0] == "not_applicable", verdicts


@needs_netns
def test_live_nmap_without_raw_socket_privilege_says_how_to_fix_it(tmp_path: Path) -> None:
    """Real nmap, run as an unprivileged user (setpriv), refuses OS detection: the finding says what to do."""
    nmap = tmp_path / "nmap-as-nobody"
    nmap.write_text(f'#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups {shutil.which("nmap")} "$@"\n')
    nmap.chmod(0o755)
    outcome = UptimeProbe(privileged=True).gather([_target()], ProbeContext(nmap_path=str(nmap)))["sys/*"]
    assert isinstance(outcome, ProbeError)
    assert outcome.detail.startswith(PRIVILEGE_HINT) and "requires root privileges" in outcome.detail

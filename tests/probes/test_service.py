"""scanner.probes.service and scanner.probes.exposure: pure parts (XML, planning, FHIR/MLLP parsing)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from scanner.probes.base import SYSTEM_LEVEL, Politeness, ProbeFacts, Target
from scanner.probes.exposure import capability_facts, dicom_ping_facts, mllp_ack_frame, parse_mllp_reply
from scanner.probes.nmap import NmapError
from scanner.probes.service import parse_service_xml, plan_jobs

XML = """<?xml version="1.0"?><nmaprun scanner="nmap" args="nmap -sT -sV">
<host><status state="up"/><address addr="127.0.31.5" addrtype="ipv4"/><ports>
<port protocol="tcp" portid="22"><state state="open" reason="syn-ack"/>
<service name="ssh" product="OpenSSH" version="8.9p1 Ubuntu 3ubuntu0.6" extrainfo="Ubuntu Linux; protocol 2.0"
 ostype="Linux" method="probed" conf="10"><cpe>cpe:/a:openbsd:openssh:8.9p1</cpe><cpe>cpe:/o:linux:linux_kernel</cpe></service></port>
<port protocol="tcp" portid="80"><state state="open" reason="syn-ack"/><service name="http" product="nginx" version="1.18.0"
 method="probed" conf="10"/><script id="http-server-header" output="nginx/1.18.0 (Ubuntu)"/></port>
<port protocol="tcp" portid="23"><state state="closed" reason="conn-refused"/><service name="telnet" method="table" conf="3"/></port>
</ports></host><runstats><finished exit="success"/></runstats></nmaprun>"""


def test_service_xml_is_parsed_with_cpes_and_banner() -> None:
    scan = parse_service_xml(XML)
    assert scan.finished_ok
    ssh = scan.ports[("127.0.31.5", 22)]
    assert (ssh.product, ssh.version, ssh.method, ssh.conf) == ("OpenSSH", "8.9p1 Ubuntu 3ubuntu0.6", "probed", 10)
    assert ssh.cpes == ("cpe:/a:openbsd:openssh:8.9p1", "cpe:/o:linux:linux_kernel")
    assert scan.ports[("127.0.31.5", 80)].banner == "nginx/1.18.0 (Ubuntu)"
    assert scan.ports[("127.0.31.5", 23)].state == "closed"


def test_cut_short_xml_keeps_what_arrived_but_is_not_finished() -> None:
    scan = parse_service_xml(XML.split("<runstats>")[0])
    assert not scan.finished_ok and ("127.0.31.5", 22) in scan.ports


def test_garbage_xml_is_a_tool_failure() -> None:
    with pytest.raises(NmapError):
        parse_service_xml("<<not xml")


def test_entities_are_refused() -> None:
    evil = '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><nmaprun>&e;</nmaprun>'
    with pytest.raises(NmapError):
        parse_service_xml(evil)


def _t(key: str, system: str, port: int, protocol: str = "ssh", fragile: bool = False) -> Target:
    declared = {"endpoints": [{"port": 22}, {"port": 104}]}
    return Target(key, system, "127.0.31.5" if system == "a" else "127.0.31.6", port, protocol,
                  politeness=Politeness(timing=2 if fragile else 3, fragile=fragile), declared=declared)  # fmt: skip


def test_fragile_system_gets_declared_ports_only_and_no_version_probes() -> None:
    jobs = plan_jobs(
        [_t("b/ssh", "b", 22, fragile=True), _t("b/*", "b", 0, SYSTEM_LEVEL, fragile=True)], [21, 23, 3389]
    )
    (job,) = jobs
    assert job.ports == {22, 104} and not job.version_probes and job.politeness.fragile


def test_sweep_adds_ports_but_never_version_probes_declared_ports_no_control_looks_at() -> None:
    jobs = plan_jobs([_t("a/ssh", "a", 22), _t("a/*", "a", 0, SYSTEM_LEVEL)], [21, 23, 104])
    (job,) = jobs
    assert job.ports == {22, 21, 23} and job.version_probes  # 104 is declared (DICOM): not probed


def test_capability_statement_facts() -> None:
    doc = {
        "resourceType": "CapabilityStatement",
        "fhirVersion": "4.0.1",
        "rest": [
            {
                "security": {"service": [{"coding": [{"code": "SMART-on-FHIR"}]}]},
                "resource": [{"type": "Patient"}, {"type": "AuditEvent"}],
            }
        ],
    }
    facts = capability_facts(doc)
    assert facts["fhir.smart_oauth"] and facts["fhir.audit_event_supported"]
    assert facts["fhir.resources"] == ["AuditEvent", "Patient"]
    assert capability_facts({"resourceType": "Patient"})["fhir.capability"] is False
    assert capability_facts(None)["fhir.smart_oauth"] is False


def test_fhir_requests_stay_under_the_base_whatever_the_server_declares() -> None:
    """Resource type names come from the target: one that is not a FHIR type name is never put in a path."""
    from scanner.probes.exposure import FhirProbe

    doc = {"resourceType": "CapabilityStatement", "rest": [{"resource": [{"type": "../admin"}, {"type": "x?y"}]}]}
    asked: list[str] = []

    def get(path: str) -> tuple[int, bytes]:
        asked.append(path)
        return (200, json.dumps(doc).encode()) if path == "/metadata" else (401, b"")

    outcome = FhirProbe._ask(get, 1.0, "/baseR4")
    assert isinstance(outcome, ProbeFacts)
    assert asked == ["/metadata", "/.well-known/smart-configuration", "/Patient?_summary=count"]
    assert outcome.facts["fhir.base_path"] == "/baseR4"
    assert outcome.facts["fhir.unauth_search_path"] == "/baseR4/Patient?_summary=count"


def test_declared_base_path_of_a_target() -> None:
    from scanner.probes.http import declared_base_path

    def t(endpoint: dict[str, object] | None) -> Target:
        return Target("s/e", "s", "127.0.0.1", 8443, "fhir", declared={"endpoint": endpoint})

    assert declared_base_path(t({"path": "/fhir"})) == "/fhir"
    assert declared_base_path(t({"path": "/"})) == ""
    assert declared_base_path(t({"path": None})) == "" and declared_base_path(t(None)) == ""


def test_mllp_frame_and_reply() -> None:
    frame = mllp_ack_frame(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))
    assert frame.startswith(b"\x0bMSH|") and frame.endswith(b"\x1c\r") and b"|ACK|" in frame
    assert parse_mllp_reply(b"\x0bMSH|^~\\&|X\rMSA|AE|1\x1c\r") == (True, "AE")
    assert parse_mllp_reply(b"HTTP/1.1 400") == (False, None)


def test_dicom_ping_output() -> None:
    facts = dicom_ping_facts(
        {"dicom": "DICOM Service Provider discovered!", "config": "Any AET is accepted (Insecure)"}, "x"
    )
    assert facts["dicom.service"] and facts["dicom.any_aet_accepted"]
    assert facts["dicom.aet_check"] == "accepted"
    rejected = {"dicom": "DICOM Service Provider discovered!", "config": "Called AET check enabled"}
    checked = dicom_ping_facts(rejected, "", "PACS01")  # the node's own AE title was called
    assert checked["dicom.any_aet_accepted"] is False and checked["dicom.aet_check"] == "rejected"
    assert "dicom-ping does not report the reason" in checked["dicom.aet_check_detail"]
    # ANY-SCP called: dicom-ping's rejection (reason never reported) may be of the called AE title: not assessed
    any_scp = dicom_ping_facts(rejected, "")
    assert any_scp["dicom.service"] is True
    assert any_scp["dicom.any_aet_accepted"] is None and any_scp["dicom.aet_check"] is None
    assert "declare the node's AE title (availability.checks.<endpoint>.ae_title)" in any_scp["dicom.aet_check_detail"]
    silent = dicom_ping_facts({}, "")  # no answer, an abort, not DICOM: not assessed (never a pass)
    assert silent["dicom.aet_check"] is None and silent["dicom.any_aet_accepted"] is None
    assert "no answer" in silent["dicom.aet_check_detail"]


def test_a_host_that_answered_nothing_is_not_clean() -> None:
    """nmap -Pn reports every port of a dead host as filtered: EXP-01 must not pass on that."""
    from scanner.probes.service import ServiceScan, host_answered

    silent = ServiceScan(ports={}, hosts_timed_out=frozenset(), finished_ok=True, error_message=None)
    assert not host_answered(silent, "127.0.0.1")


def test_a_system_on_several_hosts_has_every_host_swept_and_judged() -> None:
    from scanner.probes.base import system_hosts
    from scanner.probes.service import ServiceInfo, ServiceScan, host_answered

    system = Target("m/*", "m", "127.0.31.5", 0, SYSTEM_LEVEL, politeness=Politeness(),
                    declared={"endpoints": [{"port": 443}, {"port": 2575}], "addresses": ["127.0.31.5", "127.0.31.7"]})  # fmt: skip
    assert system_hosts(system) == {"127.0.31.5", "127.0.31.7"}
    (job,) = plan_jobs([system], [21, 23])
    assert job.hosts == {"127.0.31.5", "127.0.31.7"} and job.ports == {21, 23}
    only_first = ServiceScan(
        ports={("127.0.31.5", 21): ServiceInfo("127.0.31.5", 21, "closed", "conn-refused")},
        hosts_timed_out=frozenset(), finished_ok=True, error_message=None,
    )  # fmt: skip
    assert host_answered(only_first, "127.0.31.5") and not host_answered(only_first, "127.0.31.7")


def test_ports_nmap_folds_into_extraports_keep_their_state() -> None:
    """nmap lists many ports of one state in one `<extraports>` line: a declared port among them is closed (a reset:
    the host answered), not 'missing from nmap output' (recorded from nmap 7.93 -sT -p 1-40 on a silent address)."""
    xml = (
        '<nmaprun><host><status state="up"/><address addr="127.0.0.9" addrtype="ipv4"/><ports>'
        '<extraports state="closed" count="41"><extrareasons reason="conn-refused" count="40" proto="tcp" '
        'ports="1-39,443"/><extrareasons reason="x" count="1" proto="udp" ports="161"/></extraports>'
        '<port protocol="tcp" portid="40"><state state="open" reason="syn-ack"/></port>'
        '</ports></host><runstats><finished exit="success"/></runstats></nmaprun>'
    )
    scan = parse_service_xml(xml)
    assert scan.ports[("127.0.0.9", 443)].state == "closed" and scan.ports[("127.0.0.9", 443)].reason == "conn-refused"
    assert scan.ports[("127.0.0.9", 40)].state == "open"  # a listed port is never overwritten by the summary
    assert ("127.0.0.9", 161) not in scan.ports and len(scan.ports) == 41


@pytest.mark.needs_nmap
def test_a_declared_port_that_is_closed_says_so(tmp_path: Path) -> None:
    """Live, real nmap: a declared HTTPS port with nothing listening, among a sweep of closed ports."""
    from click.testing import CliRunner

    from scanner.cli import main
    from tests.helpers import make_workspace, system

    make_workspace(tmp_path, [system("closed", "127.0.0.94", 8443, "https")])
    result = CliRunner().invoke(
        main, ["scan", "--config", str(tmp_path / "config.yaml"), "--control", "PAT-01", "--format", "json"]
    )
    assert result.exit_code == 1, result.output
    (finding,) = json.loads(result.output)
    assert finding["status"] == "error"
    assert "port 8443 is closed" in finding["message"] and "missing from nmap output" not in finding["message"]

"""Debian's own OpenSSH server, judged by a real scan (issue 14: the banner lab's Debian-patched OpenSSH, live).

The test writes a host key and an sshd_config into a temp dir, starts `sshd -D` of the Debian package
openssh-server on 127.0.0.61 (loopback only, no authentication method enabled: nobody can log in), scans it with
`hcscan scan` (nmap -sT -sV, as on any network) and checks PAT-01/02/05 against what the server really says:

- the banner names the distribution (`OpenSSH_9.2p1 Debian-2+deb12u10` on Debian 12), so PAT-02 cannot judge
  the patch level from the upstream number and asks for the installed package (could not assess);
- upstream, OpenSSH 9 ended when 10.0 came out (support: newest-line), but Debian 12 supports its package until
  2028-06-30, so PAT-01 passes and says why;
- no KEV entry affects OpenSSH: PAT-05 passes (with a wide max_age_days: the shipped KEV snapshot's age is judged
  by tests/versiondata/test_banner_lab.py on pinned days).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scanner.lab.procs import stop_process
from tests.helpers import make_workspace

SSHD = "/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else shutil.which("sshd")
KEYGEN = shutil.which("ssh-keygen")
_why = None if SSHD and KEYGEN else "Debian package openssh-server is not installed"
if _why:
    print(f"skipping the live sshd test: {_why}")
pytestmark = [
    pytest.mark.needs_nmap,
    pytest.mark.slow,
    pytest.mark.skipif(_why is not None, reason=f"{_why} (make test installs it)"),
]
HOST = "127.0.0.61"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _banner(port: int) -> str:
    with socket.create_connection((HOST, port), timeout=10) as s:
        data = b""
        while b"\n" not in data and len(data) < 512:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
    return data.split(b"\n", 1)[0].decode("ascii", "replace").strip()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    root = tmp_path_factory.mktemp("sshd")
    assert SSHD is not None and KEYGEN is not None
    key = root / "host_ed25519"
    subprocess.run([KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
    port = _free_port()
    config = root / "sshd_config"
    config.write_text(
        f"HostKey {key}\nPidFile {root / 'sshd.pid'}\nUsePAM no\nStrictModes no\nPubkeyAuthentication no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nAuthorizedKeysFile none\nMaxStartups 20\n",
        encoding="utf-8",
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory sshd requires as root
    log = (root / "sshd.log").open("wb")
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config), "-p", str(port), "-o", f"ListenAddress={HOST}"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited with {proc.returncode}: {(root / 'sshd.log').read_text(errors='replace')}")
            try:
                banner = _banner(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"sshd did not listen on {HOST}:{port}")
                time.sleep(0.1)
        yield port, banner
    finally:
        stop_process(proc)
        log.close()


def test_debian_openssh_banner_is_judged_right(sshd: tuple[int, str], tmp_path: Path) -> None:
    port, banner = sshd
    assert banner.startswith("SSH-2.0-OpenSSH_") and "Debian" in banner, banner
    upstream = banner.removeprefix("SSH-2.0-OpenSSH_").split(" ", 1)[0]
    system: dict[str, Any] = {
        "id": "sshd-debian",
        "name": "Debian openssh-server",
        "owner": "Lab team",
        "criticality": "high",
        "endpoints": [{"id": "ssh", "host": HOST, "port": port, "protocol": "ssh"}],
    }
    make_workspace(
        tmp_path,
        [system],
        extra_config={"exposure": {"version_intensity": 2, "version_data": {"max_age_days": 3650}}},
    )
    result = subprocess.run(
        [sys.executable, "-m", "scanner", "scan", "--config", "config.yaml", "--format", "json",
         "--control", "PAT-01", "--control", "PAT-02", "--control", "PAT-05"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    findings = {f["control"]: f for f in json.loads(result.stdout)}
    pat01, pat02, pat05 = findings["PAT-01"], findings["PAT-02"], findings["PAT-05"]
    evidence = pat01["evidence"]
    assert evidence["patch.product_id"] == "openssh" and evidence["patch.version"] == upstream, evidence
    assert evidence["patch.evidence"] == "distribution_banner" and evidence["patch.distro"] == "debian", evidence
    assert pat02["status"] == "error" and "declare the package version" in pat02["message"], pat02["message"]
    assert pat05["status"] == "pass" and "KEV catalogue" in pat05["message"], pat05["message"]
    if "+deb12u" in banner:  # Debian 12 (bookworm): upstream line 9 ended, Debian supports the package
        assert evidence["patch.distro_release"] == "12" and evidence["patch.cycle_eol"] == "2025-04-09", evidence
        assert pat01["status"] == "pass", pat01["message"]
        assert "debian 12 supports its package until 2028-06-30" in pat01["message"], pat01["message"]
    else:  # another Debian release: judged, never an unexplained pass of an ended line
        assert pat01["status"] in ("pass", "error"), pat01["message"]
        if pat01["status"] == "pass":
            assert evidence["patch.cycle_eol"] is None or "supports its package" in pat01["message"], pat01

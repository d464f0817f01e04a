"""A region-size TLS lab for benchmarks/region_bench.py: one nginx serving N endpoints on N loopback addresses.

Endpoint i listens on 127.200.(i // 250).(i % 250 + 1):443. The mix (by i mod 20): 70 % modern (TLS 1.2/1.3),
10 % also TLS 1.0/1.1, 10 % only DHE suites with 1024-bit DH parameters, 5 % an RSA-1024 certificate, 5 % a
certificate for another host name; every tenth endpoint also serves plain HTTP on :80 (not declared: EXP-01 sees it
as unexpected). The inventory is N/2 systems × 2 endpoints spread over five region files.

Loopback only: every address is in 127.0.0.0/8 and the config's scope allows nothing else.

    .venv/bin/python benchmarks/region_lab.py --n 20 --dir /tmp/region-lab   # start, print the config, wait
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from scanner.lab.certs import CertSpec, LabPKI
from scanner.yamlio import dump_yaml

SERVER_NAME = "region.lab.test"
WRONG_NAME = "elsewhere.lab.test"
REGIONS = ("north", "central", "south", "capital", "zealand")
TLS_PORT = 443
HTTP_PORT = 80
MODERN_SUITES = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
WEAK_DH_SUITES = "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:@SECLEVEL=0"
KINDS = ("modern",) * 14 + ("legacy",) * 2 + ("weak_dh",) * 2 + ("rsa1024", "wrong_host")


@dataclass(frozen=True)
class RegionEndpoint:
    index: int
    address: str
    kind: str
    plain_http: bool


def address_of(i: int) -> str:
    if not 0 <= i < 250 * 250:
        raise ValueError(f"endpoint index out of range: {i}")
    return f"127.200.{i // 250}.{i % 250 + 1}"


def lab_endpoints(n: int) -> list[RegionEndpoint]:
    return [RegionEndpoint(i, address_of(i), KINDS[i % len(KINDS)], i % 10 == 0) for i in range(n)]


def _server_block(ep: RegionEndpoint, certs: dict[str, tuple[Path, Path]], dh1024: Path) -> str:
    chain, key = certs["rsa1024" if ep.kind == "rsa1024" else "wrong" if ep.kind == "wrong_host" else "good"]
    lines = [f"listen {ep.address}:{TLS_PORT} ssl;", f"ssl_certificate {chain};", f"ssl_certificate_key {key};"]
    if ep.kind == "legacy":
        lines += ["ssl_protocols TLSv1 TLSv1.1 TLSv1.2;", 'ssl_ciphers "DEFAULT:@SECLEVEL=0";']
    elif ep.kind == "weak_dh":
        lines += ["ssl_protocols TLSv1.2;", f'ssl_ciphers "{WEAK_DH_SUITES}";', f"ssl_dhparam {dh1024};"]
    elif ep.kind == "rsa1024":
        lines += ["ssl_protocols TLSv1.2 TLSv1.3;", 'ssl_ciphers "DEFAULT:@SECLEVEL=0";']
    else:
        lines += ["ssl_protocols TLSv1.2 TLSv1.3;", f'ssl_ciphers "{MODERN_SUITES}";']
    if ep.plain_http:
        lines.append(f"listen {ep.address}:{HTTP_PORT};")
    lines += [
        f"server_name {SERVER_NAME};",
        'add_header Strict-Transport-Security "max-age=31536000" always;',
        "location / { return 200 'ok\\n'; }",
    ]
    return "server {\n  " + "\n  ".join(lines) + "\n}\n"


def write_nginx_conf(directory: Path, endpoints: Sequence[RegionEndpoint]) -> Path:
    pki = LabPKI(directory / "pki")
    certs: dict[str, tuple[Path, Path]] = {}
    for label, spec, name in (
        ("good", CertSpec(), SERVER_NAME),
        ("rsa1024", CertSpec(key="rsa1024"), SERVER_NAME),
        ("wrong", CertSpec(), WRONG_NAME),
    ):
        issued = pki.issue(spec, name, label)
        certs[label] = (issued.chain_pem, issued.key_pem)
    (directory / "logs").mkdir(exist_ok=True)
    conf = [
        "worker_processes 2;",
        f"pid {directory / 'nginx.pid'};",
        f"error_log {directory / 'logs' / 'error.log'} warn;",
        "daemon off;",
        "events { worker_connections 16384; }",
        "http {",
        "access_log off;",
        "server_tokens on;",
        "ssl_session_cache off;",
        f"client_body_temp_path {directory / 'tmp'};",
        *(_server_block(ep, certs, pki.dh_params(1024)) for ep in endpoints),
        "}",
    ]
    (directory / "tmp").mkdir(exist_ok=True)
    path = directory / "nginx.conf"
    path.write_text("\n".join(conf) + "\n", encoding="utf-8")
    return path


def write_workspace(directory: Path, endpoints: Sequence[RegionEndpoint], ca_bundle: Path, store: Path) -> Path:
    """Five region files of N/2 systems × 2 endpoints, and a config whose scope is loopback only."""
    inv = directory / "inventory"
    inv.mkdir(parents=True, exist_ok=True)
    pairs = [endpoints[i : i + 2] for i in range(0, len(endpoints), 2)]
    for r, region in enumerate(REGIONS):
        systems = [
            {
                "id": f"sys-{j:05d}",
                "name": f"Region system {j}",
                "owner": "region_bench",
                "criticality": "medium",
                "endpoints": [
                    {
                        "id": f"web{k}",
                        "host": ep.address,
                        "port": TLS_PORT,
                        "protocol": "https",
                        "server_name": SERVER_NAME,
                    }
                    for k, ep in enumerate(pair)
                ],
            }
            for j, pair in enumerate(pairs)
            if j % len(REGIONS) == r
        ]
        doc = {"region": {"id": region, "name": region.capitalize()}, "systems": systems}
        (inv / f"{region}.yaml").write_text(dump_yaml(doc), encoding="utf-8")
    config = {
        "store_url": f"sqlite:///{store}",
        "inventory": [str(inv)],
        "controls": ["builtin"],
        "scope": {"allowed_networks": ["127.0.0.0/8"]},
        "tls": {"use_system_store": False, "ca_bundles": [str(ca_bundle)]},
        # The shipped version data ages; the benchmark is about finishing, not about the data's age (PAT-06).
        "exposure": {"version_data": {"max_age_days": 3650}},
    }
    path = directory / "config.yaml"
    path.write_text(dump_yaml(config), encoding="utf-8")
    return path


def _wait_listening(address: str, port: int, deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
            return True
        time.sleep(0.2)
    return False


@contextlib.contextmanager
def region_lab(n: int, directory: Path) -> Iterator[tuple[list[RegionEndpoint], Path]]:
    """Start nginx over `n` endpoints; yield (endpoints, CA bundle); stop it."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise RuntimeError("nginx not found (apt-get install nginx-light)")
    directory.mkdir(parents=True, exist_ok=True)
    endpoints = lab_endpoints(n)
    conf = write_nginx_conf(directory, endpoints)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    previous = signal.signal(signal.SIGTERM, _terminated)  # a killed benchmark still stops its nginx
    proc = subprocess.Popen(
        [nginx, "-p", str(directory), "-c", str(conf), "-e", str(directory / "logs" / "error.log")],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        last = endpoints[-1]
        if not _wait_listening(last.address, TLS_PORT, 30) or proc.poll() is not None:
            raise RuntimeError(f"nginx did not start: see {directory / 'logs' / 'error.log'}")
        yield endpoints, directory / "pki" / "lab-root-ca.pem"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGQUIT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    with region_lab(args.n, args.dir) as (endpoints, ca):
        config = write_workspace(args.dir, endpoints, ca, args.dir / "store.db")
        print(f"{len(endpoints)} endpoints up; config {config}; Ctrl-C to stop", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""TLS benchmark: hcscan's full TLS pipeline against bare nmap, sslyze and testssl on the same endpoints.

Starts the loopback lab with N replicas of the `good` case (real TLS servers on 127.0.0.1, ephemeral
ports) and runs, one after another, over exactly those N endpoints:

1. hcscan, the real pipeline (inventory + config → load_workspace → plan_scan → run_scan with
   make_probes(): nmap cipher enumeration, chain fetch and validation, HTTP/HSTS probe, judging,
   SQLite store). By default twice: in-process through scanner.app (with a per-phase breakdown) and as
   the CLI `hcscan scan --config ...` in a subprocess (what a user runs; includes interpreter start).
2. bare nmap: nmap -sT -Pn -n -p <ports> --script ssl-enum-ciphers,ssl-cert 127.0.0.1
3. sslyze (own venv, see setup_peers.sh): one invocation over the N endpoints.
4. testssl: ONE endpoint (a full run takes about a minute); reported per endpoint.

Every tool's output is checked (findings stored, XML/JSON content) so no tool wins by failing fast.
Traffic goes to 127.0.0.1 only: nmap with -n, sslyze with `name:port{127.0.0.1}`, testssl with
--ip 127.0.0.1 --nodns none, hcscan with a scope of 127.0.0.0/8 and IP-address endpoints.

    .venv/bin/python benchmarks/tls_bench.py --n 50 --json out/tls-bench.json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import defusedxml.ElementTree as SafeET

from scanner.lab import Lab, LabEndpoint
from scanner.yamlio import dump_yaml

ROOT = Path(__file__).resolve().parent.parent
SSLYZE_PYTHON = ROOT / ".bench" / "sslyze-venv" / "bin" / "python"
HCSCAN_CLI = Path(sys.executable).with_name("hcscan")
LOOPBACK = "127.0.0.1"
TLS_CONTROLS = 7  # TLS-01..TLS-07 apply to an https endpoint
TARGET_HCSCAN_OVER_NMAP = 1.5  # hcscan time / bare nmap time: at most
TARGET_SSLYZE_OVER_HCSCAN = 5.0  # sslyze time / hcscan time: at least
TOOL_TIMEOUT_S = 1800.0

# sslyze scan commands closest to what hcscan gathers: protocols + suites (incl. key exchange groups),
# certificate chain + validation, HTTP security headers (HSTS). The Mozilla profile check is off.
SSLYZE_MATCHED = (
    "--sslv2",
    "--sslv3",
    "--tlsv1",
    "--tlsv1_1",
    "--tlsv1_2",
    "--tlsv1_3",
    "--elliptic_curves",
    "--certinfo",
    "--http_headers",
    "--mozilla_config",
    "disable",
)

OPENSSL_LEGACY_CONF = """\
# Lets testssl's OpenSSL 3 talk to legacy servers (written by benchmarks/tls_bench.py).
openssl_conf = openssl_init

[openssl_init]
ssl_conf = ssl_sect

[ssl_sect]
system_default = system_default_sect

[system_default_sect]
MinProtocol = None
CipherString = DEFAULT:@SECLEVEL=0
"""


SslyzeMode = Literal["matched", "default"]


class MissingTool(Exception):
    """A peer tool is not installed."""


@dataclass
class ToolResult:
    tool: str
    endpoints: int
    wall_s: float | None = None
    ok: bool = False  # ran and passed its sanity check
    missing: bool = False
    sanity: str = ""
    command: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def per_endpoint_s(self) -> float | None:
        return self.wall_s / self.endpoints if self.wall_s is not None and self.endpoints else None

    @property
    def endpoints_per_s(self) -> float | None:
        return self.endpoints / self.wall_s if self.wall_s else None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["per_endpoint_s"] = self.per_endpoint_s
        data["endpoints_per_s"] = self.endpoints_per_s
        return data


def log(msg: str) -> None:
    print(f"[tls_bench] {msg}", file=sys.stderr, flush=True)


def run_timed(cmd: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None) -> tuple[float, int, str, str]:
    """Run a command to completion; (wall seconds, exit code, stdout, stderr)."""
    started = time.perf_counter()
    proc = subprocess.run(
        list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False
    )
    return time.perf_counter() - started, proc.returncode, proc.stdout, proc.stderr


def _tail(text: str, limit: int = 600) -> str:
    return text.strip()[-limit:]


# ---------------------------------------------------------------------------------------------
# hcscan


def write_workspace(workdir: Path, endpoints: Sequence[LabEndpoint], ca_bundle: Path, store_name: str) -> Path:
    """A one-region inventory (one system per endpoint, as distinct servers would be) and a config."""
    inv_dir = workdir / "inventory"
    inv_dir.mkdir(parents=True, exist_ok=True)
    inventory = {
        "region": {"id": "bench", "name": "Benchmark"},
        "systems": [
            {
                "id": f"bench-{i:04d}",
                "name": f"Benchmark replica {ep.name}",
                "owner": "tls_bench",
                "criticality": "medium",
                "endpoints": [
                    {
                        "id": "web",
                        "host": ep.address,
                        "port": ep.port,
                        "protocol": ep.protocol,
                        "server_name": ep.server_name,
                    }
                ],
            }
            for i, ep in enumerate(endpoints)
        ],
    }
    (inv_dir / "bench.yaml").write_text(dump_yaml(inventory), encoding="utf-8")
    config = {
        "store_url": f"sqlite:///{store_name}",
        "inventory": [str(inv_dir)],
        "controls": ["builtin"],
        "scope": {"allowed_networks": ["127.0.0.0/8"]},
        "tls": {"use_system_store": True, "ca_bundles": [str(ca_bundle.resolve())]},
    }
    path = workdir / f"config-{Path(store_name).stem}.yaml"
    path.write_text(dump_yaml(config), encoding="utf-8")
    return path


def _store_counts(db: Path) -> tuple[int, dict[str, int], str | None]:
    """(findings in the last run, their statuses, the run's status) straight from the SQLite store."""
    con = sqlite3.connect(db)
    try:
        cols = {row[1] for row in con.execute("PRAGMA table_info(scan_run)")}
        status_col = "status" if "status" in cols else None
        run = con.execute(
            f"SELECT id{', ' + status_col if status_col else ''} FROM scan_run ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if run is None:
            return 0, {}, None
        statuses = dict(
            con.execute("SELECT status, COUNT(*) FROM finding WHERE run_id = ? GROUP BY status", (run[0],)).fetchall()
        )
        return sum(statuses.values()), statuses, (str(run[1]) if status_col else None)
    finally:
        con.close()


def _check_store(db: Path, n: int) -> tuple[bool, str, dict[str, Any]]:
    total, statuses, run_status = _store_counts(db)
    expected = n * TLS_CONTROLS
    ok = total == expected and statuses.get("pass", 0) == expected
    msg = f"stored {total}/{expected} findings, statuses {statuses}, run status {run_status}"
    return ok, msg, {"findings": total, "statuses": statuses, "run_status": run_status}


class Spans:
    """Thread-safe (start, end) intervals per name, relative to a common origin."""

    def __init__(self) -> None:
        self.origin = time.perf_counter()
        self._lock = threading.Lock()
        self.items: dict[str, list[tuple[float, float]]] = {}

    def add(self, name: str, start: float, end: float) -> None:
        with self._lock:
            self.items.setdefault(name, []).append((start - self.origin, end - self.origin))

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, start, time.perf_counter())

        return timed

    def summary(self) -> dict[str, dict[str, float]]:
        """Per name: calls, summed duration, wall extent (first start → last end), start and end offsets."""
        out: dict[str, dict[str, float]] = {}
        for name, spans in self.items.items():
            first, last = min(s for s, _ in spans), max(e for _, e in spans)
            out[name] = {
                "calls": len(spans),
                "sum_s": round(sum(e - s for s, e in spans), 3),
                "extent_s": round(last - first, 3),
                "start_s": round(first, 3),
                "end_s": round(last, 3),
            }
        return dict(sorted(out.items(), key=lambda kv: kv[1]["start_s"]))


@contextmanager
def instrumented(spans: Spans) -> Iterator[list[str]]:
    """Wrap the pipeline's phases with timers, by patching module attributes for the duration (no scanner
    file changes). Attributes that no longer exist are skipped and listed, so the breakdown degrades."""
    import scanner.app
    import scanner.probes.http
    import scanner.probes.tls
    import scanner.store.db
    import scanner.store.repo

    tls_mod, http_mod = scanner.probes.tls, scanner.probes.http
    plain: list[tuple[Any, str, str]] = [
        (scanner.app, "gather_facts", "gather_facts (all probes)"),
        (scanner.app, "judge_all", "judge_all"),
        (scanner.store.db, "open_store", "store.open (create/migrate)"),
        (scanner.store.repo, "mark_interrupted_runs", "store.mark_interrupted_runs"),
        (scanner.store.repo, "start_run", "store.start_run"),
        (scanner.store.repo, "complete_run", "store.complete_run"),
        (tls_mod, "load_trust", "tls.load_trust"),
        (tls_mod, "run_nmap", "tls.nmap process (run_nmap)"),
        (tls_mod, "parse_nmap_xml", "tls.nmap XML parse"),
        (tls_mod, "build_outcome", "tls.build_outcome (chain validation + facts)"),
        (tls_mod, "tls_handshake", "tls.handshake (one endpoint)"),
        (http_mod, "fetch", "http.fetch (one endpoint)"),
    ]
    methods: list[tuple[Any, str, str]] = [
        (getattr(tls_mod, "TlsProbe", None), "gather", "tls probe (gather)"),
        (getattr(tls_mod, "TlsProbe", None), "_handshakes", "tls.handshakes phase (all endpoints)"),
        (getattr(tls_mod, "TlsProbe", None), "_nmap", "tls.nmap phase (groups + SNI retries)"),
        (getattr(http_mod, "HttpProbe", None), "gather", "http probe (gather)"),
    ]
    restore: list[tuple[Any, str, Any]] = []
    skipped: list[str] = []
    try:
        for owner, attr, label in plain:
            original = getattr(owner, attr, None)
            if original is None:
                skipped.append(label)
                continue
            restore.append((owner, attr, original))
            setattr(owner, attr, spans.wrap(label, original))
        for cls, attr, label in methods:
            raw = cls.__dict__.get(attr) if cls is not None else None
            if raw is None:
                skipped.append(label)
                continue
            restore.append((cls, attr, raw))
            if isinstance(raw, staticmethod):
                setattr(cls, attr, staticmethod(spans.wrap(label, raw.__func__)))
            else:
                setattr(cls, attr, spans.wrap(label, raw))
        yield skipped
    finally:
        for owner, attr, original in reversed(restore):
            setattr(owner, attr, original)


def run_hcscan_api(
    workdir: Path, lab: Lab, endpoints: Sequence[LabEndpoint], rnd: int = 0, breakdown: bool = True
) -> ToolResult:
    """The pipeline in this process: load_workspace → plan_scan → run_scan with make_probes()."""
    from scanner.app import load_workspace, plan_scan, run_scan
    from scanner.engine import Selection
    from scanner.probes.registry import fact_names, make_probes, probe_protocols

    n = len(endpoints)
    store = f"hcscan-api-r{rnd}.db"  # a fresh store per round: every round does the same work
    config = write_workspace(workdir, endpoints, lab.ca_bundle, store)
    result = ToolResult("hcscan (in-process)", n, command=["scanner.app.run_scan", str(config)])
    spans = Spans()
    selection = Selection(families=frozenset({"tls"}))
    with instrumented(spans) if breakdown else _nothing() as skipped:
        started = spans.origin = time.perf_counter()
        t0 = time.perf_counter()
        ws = load_workspace(config, fact_names())
        spans.add("load_workspace", t0, time.perf_counter())
        t0 = time.perf_counter()
        plan, _ = plan_scan(ws, selection, probe_protocols())
        spans.add("plan_scan", t0, time.perf_counter())
        t0 = time.perf_counter()
        scan = run_scan(ws, plan, make_probes(), selection)
        spans.add("run_scan", t0, time.perf_counter())
        result.wall_s = time.perf_counter() - started
    statuses: dict[str, int] = {}
    for record in scan.records:
        statuses[record.status.value] = statuses.get(record.status.value, 0) + 1
    ok, msg, stored = _check_store(workdir / store, n)
    in_memory_ok = len(scan.records) == n * TLS_CONTROLS and statuses.get("pass", 0) == n * TLS_CONTROLS
    result.ok = ok and in_memory_ok
    result.sanity = f"{msg}; in memory {len(scan.records)} records {statuses}"
    result.detail = {"store": stored, "targets": {k: len(v) for k, v in plan.targets.items()}}
    if not result.ok:
        bad = [r for r in scan.records if r.status.value != "pass"][:3]
        result.detail["examples"] = [f"{r.control_id} {r.endpoint_key}: {r.status.value}: {r.message}" for r in bad]
    if breakdown:
        result.detail["breakdown"] = spans.summary()
        result.detail["breakdown_skipped"] = skipped
    return result


@contextmanager
def _nothing() -> Iterator[list[str]]:
    yield []


def run_hcscan_cli(workdir: Path, lab: Lab, endpoints: Sequence[LabEndpoint], rnd: int = 0) -> ToolResult:
    """`hcscan scan --config ... --family tls --format json` as a subprocess, timed wall-clock."""
    n = len(endpoints)
    store = f"hcscan-cli-r{rnd}.db"
    config = write_workspace(workdir, endpoints, lab.ca_bundle, store)
    exe = [str(HCSCAN_CLI)] if HCSCAN_CLI.exists() else [sys.executable, "-m", "scanner"]
    cmd = [*exe, "scan", "--config", str(config), "--family", "tls", "--format", "json"]
    result = ToolResult("hcscan (CLI)", n, command=cmd)
    wall, code, out, err = run_timed(cmd, cwd=workdir)
    result.wall_s = wall
    ok, msg, stored = _check_store(workdir / store, n)
    result.ok = ok and code == 0
    result.sanity = f"exit {code}; {msg}"
    result.detail = {"exit_code": code, "store": stored}
    if not result.ok:
        result.detail["stderr"] = _tail(err)
        result.detail["stdout"] = _tail(out)
    return result


# ---------------------------------------------------------------------------------------------
# bare nmap


def run_nmap(workdir: Path, endpoints: Sequence[LabEndpoint], rnd: int = 0) -> ToolResult:
    nmap = shutil.which("nmap")
    n = len(endpoints)
    result = ToolResult("nmap (bare)", n)
    if nmap is None:
        raise MissingTool("nmap not found on PATH (apt-get install nmap)")
    xml_path = workdir / f"nmap-r{rnd}.xml"
    ports = ",".join(str(ep.port) for ep in endpoints)
    cmd = [nmap, "-sT", "-Pn", "-n", "-p", ports, "--script", "ssl-enum-ciphers,ssl-cert", "-oX", str(xml_path)]
    cmd.append(LOOPBACK)
    result.command = cmd
    wall, code, _out, err = run_timed(cmd, cwd=workdir)
    result.wall_s = wall
    wanted = {ep.port for ep in endpoints}
    enumerated: set[int] = set()
    with_cert: set[int] = set()
    try:
        root = SafeET.parse(xml_path).getroot()
        if root is None:
            raise SafeET.ParseError("empty document")
        for port in root.iter("port"):
            portid = int(port.get("portid", "0"))
            for script in port.findall("script"):
                if script.get("id") == "ssl-enum-ciphers" and any(
                    t.get("key") == "TLSv1.2" for t in script.findall("table")
                ):
                    enumerated.add(portid)
                if script.get("id") == "ssl-cert" and "Subject" in (script.get("output") or ""):
                    with_cert.add(portid)
    except (OSError, SafeET.ParseError) as exc:
        result.sanity = f"exit {code}; unreadable XML: {exc}; {_tail(err)}"
        return result
    result.ok = code == 0 and enumerated >= wanted and with_cert >= wanted
    result.sanity = (
        f"exit {code}; ssl-enum-ciphers with TLSv1.2 on {len(enumerated & wanted)}/{n} ports, "
        f"ssl-cert on {len(with_cert & wanted)}/{n}"
    )
    result.detail = {"exit_code": code, "enumerated": len(enumerated & wanted), "certs": len(with_cert & wanted)}
    return result


# ---------------------------------------------------------------------------------------------
# sslyze


def sslyze_available(python: Path) -> str | None:
    """None when sslyze runs from its venv, else why not."""
    if not python.exists():
        return f"{python} does not exist (run benchmarks/setup_peers.sh)"
    probe = subprocess.run(
        [str(python), "-c", "import sslyze, importlib.metadata as m; print(m.version('sslyze'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"sslyze not importable in {python}: {_tail(probe.stderr, 300)}"
    return None


def run_sslyze(
    workdir: Path,
    lab: Lab,
    endpoints: Sequence[LabEndpoint],
    mode: SslyzeMode,
    rnd: int = 0,
    python: Path = SSLYZE_PYTHON,
) -> ToolResult:
    why = sslyze_available(python)
    if why is not None:
        raise MissingTool(why)
    n = len(endpoints)
    json_path = workdir / f"sslyze-{mode}-r{rnd}.json"
    json_path.unlink(missing_ok=True)
    # name:port{ip}: SNI and certificate checks use the name, the connection goes to the IP (no DNS).
    targets = [f"{ep.server_name or ep.address}:{ep.port}{{{ep.address}}}" for ep in endpoints]
    commands: Sequence[str] = SSLYZE_MATCHED if mode == "matched" else ()
    cmd = [
        str(python),
        "-m",
        "sslyze",
        "--quiet",
        "--json_out",
        str(json_path),
        *commands,
        *(("--certinfo_ca_file", str(lab.ca_bundle)) if mode == "matched" else ()),
        *targets,
    ]
    result = ToolResult(f"sslyze ({mode})", n, command=cmd)
    wall, code, _out, err = run_timed(cmd, cwd=workdir)
    result.wall_s = wall
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        result.sanity = f"exit {code}; no JSON: {exc}; {_tail(err)}"
        return result
    servers = doc.get("server_scan_results", [])
    complete = 0
    failed_commands: dict[str, int] = {}
    for server in servers:
        scan = server.get("scan_result") or {}
        attempts = {k: v for k, v in scan.items() if isinstance(v, dict) and "status" in v}
        tried = [k for k, v in attempts.items() if v.get("status") != "NOT_SCHEDULED"]
        bad = [k for k in tried if attempts[k].get("status") != "COMPLETED"]
        for k in bad:
            failed_commands[k] = failed_commands.get(k, 0) + 1
        tls12 = (attempts.get("tls_1_2_cipher_suites") or {}).get("result") or {}
        accepted = tls12.get("accepted_cipher_suites") or []
        if server.get("scan_status") == "COMPLETED" and tried and not bad and accepted:
            complete += 1
    result.ok = complete == n and len(servers) == n
    result.sanity = f"exit {code}; {complete}/{n} servers fully scanned with TLS 1.2 suites found" + (
        f"; failed commands {failed_commands}" if failed_commands else ""
    )
    result.detail = {"exit_code": code, "servers": len(servers), "complete": complete, "mode": mode}
    if not result.ok:
        result.detail["stderr"] = _tail(err)
    return result


# ---------------------------------------------------------------------------------------------
# testssl


def run_testssl(workdir: Path, lab: Lab, endpoint: LabEndpoint) -> ToolResult:
    testssl = shutil.which("testssl") or shutil.which("testssl.sh")
    if testssl is None:
        raise MissingTool("testssl not found (apt-get install testssl.sh, or run benchmarks/setup_peers.sh)")
    conf = workdir / "openssl-legacy.cnf"
    conf.write_text(OPENSSL_LEGACY_CONF, encoding="utf-8")
    json_path = workdir / "testssl.json"
    json_path.unlink(missing_ok=True)
    env = {**os.environ, "OPENSSL_CONF": str(conf)}
    uri = f"https://{endpoint.server_name or endpoint.address}:{endpoint.port}"
    cmd = [
        testssl,
        "--quiet",
        "--warnings",
        "off",
        "--color",
        "0",
        "--nodns",
        "none",
        "--ip",
        endpoint.address,
        "--add-ca",
        str(lab.ca_bundle),
        "--jsonfile",
        str(json_path),
        uri,
    ]
    result = ToolResult("testssl", 1, command=cmd)
    wall, code, _out, err = run_timed(cmd, cwd=workdir, env=env)
    result.wall_s = wall
    try:
        findings = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        result.sanity = f"exit {code}; no JSON: {exc}; {_tail(err)}"
        return result
    by_id = {str(f.get("id")): str(f.get("finding", "")) for f in findings if isinstance(f, dict)}
    fatal = [f for f in findings if isinstance(f, dict) and f.get("severity") == "FATAL"]
    tls12 = by_id.get("TLS1_2", "")
    trust = next((v for k, v in by_id.items() if k.startswith("cert_chain_of_trust")), "")
    hsts = by_id.get("HSTS_time") or by_id.get("HSTS", "")
    result.ok = not fatal and tls12.startswith("offered") and "passed" in trust and bool(hsts)
    result.sanity = (
        f"exit {code}; {len(findings)} findings; TLS1_2={tls12!r}; chain_of_trust={trust!r}; HSTS={hsts[:24]!r}; "
        f"own scanTime {by_id.get('scanTime', '?')}s"
        + (f"; FATAL: {[f.get('finding') for f in fatal]}" if fatal else "")
    )
    result.detail = {"exit_code": code, "findings": len(findings), "endpoint": f"{endpoint.address}:{endpoint.port}"}
    return result


# ---------------------------------------------------------------------------------------------
# report


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def compute_ratios(results: dict[str, ToolResult], headline: str) -> dict[str, Any]:
    hc = results.get(headline)
    nmap = results.get("nmap")
    sslyze = results.get("sslyze")
    testssl = results.get("testssl")

    def wall(r: ToolResult | None) -> float | None:
        return r.wall_s if r is not None and r.ok else None

    def per(r: ToolResult | None) -> float | None:
        return r.per_endpoint_s if r is not None and r.ok else None

    hc_over_nmap = _ratio(wall(hc), wall(nmap))
    sslyze_over_hc = _ratio(wall(sslyze), wall(hc))
    return {
        "hcscan_is": hc.tool if hc else None,
        "hcscan_over_nmap": hc_over_nmap,
        "hcscan_over_nmap_target_max": TARGET_HCSCAN_OVER_NMAP,
        "hcscan_over_nmap_met": None if hc_over_nmap is None else hc_over_nmap <= TARGET_HCSCAN_OVER_NMAP,
        "sslyze_over_hcscan": sslyze_over_hc,
        "sslyze_over_hcscan_target_min": TARGET_SSLYZE_OVER_HCSCAN,
        "sslyze_over_hcscan_met": None if sslyze_over_hc is None else sslyze_over_hc >= TARGET_SSLYZE_OVER_HCSCAN,
        "testssl_per_endpoint_over_hcscan_per_endpoint": _ratio(per(testssl), per(hc)),
    }


def print_table(results: dict[str, ToolResult], ratios: dict[str, Any], missing: dict[str, str]) -> None:
    rows = [("tool", "endpoints", "wall s", "s/endpoint", "endpoints/s", "rounds (s)", "sanity")]
    for r in results.values():
        rounds = r.detail.get("rounds_wall_s", [])
        rows.append(
            (
                r.tool,
                str(r.endpoints),
                _fmt(r.wall_s),
                _fmt(r.per_endpoint_s, ".3f"),
                _fmt(r.endpoints_per_s),
                " ".join(f"{w:.2f}" for w in rounds) if len(rounds) > 1 else "-",
                ("OK  " if r.ok else "FAIL") + " " + r.sanity,
            )
        )
    for name, why in missing.items():
        rows.append((name, "-", "-", "-", "-", "-", f"MISSING: {why}"))
    cols = len(rows[0]) - 1
    widths = [max(len(row[i]) for row in rows) for i in range(cols)]
    for i, row in enumerate(rows):
        cells = [
            cell.rjust(w) if 0 < j < cols - 1 else cell.ljust(w)
            for j, (cell, w) in enumerate(zip(row[:-1], widths, strict=True))
        ]
        print("  ".join([*cells, row[-1]]))
        if i == 0:
            print("  ".join("-" * w for w in widths) + "  ------")

    def verdict(met: bool | None) -> str:
        return "n/a" if met is None else ("met" if met else "MISSED")

    print()
    print(f"ratios (hcscan = {ratios['hcscan_is']}):")
    print(
        f"  hcscan / nmap time           {_fmt(ratios['hcscan_over_nmap'])}  "
        f"(target <= {TARGET_HCSCAN_OVER_NMAP}: {verdict(ratios['hcscan_over_nmap_met'])})"
    )
    print(
        f"  sslyze / hcscan time         {_fmt(ratios['sslyze_over_hcscan'])}  "
        f"(target >= {TARGET_SSLYZE_OVER_HCSCAN}: {verdict(ratios['sslyze_over_hcscan_met'])})"
    )
    print(f"  testssl / hcscan per endpoint {_fmt(ratios['testssl_per_endpoint_over_hcscan_per_endpoint'], '.1f')}")


def print_breakdown(result: ToolResult) -> None:
    spans = result.detail.get("breakdown")
    if not spans:
        return
    print()
    print(f"{result.tool} breakdown (seconds from the start of load_workspace; sum = summed over calls/threads):")
    print(f"  {'phase':<48} {'calls':>5} {'start':>7} {'end':>7} {'extent':>7} {'sum':>8}")
    for name, s in spans.items():
        print(
            f"  {name:<48} {int(s['calls']):>5} {s['start_s']:>7.2f} {s['end_s']:>7.2f} "
            f"{s['extent_s']:>7.2f} {s['sum_s']:>8.2f}"
        )
    if result.detail.get("breakdown_skipped"):
        print(f"  (not instrumented, attribute gone: {', '.join(result.detail['breakdown_skipped'])})")


# ---------------------------------------------------------------------------------------------
# main


def merge_rounds(rounds: Sequence[ToolResult]) -> ToolResult:
    """One result from several rounds: the median wall time; ok only if every round was; the median
    round's sanity text and detail (so its breakdown); every round's time in detail["rounds_wall_s"]."""
    walls = [r.wall_s for r in rounds if r.wall_s is not None]
    ranked = sorted((r for r in rounds if r.wall_s is not None), key=lambda r: r.wall_s or 0.0)
    middle = ranked[(len(ranked) - 1) // 2] if ranked else rounds[0]
    failed = next((r for r in rounds if not r.ok), None)
    merged = ToolResult(
        tool=middle.tool,
        endpoints=middle.endpoints,
        wall_s=statistics.median(walls) if walls else None,
        ok=failed is None,
        sanity=(failed or middle).sanity,
        command=middle.command,
        detail=dict((failed or middle).detail),
    )
    merged.detail["rounds_wall_s"] = [round(w, 3) for w in walls]
    return merged


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50, help="number of good-* replica endpoints (default 50)")
    p.add_argument("--json", type=Path, default=None, help="write the numbers to this JSON file")
    p.add_argument("--allow-missing", action="store_true", help="a missing peer tool is not an error")
    p.add_argument(
        "--hcscan",
        choices=("both", "api", "cli"),
        default="both",
        help="run hcscan in-process (api, with a phase breakdown), as the CLI, or both (default)",
    )
    p.add_argument(
        "--sslyze-mode",
        choices=("matched", "default", "both"),
        default="matched",
        help="matched: protocols/suites + elliptic curves + certinfo + HTTP headers (closest to hcscan); "
        "default: sslyze's default scan commands",
    )
    p.add_argument(
        "--sslyze-python", type=Path, default=SSLYZE_PYTHON, help="python of the sslyze venv (default: %(default)s)"
    )
    p.add_argument("--skip", action="append", default=[], choices=("nmap", "sslyze", "testssl"), help="skip a peer")
    p.add_argument("--enforce-targets", action="store_true", help="exit 4 when a ratio target is missed")
    p.add_argument(
        "--rounds", type=int, default=1, help="timed rounds per tool; the median is reported (testssl runs once)"
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory (outputs of every tool)")
    args = p.parse_args(argv)
    if args.n < 1:
        p.error("--n must be at least 1")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="hcscan-tls-bench-"))
    results: dict[str, ToolResult] = {}
    missing: dict[str, str] = {}
    try:
        log(f"starting the lab with {args.n} replicas in {workdir / 'lab'}")
        t0 = time.perf_counter()
        with Lab(workdir / "lab", replicas=args.n) as lab:
            endpoints = sorted(
                (ep for name, ep in lab.endpoints.items() if name.startswith("good-")),
                key=lambda ep: int(ep.name.split("-", 1)[1]),
            )
            if len(endpoints) != args.n:
                log(f"ERROR: lab has {len(endpoints)} good-* replicas, wanted {args.n}")
                return 1
            bad = [ep for ep in endpoints if not ep.address.startswith("127.")]
            if bad:
                log(f"ERROR: refusing non-loopback endpoints: {bad}")
                return 1
            log(f"lab up in {time.perf_counter() - t0:.1f}s; ports {endpoints[0].port}..{endpoints[-1].port}")

            steps: list[tuple[str, Callable[[int], ToolResult]]] = []
            if args.hcscan in ("api", "both"):
                steps.append(("hcscan-api", lambda r: run_hcscan_api(workdir, lab, endpoints, r, breakdown=True)))
            if args.hcscan in ("cli", "both"):
                steps.append(("hcscan-cli", lambda r: run_hcscan_cli(workdir, lab, endpoints, r)))
            if "nmap" not in args.skip:
                steps.append(("nmap", lambda r: run_nmap(workdir, endpoints, r)))
            if "sslyze" not in args.skip:
                modes: tuple[SslyzeMode, ...] = (
                    ("matched", "default") if args.sslyze_mode == "both" else (args.sslyze_mode,)
                )
                for mode in modes:
                    key = "sslyze" if mode == modes[0] else f"sslyze-{mode}"
                    steps.append(
                        (key, functools.partial(run_sslyze, workdir, lab, endpoints, mode, python=args.sslyze_python))
                    )
            # testssl takes about a minute for its one endpoint: once, after the timed rounds.
            final: list[tuple[str, Callable[[int], ToolResult]]] = []
            if "testssl" not in args.skip:
                final.append(("testssl", lambda r: run_testssl(workdir, lab, endpoints[0])))

            per_round: dict[str, list[ToolResult]] = {}
            for rnd in range(args.rounds):
                # Rotate the order each round so no tool always runs first (warm-up) or last.
                shift = rnd % len(steps) if steps else 0
                order = steps[shift:] + steps[:shift]
                for key, step in order + (final if rnd == args.rounds - 1 else []):
                    if key in missing:
                        continue
                    log(f"round {rnd + 1}/{args.rounds}: running {key} …")
                    try:
                        r = step(rnd)
                    except MissingTool as exc:
                        missing[key] = str(exc)
                        log(f"!!! MISSING PEER {key}: {exc} — skipped")
                        continue
                    except Exception as exc:  # one tool's crash must not lose the others' numbers
                        r = ToolResult(key, len(endpoints), sanity=f"crashed: {type(exc).__name__}: {exc}"[:2000])
                    per_round.setdefault(key, []).append(r)
                    log(f"{key}: {_fmt(r.wall_s)} s, {'OK' if r.ok else 'SANITY FAILED'}: {r.sanity}")
            for key, _ in steps + final:
                if key in per_round:
                    results[key] = merge_rounds(per_round[key])
    finally:
        if args.keep:
            log(f"outputs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    headline = "hcscan-cli" if "hcscan-cli" in results else "hcscan-api"
    ratios = compute_ratios(results, headline)
    print()
    print(
        f"TLS benchmark: {args.n} endpoints on {LOOPBACK} (lab good-* replicas), {os.cpu_count()} CPUs, "
        f"wall = median of {args.rounds} round(s) (testssl: 1 run, 1 endpoint)"
    )
    print_table(results, ratios, missing)
    if "hcscan-api" in results:
        print_breakdown(results["hcscan-api"])
    if "hcscan-api" in results and "hcscan-cli" in results:
        api_ratio = compute_ratios(results, "hcscan-api")
        print(
            f"\n(in-process hcscan: / nmap {_fmt(api_ratio['hcscan_over_nmap'])}, "
            f"sslyze / it {_fmt(api_ratio['sslyze_over_hcscan'])})"
        )
    if missing:
        print(f"\n!!! MISSING PEERS: {', '.join(f'{k} ({v})' for k, v in missing.items())}")

    if args.json is not None:
        doc = {
            "n": args.n,
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "rounds": args.rounds,
            "tools": {k: r.as_json() for k, r in results.items()},
            "missing": missing,
            "ratios": ratios,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
        log(f"wrote {args.json}")

    if any(not r.ok for r in results.values()):
        return 1
    if missing and not args.allow_missing:
        return 3
    if args.enforce_targets and (ratios["hcscan_over_nmap_met"] is False or ratios["sslyze_over_hcscan_met"] is False):
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())

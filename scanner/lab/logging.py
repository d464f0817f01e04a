"""The lab's log backends: a real rsyslog collector and two small JSON log APIs, all on loopback.

* `RsyslogCollector` starts Debian's `rsyslogd` in the foreground with its own config, pid file and
  work directory: a plain TCP input and a TLS input (port 6514 when free) writing per-host files in
  RFC 5424 (`audit.log`) and traditional RFC 3164 (`audit-bsd.log`) format.
* `LogRotate` runs Debian's `logrotate` on demand (forced, with its own state file) over a config the
  caller writes, as the nightly cron job would: the collector's files rotate as they do in production.
* `FhirAuditServer` answers FHIR `AuditEvent` searches (`_sort`, `_count`) with a Bundle.
* `JsonLogServer` answers an Elasticsearch-style `_search` (`size`, `sort` on `@timestamp`).

Both APIs require a bearer/API-key token and serve HTTPS with a certificate from the lab PKI.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from scanner.lab.certs import CertSpec, LabPKI
from scanner.lab.procs import stop_process

LOOPBACK = "127.0.0.1"
SYSLOG_TLS_PORT = 6514


class CollectorError(RuntimeError):
    """rsyslogd is missing or did not come up."""


def free_port(address: str = LOOPBACK, preferred: int | None = None) -> int:
    """`preferred` if it can be bound on `address` now, else a free ephemeral port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as rsyslog does: TIME_WAIT is no obstacle
            try:
                s.bind((address, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise CollectorError(f"no free port on {address}")


def _wait_listening(address: str, port: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


_RSYSLOG_CONF = """\
global(workDirectory="{work}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" maxSessions="200")
template(name="hcscanPerHost5424" type="string" string="{logs}/%HOSTNAME%/audit.log")
template(name="hcscanPerHostBsd" type="string" string="{logs}/%HOSTNAME%/audit-bsd.log")
ruleset(name="collect") {{
  action(type="omfile" dynaFile="hcscanPerHost5424" template="RSYSLOG_SyslogProtocol23Format" dirCreateMode="0750")
  action(type="omfile" dynaFile="hcscanPerHostBsd" template="RSYSLOG_TraditionalFileFormat" dirCreateMode="0750")
}}
input(type="imtcp" address="{address}" port="{tcp_port}" ruleset="collect")
input(type="imtcp" address="{address}" port="{tls_port}" ruleset="collect"
      streamDriver.name="ossl" streamDriver.mode="1" streamDriver.authMode="anon")
"""


class RsyslogCollector:
    """A throwaway rsyslog collector on loopback. Use as a context manager; `available()` says if rsyslogd exists."""

    def __init__(self, workdir: Path, address: str = LOOPBACK, startup_timeout_s: float = 15.0) -> None:
        self.workdir = Path(workdir)
        self.address = address
        self.startup_timeout_s = startup_timeout_s
        self.logs_dir = self.workdir / "logs"
        self.tcp_port = 0
        self.tls_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self._pki: LabPKI | None = None

    @staticmethod
    def executable() -> str | None:
        return shutil.which("rsyslogd") or next(
            (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if Path(p).is_file()), None
        )

    @classmethod
    def missing_reason(cls) -> str | None:
        """Why a collector cannot start here (None: it can): rsyslogd or its OpenSSL driver is not installed."""
        if cls.executable() is None:
            return "rsyslogd not found (Debian package rsyslog)"
        drivers = [*Path("/usr/lib").glob("rsyslog/lmnsd_ossl.so"), *Path("/usr/lib").glob("*/rsyslog/lmnsd_ossl.so")]
        if not drivers:
            return "rsyslog's OpenSSL driver lmnsd_ossl.so not found (Debian package rsyslog-openssl)"
        return None

    @property
    def ca_bundle(self) -> Path:
        """PEM of the lab root CA that issued the collector's certificate."""
        if self._pki is None:
            raise CollectorError("collector not started")
        return self._pki.ca_bundle

    def host_file(self, hostname: str, fmt: str = "5424") -> Path:
        """The per-host file rsyslog writes for `hostname` (fmt: '5424' or 'bsd')."""
        return self.logs_dir / hostname / ("audit.log" if fmt == "5424" else "audit-bsd.log")

    def __enter__(self) -> RsyslogCollector:
        exe = self.executable()
        reason = self.missing_reason()
        if exe is None or reason is not None:
            raise CollectorError(reason or "rsyslogd not found")
        work = self.workdir / "work"
        for d in (work, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._pki = LabPKI(self.workdir / "pki")
        issued = self._pki.issue(CertSpec(), self.address, "collector")
        self.tcp_port = free_port(self.address)
        self.tls_port = free_port(self.address, SYSLOG_TLS_PORT)
        conf = self.workdir / "rsyslog.conf"
        conf.write_text(
            _RSYSLOG_CONF.format(
                work=work,
                ca=self._pki.ca_bundle,
                cert=issued.chain_pem,
                key=issued.key_pem,
                logs=self.logs_dir,
                address=self.address,
                tcp_port=self.tcp_port,
                tls_port=self.tls_port,
            ),
            encoding="utf-8",
        )
        self._out = (self.workdir / "rsyslogd.out").open("wb")
        self._proc = subprocess.Popen(
            [exe, "-n", "-f", str(conf), "-i", str(self.workdir / "rsyslogd.pid")],
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self.startup_timeout_s
        ok = _wait_listening(self.address, self.tcp_port, deadline) and _wait_listening(
            self.address, self.tls_port, deadline
        )
        if not ok or self._proc.poll() is not None:
            self.stop()
            out = (self.workdir / "rsyslogd.out").read_text(errors="replace")[-2000:]
            raise CollectorError(f"rsyslogd did not start listening: {out}")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, grace_s=5)
            self._proc = None
        if self._out is not None:
            self._out.close()
            self._out = None

    # -- sending ---------------------------------------------------------------------------------

    def send_logger(self, message: str, *, tag: str = "epj-audit", sd: Sequence[tuple[str, str]] = ()) -> None:
        """Send one RFC 5424 message over the plain TCP input with util-linux `logger`."""
        cmd = ["logger", "-T", "-n", self.address, "-P", str(self.tcp_port), "--rfc5424", "-t", tag]
        if sd:
            cmd += ["--sd-id", "audit@32473"]
            for name, value in sd:
                cmd += ["--sd-param", f'{name}="{value}"']
        subprocess.run([*cmd, "--", message], check=True, timeout=10, capture_output=True)

    def send_tls(self, lines: Sequence[str]) -> None:
        """Send complete syslog lines over the TLS input (RFC 5425 octet counting), verifying the collector."""
        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        with (
            socket.create_connection((self.address, self.tls_port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname=self.address) as tls,
        ):
            for line in lines:
                frame = line.encode()
                tls.sendall(f"{len(frame)} ".encode() + frame)
            tls.unwrap()

    @property
    def pid(self) -> int:
        """rsyslogd's process id (for logrotate's `postrotate` HUP, which makes it reopen its files)."""
        if self._proc is None:
            raise CollectorError("collector not started")
        return self._proc.pid

    def send_until_in(self, path: Path, line: str, text: str, timeout_s: float = 30.0) -> None:
        """Send `line` over TLS until `text` shows up in `path`: after a rotation, rsyslog writes to the new file
        only once it has handled the HUP, and lines sent before that land in the rotated one."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.send_tls([line])
            try:
                self.wait_for(path, text, timeout_s=min(2.0, max(0.1, deadline - time.monotonic())))
                return
            except CollectorError:
                if time.monotonic() >= deadline:
                    raise

    @staticmethod
    def wait_for(path: Path, text: str, timeout_s: float = 10.0) -> None:
        """Block until `path` contains `text` (rsyslog writes asynchronously to the sender)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if text in path.read_text(errors="replace"):
                    return
            time.sleep(0.05)
        raise CollectorError(f"{text!r} did not arrive in {path} within {timeout_s:g}s")


class LogRotateError(RuntimeError):
    """logrotate is missing or refused the configuration."""


class LogRotate:
    """Debian's `logrotate`, run now (`--force`) with a state file of its own, over a config the caller writes."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)

    @staticmethod
    def executable() -> str | None:
        return shutil.which("logrotate") or next(
            (p for p in ("/usr/sbin/logrotate", "/sbin/logrotate") if Path(p).is_file()), None
        )

    def rotate(self, config: str, name: str = "logrotate") -> None:
        """Write `config` to WORKDIR/NAME.conf and rotate everything it names once."""
        exe = self.executable()
        if exe is None:
            raise LogRotateError("logrotate not found (Debian package logrotate)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / f"{name}.conf"
        conf.write_text(config, encoding="utf-8")
        conf.chmod(0o644)  # logrotate ignores a config others may write
        done = subprocess.run(
            [exe, "--force", "--state", str(self.workdir / f"{name}.state"), str(conf)],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise LogRotateError(
                f"logrotate failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}"
            )


# -- JSON log APIs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessEvent:
    """One access event as the lab APIs store it."""

    time: dt.datetime
    user: str | None = "u-1001"
    patient: str | None = "Patient/0101"
    action: str | None = "R"


class _Handler(BaseHTTPRequestHandler):
    server: _LogApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: tests read results, not access logs

    def date_time_string(self, timestamp: float | None = None) -> str:
        # A server with a wrong clock (LOG-05 fail case) shifts its Date header by clock_offset_s.
        return super().date_time_string((timestamp or time.time()) + self.server.clock_offset_s)

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        expected = f"{self.server.auth_scheme} {self.server.token}"
        if self.headers.get("Authorization") != expected:
            self._send(401, b'{"error": "unauthorised"}')
            return False
        return True

    def do_GET(self) -> None:
        if self._authorised():
            self.server.answer(self, "GET", b"")

    def do_POST(self) -> None:
        if self._authorised():
            length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
            self.server.answer(self, "POST", self.rfile.read(length))


class _LogApiServer(ThreadingHTTPServer):
    daemon_threads = True
    auth_scheme: ClassVar[str] = "Bearer"

    def __init__(
        self,
        events: Sequence[AccessEvent],
        token: str,
        pki: LabPKI | None = None,
        *,
        garbage: bool = False,
        clock_offset_s: float = 0.0,
    ) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.clock_offset_s = clock_offset_s
        self.events = list(events)
        self.token = token
        self.garbage = garbage
        if pki is not None:
            issued = pki.issue(CertSpec(), LOOPBACK, f"logapi-{id(self)}")
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(issued.chain_pem), str(issued.key_pem))
            self.socket = ctx.wrap_socket(self.socket, server_side=True)
        self.scheme = "https" if pki is not None else "http"
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def base(self) -> str:
        return f"{self.scheme}://{LOOPBACK}:{self.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self) -> _LogApiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, handler: _Handler, method: str, body: bytes) -> None:
        raise NotImplementedError  # abstract: each lab API server answers in its own format

    def sorted_events(self, newest_first: bool, count: int) -> list[AccessEvent]:
        return sorted(self.events, key=lambda e: e.time, reverse=newest_first)[: max(0, count)]


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


class FhirAuditServer(_LogApiServer):
    """`GET /fhir/AuditEvent?_sort=-date&_count=N` → a searchset Bundle of BALP-shaped AuditEvents."""

    def answer(self, handler: _Handler, method: str, body: bytes) -> None:
        parts = urlsplit(handler.path)
        if parts.path != "/fhir/AuditEvent":
            handler._send(404, b'{"resourceType": "OperationOutcome"}', "application/fhir+json")
            return
        if self.garbage:
            handler._send(200, b"<html>not fhir</html>", "text/html")
            return
        query = parse_qs(parts.query)
        sort = query.get("_sort", ["-date"])[0]
        count = int(query.get("_count", ["10"])[0])
        entries = [{"resource": self.resource(e, i)} for i, e in enumerate(self.sorted_events(sort == "-date", count))]
        bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(self.events), "entry": entries}
        handler._send(200, json.dumps(bundle).encode(), "application/fhir+json")

    @staticmethod
    def resource(event: AccessEvent, index: int) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "AuditEvent",
            "id": f"ae-{index}",
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
            "recorded": _iso(event.time),
            "source": {"observer": {"display": "EPJ"}},
        }
        if event.action:
            resource["action"] = event.action
        if event.user:
            resource["agent"] = [{"requestor": True, "who": {"identifier": {"value": event.user}}}]
        if event.patient:
            resource["entity"] = [{"what": {"reference": event.patient}}]
        return resource


class JsonLogServer(_LogApiServer):
    """`POST /audit/_search` with {"size": N, "sort": [{"@timestamp": "asc"|"desc"}]} → {"hits": {"hits": [...]}}."""

    auth_scheme: ClassVar[str] = "ApiKey"

    def answer(self, handler: _Handler, method: str, body: bytes) -> None:
        if urlsplit(handler.path).path != "/audit/_search" or method != "POST":
            handler._send(404, b'{"error": "no such index"}')
            return
        if self.garbage:
            handler._send(200, b"{truncated")
            return
        try:
            query = json.loads(body or b"{}")
            order = next(iter(query.get("sort", [{"@timestamp": "desc"}])[0].values()))
            size = int(query.get("size", 10))
        except (ValueError, TypeError, AttributeError, IndexError, StopIteration):
            handler._send(400, b'{"error": "bad query"}')
            return
        hits = [
            {
                "_source": {
                    "@timestamp": _iso(e.time),
                    "user": {"name": e.user},
                    "patient": {"id": e.patient},
                    "event": {"action": e.action},
                }
            }
            for e in self.sorted_events(order == "desc", size)
        ]
        handler._send(200, json.dumps({"hits": {"total": {"value": len(self.events)}, "hits": hits}}).encode())


class LokiLogServer(_LogApiServer):
    """`GET /loki/api/v1/query_range?query=…&limit=N&direction=backward|forward` → Loki's streams answer.

    Events are spread over two streams (one per host label), each value a [nanosecond time, JSON line] pair, so a
    reader must gather the streams (`data.result.*.values`) and step into the line (`1.user`).
    """

    auth_scheme: ClassVar[str] = "Bearer"

    def answer(self, handler: _Handler, method: str, body: bytes) -> None:
        parts = urlsplit(handler.path)
        if parts.path != "/loki/api/v1/query_range" or method != "GET":
            handler._send(404, b"404 page not found", "text/plain")
            return
        query = parse_qs(parts.query)
        try:
            limit = int(query.get("limit", ["100"])[0])
        except ValueError:
            handler._send(400, b"invalid limit", "text/plain")
            return
        backward = query.get("direction", ["backward"])[0] == "backward"
        streams: dict[str, list[list[str]]] = {}
        for i, e in enumerate(self.sorted_events(backward, limit)):
            line = json.dumps({"user": e.user, "patient": e.patient, "action": e.action, "msg": "record opened"})
            nanoseconds = str(int(e.time.timestamp()) * 1_000_000_000 + e.time.microsecond * 1000)
            streams.setdefault(f"epj-{i % 2 + 1}", []).append([nanoseconds, line])
        result = [{"stream": {"app": "epj", "host": host}, "values": values} for host, values in streams.items()]
        answer = {"status": "success", "data": {"resultType": "streams", "result": result}}
        handler._send(200, json.dumps(answer).encode())

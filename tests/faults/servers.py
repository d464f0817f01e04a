"""The fault lab: loopback endpoints that misbehave the way broken and hostile targets do.

Run in a child process (``python -m tests.faults.servers --workdir D --copies N``) so that a tarpit or a
byte-dripping server never competes with the scanner for the GIL; `FaultLab` starts and stops it.
Every endpoint binds its own 127.0.66.x address; nothing else is ever reached.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tests.faults.certs import make_odd_certs

FAULT_NET = "127.0.66."  # one address per endpoint, on the ports nmap knows for TLS and HTTP (8443, 8080)
PORTS = {"https": 8443, "http": 8080}
ODD_CERT_NAME = "odd.fault.test"
TEN_MB = 10 * 1024 * 1024


@dataclass(frozen=True)
class FaultKind:
    name: str
    protocol: str  # how the inventory declares it: https (a TLS port) or http
    description: str


KINDS: tuple[FaultKind, ...] = (
    FaultKind("tarpit", "https", "accepts TCP and never sends a byte"),
    FaultKind("reset", "https", "reads the ClientHello, then resets the connection (RST)"),
    FaultKind("garbage", "https", "answers the ClientHello with 4 KiB of random bytes"),
    FaultKind("http_on_tls", "https", "a plain HTTP server on the declared TLS port"),
    FaultKind("slow_tls", "https", "drips a TLS record one byte per second"),
    FaultKind("huge_header", "http", "sends a 10 MB header"),
    FaultKind("endless_body", "http", "sends good headers and then a body that never ends"),
    FaultKind("slow_http", "http", "answers one byte per second"),
    FaultKind("non_utf8_subject", "https", "TLS with a certificate whose subject is not UTF-8"),
    FaultKind("huge_san", "https", "TLS with a certificate listing 2001 subjectAltNames"),
    FaultKind("negative_serial", "https", "TLS with a certificate whose serial number is negative"),
)
KINDS_BY_NAME = {k.name: k for k in KINDS}
CERT_KINDS = ("non_utf8_subject", "huge_san", "negative_serial")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _rst(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _hold(reader: asyncio.StreamReader) -> None:
    """Read and drop whatever the client sends until it goes away."""
    while await reader.read(65536):
        pass


async def tarpit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await _hold(reader)
    writer.close()


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    _rst(writer)


async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    writer.write(random.randbytes(4096))
    await writer.drain()
    await _hold(reader)
    writer.close()


async def http_on_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    body = b"<html><body>400 Bad Request: this is a plain HTTP port</body></html>"
    writer.write(
        b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    writer.close()


async def slow_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    record = b"\x16\x03\x03\x40\x00" + bytes(16384)  # a handshake record header, then its body, slowly
    for byte in record:
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(1.0)


async def huge_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    writer.write(b"HTTP/1.1 200 OK\r\nX-Filler: ")
    chunk = b"a" * 65536
    for _ in range(TEN_MB // len(chunk)):
        writer.write(chunk)
        await writer.drain()
    writer.write(b"\r\nContent-Length: 0\r\n\r\n")
    await writer.drain()
    writer.close()


async def endless_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    writer.write(b"HTTP/1.1 200 OK\r\nServer: nginx/1.28.2\r\nContent-Type: text/plain\r\n\r\n")
    chunk = b"x" * 16384
    while True:
        writer.write(chunk)
        await writer.drain()


async def slow_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read(1)
    for byte in b"HTTP/1.1 200 OK\r\nServer: nginx/1.28.2\r\nContent-Length: 0\r\n\r\n":
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(1.0)
    writer.close()


async def tls_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal HTTPS answer for the odd-certificate servers."""
    try:
        await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        writer.close()
        return
    writer.write(
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.28.2\r\nStrict-Transport-Security: max-age=31536000\r\n"
        b"Content-Length: 2\r\nConnection: close\r\n\r\nok"
    )
    await writer.drain()
    writer.close()


HANDLERS: dict[str, Handler] = {
    "tarpit": tarpit,
    "reset": reset,
    "garbage": garbage,
    "http_on_tls": http_on_tls,
    "slow_tls": slow_tls,
    "huge_header": huge_header,
    "endless_body": endless_body,
    "slow_http": slow_http,
}


def _guard(handler: Handler) -> Handler:
    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (OSError, asyncio.CancelledError, ssl.SSLError):
            writer.transport.abort()

    return run


async def serve(workdir: Path, copies: int, manifest: Path) -> None:
    certs = make_odd_certs(workdir / "certs", ODD_CERT_NAME)
    endpoints: list[dict[str, object]] = []
    servers: list[asyncio.Server] = []
    for kind in KINDS:
        for i in range(copies):
            context: ssl.SSLContext | None = None
            if kind.name in CERT_KINDS:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.load_cert_chain(certs[kind.name].cert_pem, certs[kind.name].key_pem)
                handler = tls_ok
            else:
                handler = HANDLERS[kind.name]
            host = f"{FAULT_NET}{len(endpoints) + 1}"
            port = PORTS[kind.protocol]
            server = await asyncio.start_server(_guard(handler), host, port, ssl=context, backlog=64)
            servers.append(server)
            endpoints.append(
                {"name": f"{kind.name}-{i}", "kind": kind.name, "host": host, "port": port, "protocol": kind.protocol}
            )
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"server_name": ODD_CERT_NAME, "endpoints": endpoints}))
    tmp.rename(manifest)
    await asyncio.gather(*(s.serve_forever() for s in servers))


@dataclass(frozen=True)
class FaultEndpoint:
    name: str
    kind: str
    host: str
    port: int
    protocol: str
    server_name: str | None


class FaultLab:
    """Start the fault servers (``copies`` of every kind) in a child process; stop them on exit."""

    def __init__(self, workdir: Path, copies: int = 1) -> None:
        self.workdir = workdir
        self.copies = copies
        self._proc: subprocess.Popen[bytes] | None = None
        self.endpoints: list[FaultEndpoint] = []

    def __enter__(self) -> FaultLab:
        self.workdir.mkdir(parents=True, exist_ok=True)
        manifest = self.workdir / "faults.json"
        manifest.unlink(missing_ok=True)
        root = Path(__file__).resolve().parents[2]
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.faults.servers",
                "--workdir",
                str(self.workdir),
                "--copies",
                str(self.copies),
                "--manifest",
                str(manifest),
            ],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            stdin=subprocess.DEVNULL,
            stderr=(self.workdir / "faults.log").open("wb"),
        )
        deadline = time.monotonic() + 30
        while not manifest.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError("fault lab did not start: " + (self.workdir / "faults.log").read_text()[-2000:])
            time.sleep(0.05)
        data = json.loads(manifest.read_text())
        self.endpoints = [
            FaultEndpoint(
                e["name"],
                e["kind"],
                e["host"],
                e["port"],
                e["protocol"],
                data["server_name"] if e["kind"] in CERT_KINDS else None,
            )
            for e in data["endpoints"]
        ]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def of_kind(self, kind: str) -> list[FaultEndpoint]:
        return [e for e in self.endpoints if e.kind == kind]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--copies", type=int, default=1)
    parser.add_argument("--manifest", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.workdir, args.copies, args.manifest))


if __name__ == "__main__":
    main()

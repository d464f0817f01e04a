"""The NTP probe: one SNTP (RFC 4330) query per declared `ntp` endpoint: offset, stratum, synchronisation.

A UDP exchange of 48 bytes each way — light enough for fragile systems. The reply must come from the
address asked, in server mode, and echo our transmit timestamp (so a stray or spoofed datagram is refused).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

from scanner.probes.base import (
    FactSpec,
    ProbeContext,
    ProbeError,
    ProbeErrorReason,
    ProbeFacts,
    ProbeOutcome,
    Target,
)

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_PACKET = struct.Struct("!BBbb11I")  # LI/VN/mode, stratum, poll, precision, 11 × 32-bit words

FACTS: Sequence[FactSpec] = (
    FactSpec(
        "ntp.offset_seconds", "float", "Server clock minus local clock (RFC 4330 offset), seconds.", volatile=True
    ),
    FactSpec("ntp.delay_seconds", "float", "Round-trip delay of the query, seconds.", volatile=True),
    FactSpec("ntp.stratum", "int", "Stratum the server reports (1 = primary reference; 16 = unsynchronised)."),
    FactSpec("ntp.synchronized", "bool", "Leap indicator is not 3 (alarm) and stratum is 1..15."),
    FactSpec(
        "ntp.reference_id",
        "str",
        "Reference identifier (refid) as text or dotted address.",
        nullable=True,
        volatile=True,
    ),
)


@dataclass(frozen=True)
class NtpReply:
    offset_s: float
    delay_s: float
    stratum: int
    leap: int
    reference_id: str | None


def _to_ntp(t: float) -> tuple[int, int]:
    seconds = int(t) + NTP_EPOCH_OFFSET
    return seconds & 0xFFFFFFFF, int((t % 1) * 2**32) & 0xFFFFFFFF


def _from_ntp(seconds: int, fraction: int) -> float:
    return seconds - NTP_EPOCH_OFFSET + fraction / 2**32


def build_request(transmit: float) -> bytes:
    """A client-mode (3), version-4 request whose transmit timestamp the server must echo."""
    sec, frac = _to_ntp(transmit)
    return _PACKET.pack(0x23, 0, 0, 0, *([0] * 9), sec, frac)


def parse_reply(data: bytes, sent: bytes, t1: float, t4: float) -> NtpReply:
    """Check and read a server reply; raise ValueError with the reason if it is not a valid answer to `sent`."""
    if len(data) < _PACKET.size:
        raise ValueError(f"reply of {len(data)} bytes is shorter than an NTP header")
    fields = _PACKET.unpack(data[: _PACKET.size])
    first, stratum = fields[0], fields[1]
    words = fields[4:]
    leap, mode = first >> 6, first & 0x7
    if mode != 4:
        raise ValueError(f"reply is in mode {mode}, not server mode 4")
    # Words: root delay, root dispersion, refid, reference ts (2), originate ts (2), receive ts (2), transmit ts (2).
    if words[5:7] != _PACKET.unpack(sent)[4:][9:11]:
        raise ValueError("reply does not echo our transmit timestamp (stray or spoofed datagram)")
    if stratum == 0:
        kiss = data[12:16].decode("ascii", "replace")
        raise ValueError(f"kiss-of-death from the server ({kiss!r}): it refuses to serve time")
    t2 = _from_ntp(words[7], words[8])
    t3 = _from_ntp(words[9], words[10])
    offset = ((t2 - t1) + (t3 - t4)) / 2
    delay = (t4 - t1) - (t3 - t2)
    raw_ref = data[12:16]
    if stratum == 1:
        ref: str | None = raw_ref.rstrip(b"\x00").decode("ascii", "replace") or None
    else:
        ref = ".".join(str(b) for b in raw_ref)
    return NtpReply(offset, delay, stratum, leap, ref)


def query(address: str, port: int, timeout_s: float) -> NtpReply:
    """One SNTP exchange; raises OSError/TimeoutError/ValueError."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect((address, port))  # a connected UDP socket only accepts datagrams from that peer
        # Random low bits in the transmit timestamp make the echo check meaningful.
        t1 = time.time()
        request = bytearray(build_request(t1))
        request[44:48] = os.urandom(4)
        sent = bytes(request)
        sock.send(sent)
        data = sock.recv(512)
        t4 = time.time()
    return parse_reply(data, sent, t1, t4)


class NtpProbe:
    kind: ClassVar[str] = "ntp"
    protocols: ClassVar[frozenset[str]] = frozenset({"ntp"})
    facts: ClassVar[Sequence[FactSpec]] = FACTS

    def gather(self, targets: Sequence[Target], ctx: ProbeContext) -> dict[str, ProbeOutcome]:
        if not targets:
            return {}
        with ThreadPoolExecutor(max_workers=max(1, min(ctx.max_workers, len(targets)))) as pool:
            return dict(zip((t.key for t in targets), pool.map(self._one, targets), strict=True))

    @staticmethod
    def _one(target: Target) -> ProbeOutcome:
        try:
            reply = query(target.address, target.port, target.politeness.timeout_s)
        except TimeoutError:
            return ProbeError(ProbeErrorReason.TIMEOUT, f"no NTP reply within {target.politeness.timeout_s:g} s")
        except ConnectionRefusedError:
            return ProbeError(ProbeErrorReason.REFUSED, "ICMP port unreachable: no NTP server on this port")
        except ValueError as exc:
            return ProbeError(ProbeErrorReason.PROTOCOL, str(exc))
        except OSError as exc:
            return ProbeError(ProbeErrorReason.UNREACHABLE, f"{type(exc).__name__}: {exc}")
        return ProbeFacts(
            {
                "ntp.offset_seconds": round(reply.offset_s, 6),
                "ntp.delay_seconds": round(reply.delay_s, 6),
                "ntp.stratum": reply.stratum,
                "ntp.synchronized": reply.leap != 3 and 1 <= reply.stratum <= 15,
                "ntp.reference_id": reply.reference_id,
            }
        )

"""A small SNTP server for the lab: answers like a real NTP server, with a configurable clock error.

It speaks the real wire format (RFC 4330 server mode) on a loopback UDP port so the NTP probe is tested
against a live server: `offset_s` shifts its clock, `stratum`/`leap` say how synchronised it claims to be,
`echo_origin=False` makes it answer with a wrong originate timestamp (as a spoofed reply would).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from types import TracebackType

NTP_EPOCH_OFFSET = 2_208_988_800
_HEADER = struct.Struct("!BBbb11I")


def _ntp(t: float) -> tuple[int, int]:
    return (int(t) + NTP_EPOCH_OFFSET) & 0xFFFFFFFF, int((t % 1) * 2**32) & 0xFFFFFFFF


class NtpResponder:
    def __init__(
        self,
        address: str = "127.0.0.1",
        *,
        offset_s: float = 0.0,
        stratum: int = 2,
        leap: int = 0,
        echo_origin: bool = True,
        silent: bool = False,
    ) -> None:
        self.offset_s, self.stratum, self.leap = offset_s, stratum, leap
        self.echo_origin, self.silent = echo_origin, silent
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((address, 0))
        self._sock.settimeout(0.2)
        self.address, self.port = self._sock.getsockname()[:2]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"ntp-lab-{self.port}", daemon=True)

    def __enter__(self) -> NtpResponder:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            received = time.time() + self.offset_s
            if self.silent or len(data) < _HEADER.size:
                continue
            origin = _HEADER.unpack(data[: _HEADER.size])[4:][9:11]
            if not self.echo_origin:
                origin = (origin[0] ^ 0x5A5A5A5A, origin[1])
            ref = b"GPS\x00" if self.stratum == 1 else socket.inet_aton("127.0.0.53")
            reply = bytearray(
                _HEADER.pack(
                    (self.leap << 6) | (4 << 3) | 4,  # leap, version 4, server mode
                    self.stratum,
                    6,
                    -20,
                    0,
                    0,
                    0,  # refid, filled in below
                    *_ntp(received - 16),  # reference timestamp: last set 16 s ago
                    *origin,
                    *_ntp(received),
                    *_ntp(time.time() + self.offset_s),
                )
            )
            reply[12:16] = ref
            self._sock.sendto(bytes(reply), peer)

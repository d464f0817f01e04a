"""One DICOM association, the only DICOM exchange hcscan makes: A-ASSOCIATE, optionally one C-ECHO, A-RELEASE.

Used by the exposure probe (EXP-02: does the node accept an unknown calling AE title, over TLS) and by the
availability sampler (is the node's DICOM application answering, in the clear or over TLS). Never anything that
stores. Each step waits at most `timeout_s`, the whole exchange at most four of them.

What the peer answered is read from the PDUs it sent, not only from pynetdicom's state: a node that sends an
A-ASSOCIATE-RJ and closes the connection at once (dcmtk's dcmqrscp does) sometimes leaves pynetdicom reporting an
abort, although the rejection arrived; the rejection is decoded from its PDU then.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal, cast

from scanner.probes.http import shutdown_socket

_PDU_AC, _PDU_RJ, _PDU_ABORT = 0x02, 0x03, 0x07
# PS3.8 9.3.4: the A-ASSOCIATE-RJ's result, source and reason/diagnostic, as words.
_RJ_RESULT = {1: "Rejected Permanent", 2: "Rejected Transient"}
_RJ_SOURCE = {1: "Service User", 2: "Service Provider (ACSE)", 3: "Service Provider (Presentation)"}
_RJ_REASON = {
    (1, 1): "No reason given",
    (1, 2): "Application context name not supported",
    (1, 3): "Calling AE title not recognised",
    (1, 7): "Called AE title not recognised",
    (2, 1): "No reason given",
    (2, 2): "Protocol version not supported",
    (3, 1): "Temporary congestion",
    (3, 2): "Local limit exceeded",
}


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ: result 1 permanent / 2 transient; source 1 service user, 2 ACSE, 3 presentation."""

    result: int
    source: int
    diagnostic: int

    @property
    def reason(self) -> str:
        return _RJ_REASON.get((self.source, self.diagnostic), f"reason {self.diagnostic}")

    def describe(self) -> str:
        result = _RJ_RESULT.get(self.result, f"result {self.result}")
        source = _RJ_SOURCE.get(self.source, f"source {self.source}")
        return f"{self.reason} ({result}, {source})"


@dataclass(frozen=True)
class Association:
    """What one association attempt saw.

    outcome: "accepted" (A-ASSOCIATE-AC), "rejected" (A-ASSOCIATE-RJ, see `rejection`) or "no_answer" (no
    connection, no A-ASSOCIATE answer in time, an abort, or not DICOM: `detail` says which).
    """

    outcome: Literal["accepted", "rejected", "no_answer"]
    connected: bool  # the TCP connection (and the TLS handshake, over TLS) was made
    timed_out: bool  # the time budget ran out before the exchange was over
    established: bool = False  # accepted with Verification among the accepted presentation contexts
    echo_sent: bool = False
    echo_status: int | None = None  # the C-ECHO's status (0: success); None when not sent or not answered
    echo_refused: bool = False  # the peer answered the C-ECHO with an A-ABORT (Orthanc: calling AE title unknown)
    rejection: Rejection | None = None
    detail: str = ""


class _Watch:
    """Shuts an association's socket down, at once or when the overall budget is spent; records what arrived.

    pynetdicom clears the socket timeout once connected and reads only when select() says "readable"; over TLS a
    record that carries no application data (a TLS 1.3 session ticket) makes its reader block for good when the
    peer then stays silent, and aborting waits for that reader. Shutting the socket down ends the read."""

    def __init__(self, negotiation_s: float, budget_s: float) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.fired = False
        self.connected = False
        self.first_pdu: bytes | None = None  # the first PDU the peer sent (AC, RJ or A-ABORT)
        self.pdu_types: list[int] = []  # the type of every PDU the peer sent
        self._established = threading.Event()
        # Not established when connect + A-ASSOCIATE answer are over: pynetdicom has given up, hang up for it.
        self._timers = [threading.Timer(negotiation_s, self._unless_established), threading.Timer(budget_s, self.now)]
        for timer in self._timers:
            timer.daemon = True
            timer.start()

    def opened(self, event: Any) -> None:
        """EVT_CONN_OPEN: remember the connection's socket."""
        sock = event.assoc.dul.socket.socket
        with self._lock:
            self.connected = True
            self._sockets.append(sock)
            fired = self.fired
        if fired:
            shutdown_socket(sock)

    def received(self, event: Any) -> None:
        """EVT_DATA_RECV: keep the first PDU the peer sent."""
        with self._lock:
            if self.first_pdu is None:
                self.first_pdu = bytes(event.data[:16])
            if event.data:
                self.pdu_types.append(event.data[0])

    def established(self, event: Any) -> None:
        """EVT_ESTABLISHED: the exchange may take its whole budget."""
        self._established.set()

    def _unless_established(self) -> None:
        if not self._established.is_set():
            self.now()

    def now(self) -> None:
        for timer in self._timers:
            timer.cancel()
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            shutdown_socket(sock)  # the TCP socket under the TLS layer: the blocked reader's read ends


def _rejection_of(answer: Any, first_pdu: bytes | None) -> Rejection | None:
    """The A-ASSOCIATE-RJ pynetdicom decoded, else the one in the first PDU the peer sent (PS3.8 9.3.4)."""
    if answer is not None and getattr(answer, "result", None) in (1, 2):
        return Rejection(int(answer.result), int(answer.result_source), int(answer.diagnostic))
    if first_pdu is not None and len(first_pdu) >= 10 and first_pdu[0] == _PDU_RJ:
        return Rejection(first_pdu[7], first_pdu[8], first_pdu[9])
    return None


def associate(
    address: str,
    port: int,
    *,
    calling: str,
    called: str,
    timeout_s: float,
    tls: tuple[ssl.SSLContext, str | None] | None = None,
    echo: bool = True,
) -> Association:
    """Ask `address`:`port` for one Verification association from `calling` to `called` (AE titles the caller
    validated); over TLS when `tls` = (context, server name or None). If accepted: one C-ECHO when `echo`, then
    A-RELEASE. Never raises for the peer's sake."""
    from pynetdicom import AE, evt  # imported here: it loads pydicom, which most commands never need
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.connection_timeout = ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    # connect + handshake and the A-ASSOCIATE answer; then C-ECHO and A-RELEASE (a little slack for the threads)
    watch = _Watch(2 * timeout_s + 0.5, 4 * timeout_s + 0.5)
    handlers: list[Any] = [
        (evt.EVT_CONN_OPEN, watch.opened),
        (evt.EVT_DATA_RECV, watch.received),
        (evt.EVT_ESTABLISHED, watch.established),
    ]
    started = time.monotonic()
    try:
        try:
            # pynetdicom types the server name as str; None (no SNI) is what ssl's wrap_socket accepts as well
            tls_args = (tls[0], cast(str, tls[1])) if tls is not None else None
            assoc: Any = ae.associate(address, port, ae_title=called, tls_args=tls_args, evt_handlers=handlers)
        except (OSError, ValueError) as exc:
            return Association("no_answer", watch.connected, watch.fired, detail=f"{type(exc).__name__}: {exc}"[:300])
        answer = assoc.acceptor.primitive  # the A-ASSOCIATE-AC or -RJ; None if none arrived
        first = watch.first_pdu
        if assoc.is_established or getattr(answer, "result", None) == 0x00 or (first and first[0] == _PDU_AC):
            return _exchange(assoc, echo, watch)
        rejection = _rejection_of(answer, first)
        if rejection is not None:
            return Association("rejected", True, False, rejection=rejection, detail=rejection.describe())
        # pynetdicom's own ACSE timer (timeout_s) ends a silent wait before our hang-up does: that is a timeout too
        silent = watch.connected and first is None and time.monotonic() - started >= timeout_s
        timed_out = watch.fired or silent
        if not watch.connected:
            why = "no connection" + (f" within {timeout_s:g}s" if watch.fired else " (refused, unreachable or not TLS)")
        elif first is not None and first[0] == _PDU_ABORT:
            why = "the peer aborted the association request (A-ABORT)"
        elif timed_out:
            why = f"no A-ASSOCIATE answer within {timeout_s:g}s"
        else:
            why = "no A-ASSOCIATE answer: the peer closed the connection or did not speak DICOM"
        return Association("no_answer", watch.connected, timed_out, detail=why)
    finally:
        watch.now()  # released, rejected or given up: nothing more to say (and no reader left blocked)
        ae.shutdown()


def _exchange(assoc: Any, echo: bool, watch: _Watch) -> Association:
    if not assoc.is_established:  # accepted, then aborted: Verification was not among the accepted contexts
        return Association("accepted", True, watch.fired, detail="accepted, then aborted (Verification not accepted)")
    status: int | None = None
    try:
        if echo:
            code = getattr(assoc.send_c_echo(), "Status", None)
            status = int(code) if isinstance(code, int) else None
    finally:
        assoc.release()
    refused = echo and status is None and assoc.is_aborted and _PDU_ABORT in watch.pdu_types
    return Association("accepted", True, watch.fired, True, echo, status, echo_refused=refused)

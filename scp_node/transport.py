"""Settings of the node's DICOM connections, inbound and outbound, made as each one opens.

pynetdicom leaves Nagle's algorithm on. DIMSE is request / response: a C-STORE sub-operation
ends with a small PDU, and the C-GET pending response is a small write right after it; with
Nagle on, each waits for the peer's delayed ACK (about 40 ms on Linux) before it leaves. dcmtk
and Orthanc set TCP_NODELAY; so does the node, on every association's socket. The other half
is the node's own ACKs: dcmtk 3.6.7's getscu and storescp write a response's PDU header and its
body in two writes with Nagle on, so the body waits until the node acknowledges the header, and
Linux delays that ACK on a request / response connection: 40 ms per C-STORE sub-operation of a
C-GET or C-MOVE. The node asks for its ACKs at once (TCP_QUICKACK, which Linux clears again by
itself) before each read.

pynetdicom also binds a handler to every PDU sent and received that formats a description of
it for its DEBUG log, whether or not that log is on: on a C-GET of CT slices (a 16 kB PDU
each 16 kB of pixels) that was about a tenth of the node's CPU. Those handlers log nothing
above DEBUG, so they are dropped unless pynetdicom's logger would show their lines; the
DIMSE-level handlers (the "Received Store Request" lines) stay.

And pynetdicom passes every PDU of a message from the thread that encodes it to its reactor
thread, one queue item, state-machine turn and socket write each; the reactor sleeps a
millisecond whenever it finds its queue empty. A 0.5 MB slice sent to a peer that takes 16 kB
PDUs is 32 such hand-overs, and on a small machine the encoding thread and the reactor take
turns with the interpreter lock: the slice waited on that, not on the network. So a message's
PDUs are encoded together (the same PDUs, byte for byte) and the reactor writes them in one
turn; pynetdicom's DEBUG log describes no P-DATA-TF PDU it sends, so it shows the same lines.

Last, pynetdicom's send_*() pauses its association's reactor before it sends and waits for the
response; a reactor that had just passed its pause point polled the queue all the same and could
take the response as an "unexpected" message, leaving the sender to time out and abort
(pynetdicom issue 875; seen in CI). The reactor's poll leaves the queue alone while it is paused,
for every association in the process: the node's inbound and outbound ones and its clients'.
A message on a presentation context the association did not accept made pynetdicom's reactor
thread die on a KeyError, leaving the peer to time out; the peer now gets an A-ABORT, and the
log a line naming it and the context.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable, Iterator
from contextlib import suppress
from functools import partial

from pynetdicom import evt, fsm
from pynetdicom._handlers import standard_pdu_recv_handler, standard_pdu_sent_handler
from pynetdicom.association import Association
from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE, DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import DimsePrimitiveType
from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import P_DATA

from scp_node.reactor_waits import wait_for_work

LOGGER = logging.getLogger(__name__)
_PYNETDICOM_LOG = logging.getLogger("pynetdicom")
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only

# P-DATA-TF PDU of one presentation data value: PDU type 4, reserved, PDU length, then the
# item's length and presentation context ID (PS3.8 9.3.5); the value starts with its control header.
_P_DATA_TF_HEADER = struct.Struct(">BBIIB")


def prepare_connection(event: Event) -> None:
    """EVT_CONN_OPEN handler: Nagle's algorithm and delayed ACKs off, PDUs described only when
    the DEBUG log shows them, each message's PDUs sent together, reactors that wait for work
    instead of polling (`scp_node.reactor_waits`)."""
    assoc = event.assoc
    connection = assoc.dul.socket.socket if assoc.dul.socket else None
    if connection is not None:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if _TCP_QUICKACK is not None:
            assoc.dul.socket.recv = partial(_receive_acknowledging_at_once, assoc.dul.socket.recv, connection)
    if not _PYNETDICOM_LOG.isEnabledFor(logging.DEBUG):
        assoc.unbind(evt.EVT_PDU_RECV, standard_pdu_recv_handler)
        assoc.unbind(evt.EVT_PDU_SENT, standard_pdu_sent_handler)
    assoc.dimse.send_msg = partial(send_whole_message, assoc)
    wait_for_work(assoc)


def _receive_acknowledging_at_once(
    receive: Callable[[int], bytearray], connection: socket.socket, nr_bytes: int
) -> bytearray:
    """AssociationSocket.recv, after sending any ACK the kernel was holding back."""
    with suppress(OSError):  # closed: the read below reports it as pynetdicom expects
        connection.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
    return receive(nr_bytes)


class EncodedMessage(P_DATA):
    """All P-DATA-TF PDUs of one DIMSE message, encoded: one item of the reactor's queue."""

    def __init__(self, pdus: bytes) -> None:
        super().__init__()
        self.pdus = pdus


def send_whole_message(assoc: Association, primitive: DimsePrimitiveType, context_id: int) -> None:
    """pynetdicom's DIMSEServiceProvider.send_msg, queueing the message once instead of per PDU."""
    if primitive.MessageIDBeingRespondedTo is None:
        message = _RQ_TO_MESSAGE[type(primitive)]()
    else:
        message = _RSP_TO_MESSAGE[type(primitive)]()
    message.primitive_to_message(primitive)
    message.context_id = context_id
    evt.trigger(assoc, evt.EVT_DIMSE_SENT, {"message": message})
    pdus = b"".join(encoded_pdus(message, context_id, assoc.dimse.maximum_pdu_size))
    assoc.dul.send_pdu(EncodedMessage(pdus))


def encoded_pdus(message: DIMSEMessage, context_id: int, max_pdu_length: int) -> Iterator[bytes]:
    """The P-DATA-TF PDUs pynetdicom would send for `message`, as byte strings: its own
    fragmentation, one presentation data value per PDU."""
    for fragment in message.encode_msg(context_id, max_pdu_length):
        for fragment_context, value in fragment.presentation_data_value_list:
            yield _P_DATA_TF_HEADER.pack(0x04, 0x00, len(value) + 5, len(value) + 1, fragment_context)
            yield value


def _send_p_data(dul: DULServiceProvider) -> str:
    """State-machine action DT-1 (Sta6 + Evt9): an EncodedMessage goes out in one write, any
    other P-DATA primitive as pynetdicom sends it."""
    if not isinstance(dul.to_provider_queue.queue[0], EncodedMessage):
        return fsm.DT_1(dul)
    message = dul.to_provider_queue.get(False)
    if dul.socket is not None:  # AssociationSocket.send: Evt17 if the connection is gone
        dul.socket.send(memoryview(message.pdus))
    return "Sta6"


def _receive_p_data(dul: DULServiceProvider) -> str:
    """State-machine action DT-2 (Sta6 + Evt10): pynetdicom's, unless the P-DATA-TF PDU uses a
    presentation context the association did not accept; then AA-8, the upper layer's abort
    for a protocol error (A-ABORT to the peer, A-P-ABORT to the association)."""
    pdu = dul._recv_pdu.queue[0]
    contexts = {item.presentation_context_id for item in pdu.presentation_data_value_items}
    unaccepted = sorted(contexts - dul.assoc._accepted_cx.keys())
    if not unaccepted:
        return fsm.DT_2(dul)
    dul._recv_pdu.get(False)
    peer = dul.assoc.requestor if dul.assoc.is_acceptor else dul.assoc.acceptor
    LOGGER.warning(
        "%s (%s) sent a message on presentation context %s, which the association did not "
        "accept: association aborted",
        peer.ae_title,
        peer.address,
        ", ".join(map(str, unaccepted)),
    )
    return fsm.AA_8(dul)


def _get_msg_unless_paused(
    dimse: DIMSEServiceProvider, block: bool = False
) -> tuple[int | None, DIMSEMessage | None]:
    """DIMSEServiceProvider.get_msg, whose only non-blocking caller is the association's reactor.
    The queue is looked at before the pause: a sender pauses before it sends, so a response
    found there while the reactor is paused is the sender's."""
    if not block:
        _, message = dimse.peek_msg()
        if message is None or not dimse.assoc._reactor_checkpoint.is_set():
            return None, None
    return _pynetdicom_get_msg(dimse, block)


_pynetdicom_get_msg = DIMSEServiceProvider.get_msg
DIMSEServiceProvider.get_msg = _get_msg_unless_paused
fsm.ACTIONS["DT-1"] = (fsm.ACTIONS["DT-1"][0], _send_p_data, "Sta6")
fsm.ACTIONS["DT-2"] = (fsm.ACTIONS["DT-2"][0], _receive_p_data, "Sta6")

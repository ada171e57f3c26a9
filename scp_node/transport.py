"""Settings of the node's DICOM connections, inbound and outbound, made as each one opens.

pynetdicom leaves Nagle's algorithm on. DIMSE is request / response: a C-STORE sub-operation
ends with a small PDU, and the C-GET pending response is a small write right after it; with
Nagle on, each waits for the peer's delayed ACK (about 40 ms on Linux) before it leaves. dcmtk
and Orthanc set TCP_NODELAY; so does the node, on every association's socket.

pynetdicom also binds a handler to every PDU sent and received that formats a description of
it for its DEBUG log, whether or not that log is on: on a C-GET of CT slices (a 16 kB PDU
each 16 kB of pixels) that was about a tenth of the node's CPU. Those handlers log nothing
above DEBUG, so they are dropped unless pynetdicom's logger would show their lines; the
DIMSE-level handlers (the "Received Store Request" lines) stay.
"""

from __future__ import annotations

import logging
import socket

from pynetdicom import evt
from pynetdicom._handlers import standard_pdu_recv_handler, standard_pdu_sent_handler
from pynetdicom.events import Event

_PYNETDICOM_LOG = logging.getLogger("pynetdicom")


def prepare_connection(event: Event) -> None:
    """EVT_CONN_OPEN handler: Nagle's algorithm off, PDU debug descriptions only when logged."""
    connection = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if connection is not None:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if not _PYNETDICOM_LOG.isEnabledFor(logging.DEBUG):
        event.assoc.unbind(evt.EVT_PDU_RECV, standard_pdu_recv_handler)
        event.assoc.unbind(evt.EVT_PDU_SENT, standard_pdu_sent_handler)

"""TCP settings of the node's DICOM connections, inbound and outbound.

pynetdicom leaves Nagle's algorithm on. DIMSE is request / response: a C-STORE sub-operation
ends with a small PDU, and the C-GET pending response is a small write right after it; with
Nagle on, each waits for the peer's delayed ACK (about 40 ms on Linux) before it leaves. dcmtk
and Orthanc set TCP_NODELAY; so does the node, on every association's socket as it opens.
"""

from __future__ import annotations

import socket

from pynetdicom.events import Event


def send_without_delay(event: Event) -> None:
    """EVT_CONN_OPEN handler: switch Nagle's algorithm off for this association's socket."""
    connection = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if connection is not None:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

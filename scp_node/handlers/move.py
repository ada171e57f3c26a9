"""C-MOVE: send the matching instances to a destination AE from the peer table.

The destination must be a peer with a host and port (`scp-node ae add`), else 0xA801. The
store association to it proposes, per SOP class, the stored transfer syntax and the
uncompressed ones, so files go out unchanged where the destination accepts them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context

from scp_node.context import NodeContext
from scp_node.handlers import status
from scp_node.handlers.outbound import Match, Outbound, matching_instances, sub_operations
from scp_node.index.query import InvalidQuery
from scp_node.index.repository import find_peer
from scp_node.negotiation import UNIVERSAL
from scp_node.tls import client_context
from scp_node.transport import prepare_connection

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255


def handle_move(event: Event, context: NodeContext) -> Iterator[Any]:
    requestor = event.assoc.requestor
    destination_ae = str(event.move_destination).strip()
    with context.sessions() as session:
        peer = find_peer(session, destination_ae)
        destination = (peer.host, peer.port) if peer is not None and peer.host and peer.port else None
        tls = peer is not None and peer.tls
    if destination is None:
        reason = (
            "unknown destination"
            if peer is None
            else f"peer {destination_ae} has no host and port to send to (scp-node ae add --host --port)"
        )
        log.warning("C-MOVE from %s to %r refused: %s", requestor.ae_title, destination_ae, reason)
        yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
        return
    try:
        matches = matching_instances(context, event.identifier)
    except InvalidQuery as exc:
        log.warning("C-MOVE from %s at %s: bad identifier: %s", requestor.ae_title, requestor.address, exc)
        matches = None
    opened: list[Outbound] = []

    def on_established(established: Event) -> None:
        opened.append(Outbound(context, established.assoc).install())

    association: dict[str, Any] = {
        "contexts": _store_contexts(matches or []),
        "evt_handlers": [(evt.EVT_CONN_OPEN, prepare_connection), (evt.EVT_ESTABLISHED, on_established)],
    }
    if tls:
        association["tls_args"] = (client_context(context.config.network.tls), None)
    yield (*destination, association)
    if matches is None:
        yield 1  # a status can only follow the sub-operation count
        yield status.IDENTIFIER_DOES_NOT_MATCH, None
        return
    log.info("C-MOVE from %s: %d instances to %s", requestor.ae_title, len(matches), destination_ae)
    yield len(matches)
    yield from sub_operations(event, opened[0], matches)


def _store_contexts(matches: list[Match]) -> list[PresentationContext]:
    """Per SOP class, one context per syntax: the stored one and each uncompressed one.

    Separate contexts let the destination accept the stored syntax on its own, so the file
    goes out unchanged whenever it can take it, and an uncompressed one as the fallback.
    """
    wanted = dict.fromkeys(
        (match.sop_class_uid, syntax)
        for match in matches
        for syntax in dict.fromkeys([match.transfer_syntax_uid, *UNIVERSAL])
    )
    contexts = [build_context(sop_class, syntax) for sop_class, syntax in wanted]
    if len(contexts) > MAX_CONTEXTS:
        log.warning("C-MOVE needs %d presentation contexts; proposing %d", len(contexts), MAX_CONTEXTS)
    return contexts[:MAX_CONTEXTS]

"""C-GET: retrieve at PATIENT / STUDY / SERIES / IMAGE level over the requester's association.

Only peers with the 'get' permission get a C-GET context (see scp_node.access). pynetdicom
counts the sub-operations and builds the final status (Success, Warning 0xB000 or Failure
0xA702 with the Failed SOP Instance UID List, or Cancel) from what `sub_operations` yields.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pynetdicom.events import Event

from scp_node.context import NodeContext
from scp_node.handlers import status
from scp_node.handlers.outbound import Outbound, matching_instances, sub_operations
from scp_node.index.query import InvalidQuery

log = logging.getLogger(__name__)


def handle_get(event: Event, context: NodeContext) -> Iterator[Any]:
    requestor = event.assoc.requestor
    try:
        matches = matching_instances(context, event.identifier)
    except InvalidQuery as exc:
        log.warning("C-GET from %s at %s: bad identifier: %s", requestor.ae_title, requestor.address, exc)
        yield status.IDENTIFIER_DOES_NOT_MATCH, None
        return
    log.info("C-GET from %s: %d instances", requestor.ae_title, len(matches))
    yield len(matches)
    outbound = Outbound(context, event.assoc).install()
    try:
        yield from sub_operations(event, outbound, matches)
    finally:
        outbound.restore()

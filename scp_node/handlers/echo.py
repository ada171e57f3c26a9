"""C-ECHO: verification, subject to the peer's 'echo' permission."""

from __future__ import annotations

import logging

from pynetdicom.events import Event

from scp_node.access import is_allowed
from scp_node.context import NodeContext
from scp_node.handlers import status

log = logging.getLogger(__name__)


def handle_echo(event: Event, context: NodeContext) -> int:
    calling_ae = event.assoc.requestor.ae_title
    if not is_allowed(context, calling_ae, "echo"):
        log.warning("C-ECHO refused for %s at %s", calling_ae, event.assoc.requestor.address)
        return status.NOT_AUTHORIZED
    return status.SUCCESS

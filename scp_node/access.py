"""Who may do what: peer-table permissions, and the config's default for unknown AE titles."""

from __future__ import annotations

from scp_node.context import NodeContext
from scp_node.index.repository import find_peer

PERMISSIONS = ("echo", "store", "find", "get", "move")


def is_allowed(context: NodeContext, calling_ae: str, operation: str) -> bool:
    with context.sessions() as session:
        peer = find_peer(session, calling_ae.strip())
        if peer is not None:
            return operation in peer.permission_set
    return operation in context.config.access.unknown_peer_permissions

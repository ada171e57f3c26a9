"""Who may talk to the node and what they may do.

The decision is taken once per association, while it is negotiated: a calling AE title with
no permissions (unknown and the config grants unknown peers nothing, or a peer whose host
check fails) gets A-ASSOCIATE-RJ "calling AE title not recognised"; otherwise the
Verification / Find / Get / Move contexts it may not use are rejected, so its client reports
them as unsupported. Storage contexts stay open because C-GET sends over them; each C-STORE
asks `allows(assoc, "store")`. Peer-table edits (`scp-node ae`) apply to new associations.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from weakref import WeakKeyDictionary

from pynetdicom import evt
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import RequestHandler

from scp_node.context import NodeContext
from scp_node.index.repository import find_peer
from scp_node.negotiation import for_requester

# The operation each non-storage context serves; storage contexts are not listed.
OPERATION_OF_CONTEXT = {
    Verification: "echo",
    PatientRootQueryRetrieveInformationModelFind: "find",
    StudyRootQueryRetrieveInformationModelFind: "find",
    PatientRootQueryRetrieveInformationModelGet: "get",
    StudyRootQueryRetrieveInformationModelGet: "get",
    PatientRootQueryRetrieveInformationModelMove: "move",
    StudyRootQueryRetrieveInformationModelMove: "move",
    StorageCommitmentPushModel: "store",  # a sender may ask whether the node holds what it sent
}
# A-ASSOCIATE-RJ: rejected-permanent, service-user, calling AE title not recognised.
REJECT_UNKNOWN_CALLING_AE = (0x01, 0x01, 0x03)

log = logging.getLogger(__name__)


class AccessControl:
    def __init__(self, context: NodeContext) -> None:
        self._context = context
        self._granted: WeakKeyDictionary[Association, frozenset[str]] = WeakKeyDictionary()

    def admit(self, assoc: Association, calling_ae: str, address: str) -> frozenset[str]:
        """The operations this association may use (empty: refuse it); remembered for `allows`."""
        granted = self._permissions(calling_ae.strip(), address)
        self._granted[assoc] = granted
        return granted

    def allows(self, assoc: Association, operation: str) -> bool:
        return operation in self._granted.get(assoc, frozenset())

    def _permissions(self, calling_ae: str, address: str) -> frozenset[str]:
        with self._context.sessions() as session:
            peer = find_peer(session, calling_ae)
            if peer is None:
                return frozenset(self._context.config.access.unknown_peer_permissions)
            if peer.check_host and address not in _addresses_of(peer.host):
                log.warning("%s connected from %s, not from its host %s", calling_ae, address, peer.host)
                return frozenset()
            return frozenset(peer.permission_set)


def _addresses_of(host: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        log.error("cannot resolve peer host %r", host)
        return set()


class _GatedACSE(ACSE):
    """pynetdicom's acceptor-side ACSE with the access decision in front of negotiation, and
    the node's contexts fitted to the roles the requester asked for."""

    def __init__(self, assoc: Association, access: AccessControl) -> None:
        super().__init__(assoc)
        self._access = access

    def _negotiate_as_acceptor(self) -> None:
        calling_ae = self.requestor.primitive.calling_ae_title
        address = self.assoc.requestor.address
        granted = self._access.admit(self.assoc, calling_ae, address)
        if not granted:
            log.warning(
                "association from %s at %s refused: calling AE title not allowed", calling_ae, address
            )
            self.requestor.ae_title = calling_ae
            self.send_reject(*REJECT_UNKNOWN_CALLING_AE)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        roles = [
            item
            for item in self.requestor.primitive.user_information
            if isinstance(item, SCP_SCU_RoleSelectionNegotiation)
        ]
        self.acceptor.supported_contexts = for_requester(
            _permitted(self.acceptor.supported_contexts, granted), roles
        )
        refused = _refused_services(self.requestor.primitive.presentation_context_definition_list, granted)
        if refused:
            log.warning(
                "association from %s at %s: %s not permitted", calling_ae, address, ", ".join(sorted(refused))
            )
        super()._negotiate_as_acceptor()


def _permitted(contexts: Iterable[PresentationContext], granted: frozenset[str]) -> list[PresentationContext]:
    return [
        cx
        for cx in contexts
        if OPERATION_OF_CONTEXT.get(cx.abstract_syntax) is None
        or OPERATION_OF_CONTEXT[cx.abstract_syntax] in granted
    ]


def _refused_services(requested: Iterable[PresentationContext], granted: frozenset[str]) -> set[str]:
    operations = (OPERATION_OF_CONTEXT.get(cx.abstract_syntax) for cx in requested)
    return {operation for operation in operations if operation and operation not in granted}


def gated_request_handler(access: AccessControl) -> type[RequestHandler]:
    """A pynetdicom request handler whose associations negotiate through `access`."""

    class GatedRequestHandler(RequestHandler):
        def _create_association(self) -> Association:
            assoc = super()._create_association()
            assoc.acse = _GatedACSE(assoc, access)
            return assoc

    return GatedRequestHandler

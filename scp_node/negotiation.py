"""Which transfer syntax the node takes on each presentation context it accepts.

pynetdicom takes, for each proposed context, the first syntax of the node's own list that the
requester also proposed. Received data is best kept as sent, so for contexts the node receives
on, lossless compressed syntaxes come first. On contexts where the requester takes the Storage
SCP role (a C-GET requester, which receives its instances over them) the node is the sender:
there it may only take a syntax it can produce for every instance of the class, whatever
syntax each was stored in, uncompressed first as Orthanc and dcmqrscp answer.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext

from scp_node.imaging.blob import LOSSLESS_ENCAPSULATED
from scp_node.imaging.encapsulation import ENCODABLE, JPEGXLLossless

UNCOMPRESSED = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
]
# DICOM's JPEG XL syntaxes (PS3.5 A.4.11-13), newer than pynetdicom's list: lossless, JPEG
# recompression (exact to a lossy JPEG), lossy.
JPEG_XL_RECOMPRESSION, JPEG_XL = UID("1.2.840.10008.1.2.4.111"), UID("1.2.840.10008.1.2.4.112")
_LOSSLESS = [*sorted(LOSSLESS_ENCAPSULATED), JPEGXLLossless]
# Lossless compressed first: the sender's own encoding is kept and nothing is converted on
# the way in; lossy syntaxes last, so an offer of both never turns lossless data into lossy.
RECEIVED_SYNTAXES = [
    *_LOSSLESS,
    *UNCOMPRESSED,
    *(ts for ts in ALL_TRANSFER_SYNTAXES if ts not in _LOSSLESS and ts not in UNCOMPRESSED),
    JPEG_XL_RECOMPRESSION,
    JPEG_XL,
]
# What every storage SCP takes (PS3.5 10.1: Implicit VR is the default; Explicit nearly so).
UNIVERSAL = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
# What the node can send for any stored instance, in the order it prefers.
SENT_SYNTAXES = [*UNIVERSAL, *ENCODABLE, ExplicitVRBigEndian]
# Taken on a sending context only when the requester offers nothing else: an already-lossy
# instance then goes out as it came, and the others of its class fail (never made lossy).
LOSSY_AS_STORED = [ts for ts in RECEIVED_SYNTAXES if ts not in _LOSSLESS and ts not in UNCOMPRESSED]
# Verification and query/retrieve messages are small: Implicit VR Little Endian first, the
# default syntax every DICOM application must support (PS3.5 10.1).
MESSAGE_SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]


def for_requester(
    supported: Iterable[PresentationContext], roles: Iterable[SCP_SCU_RoleSelectionNegotiation]
) -> list[PresentationContext]:
    """The node's contexts for one association: those whose class the requester asked to act
    as Storage SCP for offer SENT_SYNTAXES, then lossy syntaxes as a last resort."""
    receiving = {str(role.sop_class_uid) for role in roles if role.scp_role}
    return [
        _sending(cx.abstract_syntax, tuple(cx.transfer_syntax), cx.scu_role, cx.scp_role)
        if str(cx.abstract_syntax) in receiving
        else cx
        for cx in supported
    ]


@functools.lru_cache(maxsize=1024)
def _sending(
    abstract_syntax: UID, offered: tuple[UID, ...], scu_role: bool | None, scp_role: bool | None
) -> PresentationContext:
    """The sending variant of one of the node's contexts, built once and shared: negotiation
    only reads it, and building one checks every UID again (about 10 ms of CPU per association
    of a C-GET requester that offers 120 storage classes)."""
    sending = PresentationContext()
    sending.abstract_syntax = abstract_syntax
    sending.transfer_syntax = [ts for ts in (*SENT_SYNTAXES, *LOSSY_AS_STORED) if ts in offered]
    sending.scu_role, sending.scp_role = scu_role, scp_role
    return sending

"""C-FIND: Patient Root and Study Root queries at PATIENT / STUDY / SERIES / IMAGE level.

Only peers with the 'find' permission get a C-FIND context (see scp_node.access). The
matching itself lives in scp_node.index.query; relational queries are answered where the
requester negotiated them (or config query.relational_without_negotiation says to). This
handler maps the outcome to statuses:
an identifier that breaks the model gets 0xA900, a database failure 0xA700, and a C-CANCEL
stops the responses with 0xFE00.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from weakref import WeakKeyDictionary

from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)
from sqlalchemy.exc import SQLAlchemyError

from scp_node.context import NodeContext
from scp_node.handlers import status
from scp_node.index.query import InvalidQuery, Query, matches

log = logging.getLogger(__name__)


FIND_MODELS = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
RELATIONAL = 1  # first byte of the Q/R FIND extended negotiation: relational queries (PS3.4 C.5.1.1)


class RelationalQueries:
    """Which associations negotiated relational queries for which FIND model."""

    def __init__(self, lenient: bool) -> None:
        self._lenient = lenient
        self._negotiated: WeakKeyDictionary[Association, set[str]] = WeakKeyDictionary()

    def on_sop_extended(self, event: Event) -> dict[str, bytes]:
        """Accept relational queries wherever asked; the node supports none of the other
        options (combined date-time, fuzzy names, time zones), so it answers only byte one."""
        accepted = {}
        for sop_class, info in event.app_info.items():
            if sop_class in FIND_MODELS and info and info[0] == RELATIONAL:
                self._negotiated.setdefault(event.assoc, set()).add(str(sop_class))
                accepted[sop_class] = bytes([RELATIONAL])
        return accepted

    def allowed(self, assoc: Association, sop_class: str) -> bool:
        return self._lenient or sop_class in self._negotiated.get(assoc, set())


def handle_find(event: Event, context: NodeContext, relational: RelationalQueries) -> Iterator[Any]:
    requestor = event.assoc.requestor
    sop_class = str(event.request.AffectedSOPClassUID)
    model = "study" if sop_class == StudyRootQueryRetrieveInformationModelFind else "patient"
    try:
        query = Query.parse(model, event.identifier, relational=relational.allowed(event.assoc, sop_class))
        with context.sessions() as session:
            found = 0
            for response in matches(session, query):
                if event.is_cancelled:
                    log.info("C-FIND from %s cancelled after %d matches", requestor.ae_title, found)
                    yield status.CANCEL, None
                    return
                found += 1
                yield status.PENDING, response
    except InvalidQuery as exc:
        log.warning(
            "C-FIND from %s at %s: invalid identifier: %s", requestor.ae_title, requestor.address, exc
        )
        yield status.IDENTIFIER_DOES_NOT_MATCH, None
        return
    except SQLAlchemyError as exc:
        log.error("C-FIND from %s: index query failed: %s", requestor.ae_title, exc)
        yield status.OUT_OF_RESOURCES, None
        return
    log.info("C-FIND %s level from %s: %d matches", query.level, requestor.ae_title, found)

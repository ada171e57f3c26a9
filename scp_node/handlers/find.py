"""C-FIND: Patient Root and Study Root queries at PATIENT / STUDY / SERIES / IMAGE level.

Only peers with the 'find' permission get a C-FIND context (see scp_node.access). The
matching itself lives in scp_node.index.query; this handler maps its outcome to statuses:
an identifier that breaks the model gets 0xA900, a database failure 0xA700, and a C-CANCEL
stops the responses with 0xFE00.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pynetdicom.events import Event
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from sqlalchemy.exc import SQLAlchemyError

from scp_node.context import NodeContext
from scp_node.handlers import status
from scp_node.index.query import InvalidQuery, Query, matches

log = logging.getLogger(__name__)


def handle_find(event: Event, context: NodeContext) -> Iterator[Any]:
    requestor = event.assoc.requestor
    model = (
        "study"
        if event.request.AffectedSOPClassUID == StudyRootQueryRetrieveInformationModelFind
        else "patient"
    )
    try:
        query = Query.parse(model, event.identifier)
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

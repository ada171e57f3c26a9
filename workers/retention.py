"""Dropping originals that a lossy copy replaced, once compression.lossy stops keeping them."""

from __future__ import annotations

import logging
from datetime import datetime

from scp_node.context import NodeContext
from scp_node.index.models import utcnow
from scp_node.index.states import drop_expired_originals
from scp_node.storage.durable import remove

log = logging.getLogger(__name__)


def purge_expired_originals(context: NodeContext, now: datetime | None = None) -> int:
    """Delete the kept originals past their time; rows stay, as DROPPED, to record what each
    lossy copy replaced. Files go after the commit: a crash leaves a stray file, never a row
    pointing at nothing."""
    with context.sessions() as session:
        dropped, doomed = drop_expired_originals(session, now or utcnow())
        session.commit()
    remove(doomed)
    if dropped:
        log.info("dropped %d originals replaced by lossy copies, past their keeping time", dropped)
    return dropped

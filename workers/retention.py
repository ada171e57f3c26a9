"""Dropping originals that a lossy copy replaced, once compression.lossy stops keeping them."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from scp_node.context import NodeContext
from scp_node.index.models import Instance, StorageState, utcnow
from scp_node.index.repository import unreferenced
from scp_node.storage.durable import remove

log = logging.getLogger(__name__)


def purge_expired_originals(context: NodeContext, now: datetime | None = None) -> int:
    """Delete the kept originals past their time; rows stay, as DROPPED, to record what each
    lossy copy replaced. Files go after the commit: a crash leaves a stray file, never a row
    pointing at nothing."""
    with context.sessions() as session:
        expired = session.scalars(
            select(Instance).where(
                Instance.state == StorageState.REPLACED, Instance.original_expires_at <= (now or utcnow())
            )
        ).all()
        paths = [instance.blob_path for instance in expired]
        for instance in expired:
            instance.state = StorageState.DROPPED
            instance.blob_path = instance.blob_sha256 = instance.stored_size = None
        doomed = unreferenced(session, paths)
        session.commit()
    remove(doomed)
    if expired:
        log.info("dropped %d originals replaced by lossy copies, past their keeping time", len(expired))
    return len(expired)

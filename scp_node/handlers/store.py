"""C-STORE: durable before acknowledged.

pynetdicom writes the incoming data set to a file under the spool's incoming/ folder as it
arrives (chunked receive; nothing is decoded in memory). Here the file is validated, fsynced
and renamed into the spool, the index row is committed, and only then is Success returned.
The compress job is enqueued after the commit; if that is lost the node re-enqueues at start.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pynetdicom.events import Event
from sqlalchemy.exc import SQLAlchemyError

from scp_node.access import is_allowed
from scp_node.context import NodeContext
from scp_node.handlers import status
from scp_node.index.models import StorageState
from scp_node.index.repository import find_instance, record_received
from scp_node.storage.spool import SpooledInstance
from workers.dicom_layout import InvalidDicomFile
from workers.queue import JobQueue

log = logging.getLogger(__name__)


def handle_store(event: Event, context: NodeContext, queue: JobQueue) -> int:
    requestor = event.assoc.requestor
    sop_uid = str(event.request.AffectedSOPInstanceUID)
    received = Path(event.dataset_path)
    if not is_allowed(context, requestor.ae_title, "store"):
        log.warning("C-STORE of %s refused for %s at %s", sop_uid, requestor.ae_title, requestor.address)
        received.unlink(missing_ok=True)
        return status.NOT_AUTHORIZED
    try:
        spooled = context.spool.accept(received, sop_uid)
    except InvalidDicomFile as exc:
        log.warning("C-STORE of %s from %s rejected: %s", sop_uid, requestor.ae_title, exc)
        received.unlink(missing_ok=True)
        return status.CANNOT_UNDERSTAND
    except OSError as exc:
        log.error("C-STORE of %s from %s: cannot spool: %s", sop_uid, requestor.ae_title, exc)
        received.unlink(missing_ok=True)
        return status.OUT_OF_RESOURCES
    mismatch = _mismatch(spooled, sop_uid, str(event.request.AffectedSOPClassUID))
    if mismatch:
        log.warning("C-STORE of %s from %s rejected: %s", sop_uid, requestor.ae_title, mismatch)
        spooled.path.unlink(missing_ok=True)
        return status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    try:
        result = _index(context, spooled, sop_uid, requestor.ae_title)
    except SQLAlchemyError as exc:
        log.error("C-STORE of %s: index write failed: %s", sop_uid, exc)
        spooled.path.unlink(missing_ok=True)
        return status.OUT_OF_RESOURCES
    if result == status.SUCCESS:
        queue.enqueue_compress(sop_uid)
    return result


def _mismatch(spooled: SpooledInstance, sop_uid: str, sop_class: str) -> str | None:
    ds = spooled.layout.dataset
    if str(ds.get("SOPInstanceUID", "")) != sop_uid:
        return f"data set SOP Instance UID {ds.get('SOPInstanceUID')!r} differs from the request"
    if str(ds.get("SOPClassUID", "")) != sop_class:
        return f"data set SOP Class UID {ds.get('SOPClassUID')!r} differs from the request"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(keyword):
            return f"{keyword} missing"
    return None


def _index(context: NodeContext, spooled: SpooledInstance, sop_uid: str, calling_ae: str) -> int:
    """Commit the row per the duplicate policy; old files are removed only after the commit."""
    policy = context.config.storage.duplicate_policy
    with context.sessions() as session:
        existing = find_instance(session, sop_uid)
        obsolete: list[str | None] = []
        if existing is not None:
            if existing.dataset_sha256 == spooled.dataset_sha256 or policy == "keep":
                if str(spooled.path) != existing.spool_path:  # same bytes land on the same name
                    spooled.path.unlink(missing_ok=True)
                log.info("C-STORE of %s: already stored, kept the existing copy", sop_uid)
                return status.SUCCESS
            if policy == "reject":
                spooled.path.unlink(missing_ok=True)
                log.warning("C-STORE of %s from %s: duplicate rejected", sop_uid, calling_ae)
                return status.DUPLICATE_INSTANCE
            obsolete = [existing.spool_path, existing.blob_path]
        record_received(
            session,
            spooled.layout.dataset,
            transfer_syntax_uid=str(spooled.layout.transfer_syntax),
            calling_ae=calling_ae,
            spool_path=str(spooled.path),
            size=spooled.size,
            dataset_sha256=spooled.dataset_sha256,
            existing=existing,
        ).state = StorageState.QUEUED
        session.commit()
    for path in obsolete:
        if path and path != str(spooled.path):
            Path(path).unlink(missing_ok=True)
    return status.SUCCESS

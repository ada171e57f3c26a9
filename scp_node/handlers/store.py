"""C-STORE: durable before acknowledged.

pynetdicom writes the incoming data set to a file under the spool's incoming/ folder as it
arrives (chunked receive; nothing is decoded in memory). Here the file is validated, fsynced
and renamed into the spool, the index row is committed, and only then is Success returned.
The compress job is enqueued after the commit; if that is lost the node re-enqueues at start.

Two stores of the same SOP Instance UID may race (two associations, or a store and a compress
job). The unique UID index and the instance row's version column make the later commit fail
instead of overwriting; the store then re-reads the index and applies the duplicate policy
again, so exactly one consistent copy remains.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pynetdicom.events import Event
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm.exc import StaleDataError

from scp_node.access import AccessControl
from scp_node.context import NodeContext
from scp_node.handlers import status
from scp_node.imaging.dicom_layout import InvalidDicomFile
from scp_node.index.models import Instance
from scp_node.index.repository import find_instance, record_received, unreferenced
from scp_node.storage.durable import remove
from scp_node.storage.spool import SpooledInstance
from workers.queue import JobQueue

log = logging.getLogger(__name__)


# A conflicting commit is retried this often before the store fails with Out of Resources.
CONFLICT_RETRIES = 5


def handle_store(event: Event, context: NodeContext, queue: JobQueue, access: AccessControl) -> int:
    requestor = event.assoc.requestor
    sop_uid = str(event.request.AffectedSOPInstanceUID)
    received = Path(event.dataset_path)
    if not access.allows(event.assoc, "store"):
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
        result = _index_retrying(context, spooled, sop_uid, requestor.ae_title)
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


def _index_retrying(context: NodeContext, spooled: SpooledInstance, sop_uid: str, calling_ae: str) -> int:
    for attempt in range(CONFLICT_RETRIES):
        try:
            return _index(context, spooled, sop_uid, calling_ae)
        except (IntegrityError, StaleDataError) as exc:
            if attempt == CONFLICT_RETRIES - 1:
                raise
            log.info("C-STORE of %s: concurrent update (%s), retrying", sop_uid, type(exc).__name__)
    raise AssertionError("unreachable")


def _index(context: NodeContext, spooled: SpooledInstance, sop_uid: str, calling_ae: str) -> int:
    """Commit the row per the duplicate policy; the files it stops naming go after the commit."""
    with context.sessions() as session:
        existing = find_instance(session, sop_uid)
        previous: list[str | None] = []
        if existing is not None:
            refusal = _duplicate_refusal(context, existing, spooled, calling_ae)
            if refusal is not None:
                spooled.path.unlink(missing_ok=True)  # its name is this store's own
                return refusal
            previous = [existing.spool_path, existing.blob_path]
        record_received(
            session,
            spooled.layout.dataset,
            transfer_syntax_uid=str(spooled.layout.transfer_syntax),
            calling_ae=calling_ae,
            spool_path=str(spooled.path),
            size=spooled.size,
            dataset_sha256=spooled.dataset_sha256,
            existing=existing,
        )
        obsolete = unreferenced(session, previous)
        session.commit()
    remove(obsolete)
    return status.SUCCESS


def _duplicate_refusal(
    context: NodeContext, existing: Instance, spooled: SpooledInstance, calling_ae: str
) -> int | None:
    """The status that keeps the stored copy, or None when the new one replaces it."""
    policy = context.config.storage.duplicate_policy
    uid = existing.sop_instance_uid
    if existing.dataset_sha256 == spooled.dataset_sha256:
        log.info("C-STORE of %s from %s: identical copy already stored", uid, calling_ae)
        return status.SUCCESS
    if policy == "keep":
        log.info("C-STORE of %s from %s: different copy, kept the stored one", uid, calling_ae)
        return status.SUCCESS
    if policy == "reject" or (policy == "overwrite_same_sender" and existing.calling_ae != calling_ae):
        log.warning(
            "C-STORE of %s from %s: duplicate with different content rejected (stored from %s)",
            uid,
            calling_ae,
            existing.calling_ae,
        )
        return status.DUPLICATE_INSTANCE
    log.info("C-STORE of %s from %s: replacing the stored copy", uid, calling_ae)
    return None

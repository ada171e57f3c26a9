"""C-STORE: durable before acknowledged.

pynetdicom writes the incoming data set to a file under the spool's incoming/ folder as it
arrives (chunked receive; nothing is decoded in memory). Here the file is validated, fsynced
and renamed into the spool, the index row is committed, and only then is Success returned.
The compress job is enqueued after the commit; if that is lost the node re-enqueues at start.

Two stores of the same SOP Instance UID may race (two associations, or a store and a compress
job). The unique UID index and the instance row's version column make the later commit fail
instead of overwriting; the store then re-reads the index and applies the duplicate policy
again, so exactly one consistent copy remains.

Replacing a slice that series-mode blobs were coded against re-codes those blobs without it
first, in the same commit (`workers.jobs.recode_dependants`): no stored instance ever names a
reference that is gone.

STOW-RS (scp_node/web/stow.py) stores through the same `ingest` step, so both services give
the same guarantees and apply the same duplicate policy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pynetdicom.events import Event
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm.exc import StaleDataError

from scp_node.access import AccessControl
from scp_node.context import NodeContext
from scp_node.handlers import status
from scp_node.imaging.dicom_layout import InvalidDicomFile
from scp_node.imaging.errors import ImagingError
from scp_node.index.models import Instance
from scp_node.index.repository import find_instance, record_received, unreferenced
from scp_node.storage.durable import remove
from scp_node.storage.spool import SpooledInstance
from workers.jobs import CompressionFailed, recode_dependants
from workers.queue import JobQueue

log = logging.getLogger(__name__)


# A conflicting commit is retried this often before the store fails with Out of Resources.
CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class Ingested:
    """What became of one received file: its DIMSE status and, unless Success, why (STOW-RS
    puts both in its response; C-STORE returns the status and logs the reason)."""

    status: int
    reason: str = ""


def handle_store(event: Event, context: NodeContext, queue: JobQueue, access: AccessControl) -> int:
    requestor = event.assoc.requestor
    sop_uid = str(event.request.AffectedSOPInstanceUID)
    received = Path(event.dataset_path)
    if not access.allows(event.assoc, "store"):
        log.warning("C-STORE of %s refused for %s at %s", sop_uid, requestor.ae_title, requestor.address)
        received.unlink(missing_ok=True)
        return status.NOT_AUTHORIZED
    return ingest(
        context,
        queue,
        received,
        sop_uid=sop_uid,
        sop_class=str(event.request.AffectedSOPClassUID),
        sender=requestor.ae_title,
    ).status


def ingest(
    context: NodeContext,
    queue: JobQueue,
    received: Path,
    *,
    sop_uid: str,
    sop_class: str,
    sender: str,
    service: str = "C-STORE",
) -> Ingested:
    """Make a received Part-10 file under the spool's incoming/ durable and indexed, then enqueue
    its compress job: the one ingest step of C-STORE and STOW-RS, so both keep the same contract
    (durable and committed before Success; the duplicate policy; nothing kept on failure).

    `sender` is recorded as the calling AE (duplicate policy, codec rules); `service` names the
    request in log lines. The received file is consumed: spooled or deleted.
    """
    try:
        spooled = context.spool.accept(received, sop_uid)
    except InvalidDicomFile as exc:
        log.warning("%s of %s from %s rejected: %s", service, sop_uid, sender, exc)
        received.unlink(missing_ok=True)
        return Ingested(status.CANNOT_UNDERSTAND, str(exc))
    except OSError as exc:
        log.error("%s of %s from %s: cannot spool: %s", service, sop_uid, sender, exc)
        received.unlink(missing_ok=True)
        return Ingested(status.OUT_OF_RESOURCES, "cannot write the file")
    mismatch = _mismatch(spooled, sop_uid, sop_class)
    if mismatch:
        log.warning("%s of %s from %s rejected: %s", service, sop_uid, sender, mismatch)
        spooled.path.unlink(missing_ok=True)
        return Ingested(status.DATASET_DOES_NOT_MATCH_SOP_CLASS, mismatch)
    try:
        result = _index_retrying(context, spooled, sop_uid, sender, service)
    except SQLAlchemyError as exc:
        log.error("%s of %s: index write failed: %s", service, sop_uid, exc)
        spooled.path.unlink(missing_ok=True)
        return Ingested(status.OUT_OF_RESOURCES, "index write failed")
    except (ImagingError, CompressionFailed, OSError) as exc:
        log.error(
            "%s of %s: the slices coded against the stored copy cannot be re-coded: %s", service, sop_uid, exc
        )
        spooled.path.unlink(missing_ok=True)
        return Ingested(status.OUT_OF_RESOURCES, "cannot re-code the slices coded against the stored copy")
    if result.status == status.SUCCESS:
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


def _index_retrying(
    context: NodeContext, spooled: SpooledInstance, sop_uid: str, sender: str, service: str
) -> Ingested:
    for attempt in range(CONFLICT_RETRIES):
        try:
            return _index(context, spooled, sop_uid, sender, service)
        except (IntegrityError, StaleDataError) as exc:
            if attempt == CONFLICT_RETRIES - 1:
                raise
            log.info("%s of %s: concurrent update (%s), retrying", service, sop_uid, type(exc).__name__)
    raise AssertionError("unreachable")


def _index(
    context: NodeContext, spooled: SpooledInstance, sop_uid: str, sender: str, service: str
) -> Ingested:
    """Commit the row per the duplicate policy; the files it stops naming go after the commit.
    Blobs coded against the copy being replaced are re-coded without it in the same commit."""
    recoded: list[Path] = []
    try:
        with context.sessions() as session:
            existing = find_instance(session, sop_uid)
            previous: list[str | None] = []
            if existing is not None:
                refusal = _duplicate_refusal(context, existing, spooled, sender, service)
                if refusal is not None:
                    spooled.path.unlink(missing_ok=True)  # its name is this store's own
                    return refusal
                obsolete_blobs, recoded = recode_dependants(context, session, existing)
                previous = [existing.spool_path, existing.blob_path, *obsolete_blobs]
            record_received(
                session,
                spooled.layout.dataset,
                transfer_syntax_uid=str(spooled.layout.transfer_syntax),
                calling_ae=sender,
                spool_path=str(spooled.path),
                size=spooled.size,
                dataset_sha256=spooled.dataset_sha256,
                existing=existing,
            )
            obsolete = unreferenced(session, previous)
            session.commit()
    finally:
        context.discard_unreferenced(recoded)  # kept where the commit named them
    remove(obsolete)
    if not spooled.layout.transfer_syntax.is_compressed:  # what retrieval will send as it is
        context.recent_files.keep_received(sop_uid, spooled.as_file())
    return Ingested(status.SUCCESS)


def _duplicate_refusal(
    context: NodeContext, existing: Instance, spooled: SpooledInstance, sender: str, service: str
) -> Ingested | None:
    """The outcome that keeps the stored copy, or None when the new one replaces it."""
    policy = context.config.storage.duplicate_policy
    uid = existing.sop_instance_uid
    if existing.dataset_sha256 == spooled.dataset_sha256:
        log.info("%s of %s from %s: identical copy already stored", service, uid, sender)
        return Ingested(status.SUCCESS)
    if policy == "keep":
        log.info("%s of %s from %s: different copy, kept the stored one", service, uid, sender)
        return Ingested(status.SUCCESS)
    if policy == "reject" or (policy == "overwrite_same_sender" and existing.calling_ae != sender):
        log.warning(
            "%s of %s from %s: duplicate with different content rejected (stored from %s)",
            service,
            uid,
            sender,
            existing.calling_ae,
        )
        return Ingested(status.DUPLICATE_INSTANCE, "another instance with this SOP Instance UID is stored")
    log.info("%s of %s from %s: replacing the stored copy", service, uid, sender)
    return None

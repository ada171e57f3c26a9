"""Every change of an instance's storage state after it was received, beside the states'
definition (`models.StorageState`; `repository.record_received` writes the first one).

The compress job and the retention of originals call these inside their own transactions and
commit them. Each change is made only to the version of the row the caller worked on (the
spool file it named then): a store that replaced the row meanwhile wins, and the caller learns
it from `Superseded` here or from the row version's StaleDataError at commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from scp_node.index.errors import IndexingError
from scp_node.index.models import Instance, StorageState
from scp_node.index.repository import find_instance, unreferenced
from scp_node.index.slices import claim_reference

# States in which a compress job has nothing left to do.
DONE = (StorageState.COMPRESSED, StorageState.REPLACED, StorageState.DROPPED)
# States in which the node holds the instance it was sent, for good (a replaced original is
# kept only until its lossy copy's policy drops it: a modality must not count on it).
HELD = (StorageState.RECEIVED, StorageState.QUEUED, StorageState.COMPRESSED, StorageState.FAILED)


class Superseded(IndexingError):
    """A newer copy of the instance was stored while the caller worked on the old one."""


@dataclass(frozen=True)
class StoredBlob:
    """A verified blob, written, that a row is to name."""

    path: Path
    sha256: str
    codec: str
    fell_back: bool  # the chosen codec failed; a fallback holds the pixels
    pixel_bytes_in: int
    pixel_bytes_out: int
    size: int
    # Series mode: the slice the blob was coded against, and that slice's blob then.
    reference_uid: str | None = None
    reference_blob_sha256: str | None = None


@dataclass(frozen=True)
class DerivedCopy:
    """A lossy copy made from an original: a new instance of its own, in the original's series."""

    sop_instance_uid: str
    transfer_syntax: str
    size: int
    dataset_sha256: str
    blob: StoredBlob


def version_of(session: Session, uid: str, spool_path: str) -> Instance:
    """The row, if it is still the version whose spool file is `spool_path`."""
    instance = find_instance(session, uid)
    if instance is None or instance.spool_path != spool_path:
        raise Superseded
    return instance


def mark_compressed(session: Session, uid: str, spool_path: str, blob: StoredBlob) -> None:
    """The blob holds the instance from now on; the spool file is no longer named.
    ReferenceChanged where the blob was coded against a slice that changed meanwhile."""
    instance = version_of(session, uid, spool_path)
    instance.state = StorageState.COMPRESSED
    _name_blob(session, instance, blob)


def recode_dependant(session: Session, dependant: Instance, blob: StoredBlob) -> None:
    """A blob coded against a slice about to change is replaced by one coded without it
    (same pixels, verified)."""
    _name_blob(session, dependant, blob)


def replace_with_copy(
    session: Session,
    uid: str,
    spool_path: str,
    copy: DerivedCopy,
    original: StoredBlob | None,
    expires_at: datetime | None,
) -> str | None:
    """The copy is served instead of the original, which is kept in `original` until
    `expires_at` (None: forever), or dropped at once when `original` is None. Returns the
    blob the copy's row named before (the same copy made again from a re-sent original)."""
    instance = version_of(session, uid, spool_path)
    previous_copy_blob = _record_copy(session, instance, copy)
    instance.replaced_by_uid = copy.sop_instance_uid
    if original is None:
        instance.state = StorageState.DROPPED
        instance.spool_path = instance.error = None
    else:
        instance.state = StorageState.REPLACED
        _name_blob(session, instance, original)
        instance.original_expires_at = expires_at
    return previous_copy_blob


def mark_failed(session: Session, uid: str, spool_path: str, error: str) -> bool:
    """Compression gave up; the spool file still serves the instance and `error` says why.
    False where the row is another version now (its own job is coming) or already done."""
    instance = find_instance(session, uid)
    if instance is None or instance.spool_path != spool_path or instance.state in DONE:
        return False
    instance.state = StorageState.FAILED
    instance.error = error
    return True


def drop_expired_originals(session: Session, now: datetime) -> tuple[int, list[str]]:
    """Originals replaced by lossy copies and past their keeping time become DROPPED (the
    rows stay, to record what each copy replaced). Returns how many, and the blob files no
    row names any more, to delete after the commit."""
    expired = session.scalars(
        select(Instance).where(Instance.state == StorageState.REPLACED, Instance.original_expires_at <= now)
    ).all()
    paths = [instance.blob_path for instance in expired]
    for instance in expired:
        instance.state = StorageState.DROPPED
        instance.blob_path = instance.blob_sha256 = instance.stored_size = None
    return len(expired), unreferenced(session, paths)


def _name_blob(session: Session, instance: Instance, blob: StoredBlob) -> None:
    instance.reference_uid, instance.reference_depth = None, 0
    if blob.reference_uid is not None:
        assert blob.reference_blob_sha256 is not None, "a reference is claimed by its blob"
        depth = claim_reference(session, blob.reference_uid, blob.reference_blob_sha256)
        instance.reference_uid, instance.reference_depth = blob.reference_uid, depth + 1
    instance.codec = blob.codec
    instance.codec_fallback = blob.fell_back
    instance.pixel_bytes_in = blob.pixel_bytes_in
    instance.pixel_bytes_out = blob.pixel_bytes_out
    instance.stored_size = blob.size
    instance.blob_path = str(blob.path)
    instance.blob_sha256 = blob.sha256
    instance.spool_path = None
    instance.error = None


def _record_copy(session: Session, original: Instance, copy: DerivedCopy) -> str | None:
    """The copy's row, new or made again (its UID comes from the original's and the codec's)."""
    row = find_instance(session, copy.sop_instance_uid) or Instance(sop_instance_uid=copy.sop_instance_uid)
    previous_blob = row.blob_path
    row.sop_class_uid = original.sop_class_uid
    row.series = original.series
    row.instance_number = original.instance_number
    row.acquisition_datetime = original.acquisition_datetime
    row.calling_ae = original.calling_ae
    row.transfer_syntax_uid = copy.transfer_syntax
    row.state = StorageState.COMPRESSED
    row.received_size = copy.size
    row.dataset_sha256 = copy.dataset_sha256
    row.derived_from_uid = original.sop_instance_uid
    row.replaced_by_uid = row.original_expires_at = None
    _name_blob(session, row, copy.blob)
    session.add(row)
    return previous_blob

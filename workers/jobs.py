"""The compress job: spool file -> codec -> verify -> blob -> index, then drop the spool file.

Series mode: where the chosen codec has one (`series_depth`), a CT / MR / PT slice is coded
against the nearest stored slice of its series (`index.slices` says which may serve, and keeps
chains short); the blob names it, and its row claims it at commit. Before a slice that others
were coded against is replaced, `recode_dependants` codes those again without it.

Where a rule names a lossy codec, the job stores a lossy copy under a new SOP Instance UID
(`workers.lossy_copy`) that replaces the original in queries and retrievals; the original is
kept losslessly until compression.lossy says to drop it, or dropped at once.

A job is the context of the process that runs it plus a SOP Instance UID: the UID is all a
queue carries (RQ pickles it), the context is handed over by whoever runs the job (the
in-process queue's threads, or `workers.rq_worker.NodeWorker`). A job is idempotent: it
re-reads the index and skips work already done; a job that loses a race to another one for
the same row leaves the winner's files alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from scp_node.context import NodeContext, timed_job
from scp_node.imaging.blob import EncodedInstance, ReferenceSlice, decode_instance, encode_instance
from scp_node.imaging.codecs import CodecUnavailable, SiteCodecs
from scp_node.imaging.errors import ImagingError
from scp_node.index import states
from scp_node.index.models import Instance, utcnow
from scp_node.index.repository import find_instance
from scp_node.index.slices import ReferenceChanged, dependants_of, nearest_reference
from scp_node.index.states import (
    DONE,
    DerivedCopy,
    StoredBlob,
    Superseded,
    mark_compressed,
    recode_dependant,
    replace_with_copy,
)
from workers.lossy_copy import LossyCopy, encode_lossy_copy
from workers.policy import CodecChoice, choose_codec, codec_for, default_choice, fallback_chain, rivals

log = logging.getLogger(__name__)


@timed_job
def compress_instance(context: NodeContext, sop_instance_uid: str) -> str:
    """Returns the codec that now holds the instance (RQ keeps it as the job result).

    On failure the instance is marked failed (it stays served from the spool) and the
    exception propagates so RQ records the job as failed too.
    """
    with context.sessions() as session:
        instance = find_instance(session, sop_instance_uid)
        if instance is None or instance.state in DONE or instance.spool_path is None:
            return instance.codec or "gone" if instance else "gone"
        work = _Work(sop_instance_uid, instance.spool_path, instance.series.modality, instance.calling_ae)
    try:
        return _compress(context, work)
    except Exception as exc:
        log.exception("compress job for %s failed", sop_instance_uid)
        mark_failed(context, work, f"{type(exc).__name__}: {exc}")
        raise


@dataclass(frozen=True)
class _Work:
    """The version of the instance a job compresses: the spool file its row named when the job
    began. Another store, or another job for the same row, may change the row meanwhile."""

    uid: str
    spool_path: str
    modality: str
    calling_ae: str


def _compress(context: NodeContext, work: _Work, series: bool = True) -> str:
    try:
        data = Path(work.spool_path).read_bytes()
    except FileNotFoundError:
        if _superseded(context, work):
            return "superseded"
        raise
    codecs = context.codecs
    choice = choose_codec(context.config.compression, modality=work.modality, calling_ae=work.calling_ae)
    if _is_lossy(codecs, choice):
        copy = _lossy_copy(codecs, data, choice, work.uid)
        if copy is not None:
            return _replace_with_copy(context, work, data, copy)
        choice = default_choice(context.config.compression)
    reference = _series_reference(context, work.uid, choice) if series else None
    encoded, fell_back = encode_verified(codecs, data, choice, work.uid, reference and reference.slice)
    blob = _stored(context, work.uid, encoded, fell_back, reference)
    try:
        with context.sessions() as session:
            mark_compressed(session, work.uid, work.spool_path, blob)
            session.commit()
    except ReferenceChanged as exc:
        log.info("%s: %s while coding against it; coding it alone", work.uid, exc)
        context.discard_unreferenced([blob.path])
        return _compress(context, work, series=False)
    except (Superseded, StaleDataError):
        log.info("instance %s changed while compressing; leaving it to its new job", work.uid)
        return "superseded"
    finally:
        # Whatever happened, keep exactly the files a committed row names: the blob when this
        # job won, the spool file when it did not (or its row's newer one).
        context.discard_unreferenced([blob.path, work.spool_path])
    if _series_depth(codecs, choice):
        # The next slice of the series will be coded against this one: its file is at hand.
        context.recent_files.keep_rebuilt(work.uid, blob.sha256, encoded.rebuilt)
    _log_stored(work.uid, encoded)
    return encoded.codec


def _log_stored(uid: str, encoded: EncodedInstance) -> None:
    if encoded.mode == "coded":
        log.info(
            "compressed %s with %s: pixels %d -> %d bytes",
            uid,
            encoded.codec,
            encoded.pixel_bytes_in,
            encoded.pixel_bytes_out,
        )
    else:
        log.info("stored %s as received (%s pixel data is not re-encoded)", uid, encoded.mode)


def _superseded(context: NodeContext, work: _Work) -> bool:
    with context.sessions() as session:
        try:
            states.version_of(session, work.uid, work.spool_path)
        except Superseded:
            return True
        return False


def _stored(
    context: NodeContext,
    uid: str,
    encoded: EncodedInstance,
    fell_back: bool,
    reference: SeriesReference | None = None,
) -> StoredBlob:
    """Write the blob; the file is this job's until a committed row names it."""
    path, sha256 = context.blobs.put(uid, encoded.blob)
    used = reference is not None and encoded.reference_uid == reference.slice.sop_instance_uid
    return StoredBlob(
        path=path,
        sha256=sha256,
        codec=encoded.codec,
        fell_back=fell_back,
        pixel_bytes_in=encoded.pixel_bytes_in,
        pixel_bytes_out=encoded.pixel_bytes_out,
        size=len(encoded.blob),
        reference_uid=reference.slice.sop_instance_uid if used and reference else None,
        reference_blob_sha256=reference.blob_sha256 if used and reference else None,
    )


@dataclass(frozen=True)
class SeriesReference:
    """The stored slice a blob may be coded against, as of the blob it was read from."""

    slice: ReferenceSlice
    blob_sha256: str


def _series_depth(codecs: SiteCodecs, choice: CodecChoice) -> int:
    """The chosen codec's chain bound in series mode; 0 where it codes every image alone."""
    try:
        codec = codec_for(codecs, choice)
    except CodecUnavailable:
        return 0
    return codec.series_depth if codec is not None else 0


def _series_reference(context: NodeContext, uid: str, choice: CodecChoice) -> SeriesReference | None:
    depth = _series_depth(context.codecs, choice)
    if depth == 0:
        return None
    with context.sessions() as session:
        instance = find_instance(session, uid)
        reference = nearest_reference(session, instance, depth) if instance else None
        if reference is None:
            return None
        reference_uid, blob_sha256 = reference.sop_instance_uid, reference.blob_sha256
    try:
        data = context.instance_file(reference_uid)
    except (ImagingError, OSError) as exc:  # replaced meanwhile, say: code the slice alone
        log.info("%s: reference slice %s unreadable (%s); coding it alone", uid, reference_uid, exc)
        return None
    assert blob_sha256 is not None, "a COMPRESSED row names its blob"
    return SeriesReference(ReferenceSlice(reference_uid, data), blob_sha256)


def recode_dependants(
    context: NodeContext, session: Session, reference: Instance
) -> tuple[list[str], list[Path]]:
    """Before `reference` is replaced: every blob coded against it is coded again without it,
    from its file rebuilt while the reference is still the slice it was coded against; the
    rows are updated in `session` (the caller's transaction, which replaces the reference).

    Returns the old blobs no row will name after the commit, and the new blobs written (the
    caller discards those if its transaction fails). ImagingError / CompressionFailed where a
    dependant cannot be rebuilt or re-coded: the reference must then stay as it is."""
    obsolete: list[str] = []
    written: list[Path] = []
    for dependant in dependants_of(session, reference.sop_instance_uid):
        assert dependant.blob_path is not None, "a dependant is named by its blob"
        data = decode_instance(
            Path(dependant.blob_path).read_bytes(), context.codecs, context.instance_file
        ).data
        choice = choose_codec(
            context.config.compression, modality=dependant.series.modality, calling_ae=dependant.calling_ae
        )
        encoded, fell_back = encode_verified(context.codecs, data, choice, dependant.sop_instance_uid)
        blob = _stored(context, dependant.sop_instance_uid, encoded, fell_back)
        written.append(blob.path)
        obsolete.append(dependant.blob_path)
        recode_dependant(session, dependant, blob)
        log.info(
            "%s re-coded without reference slice %s, which is being replaced",
            dependant.sop_instance_uid,
            reference.sop_instance_uid,
        )
    return obsolete, written


def _is_lossy(codecs: SiteCodecs, choice: CodecChoice) -> bool:
    try:
        codec = codec_for(codecs, choice)
    except CodecUnavailable:
        return False  # the lossless path falls back from it, and says so
    return codec is not None and not codec.lossless


def _lossy_copy(codecs: SiteCodecs, data: bytes, choice: CodecChoice, uid: str) -> LossyCopy | None:
    """The verified copy, or None where this instance cannot have one (then it is stored
    losslessly: nothing becomes lossy by accident)."""
    try:
        return encode_lossy_copy(data, codec_for(codecs, choice))
    except ImagingError as exc:
        log.warning("no lossy %s copy of %s (%s): storing it losslessly", choice.name, uid, exc)
        return None


def _replace_with_copy(context: NodeContext, work: _Work, data: bytes, copy: LossyCopy) -> str:
    settings = context.config.compression
    uid = work.uid
    original = None
    if settings.lossy.keep_original:
        encoded, fell_back = encode_verified(context.codecs, data, default_choice(settings), uid)
        original = _stored(context, uid, encoded, fell_back)
    derived = DerivedCopy(
        sop_instance_uid=copy.sop_instance_uid,
        transfer_syntax=copy.transfer_syntax,
        size=copy.size,
        dataset_sha256=copy.dataset_sha256,
        blob=_stored(context, copy.sop_instance_uid, copy.encoded, fell_back=False),
    )
    touched = [work.spool_path, derived.blob.path, *([original.path] if original else [])]
    days = settings.lossy.keep_original_days
    expires_at = None if days is None else utcnow() + timedelta(days=days)
    try:
        with context.sessions() as session:
            touched.append(replace_with_copy(session, uid, work.spool_path, derived, original, expires_at))
            session.commit()
    except (Superseded, StaleDataError):
        log.info("instance %s changed while compressing; leaving it to its new job", uid)
        return "superseded"
    finally:
        # Keep the files committed rows name: the new copy and original when this job won
        # (the copy's previous blob goes), the spool file when it lost.
        context.discard_unreferenced(touched)
    log.info(
        "stored %s as lossy copy %s (%s, pixels %d -> %d bytes); original %s",
        uid,
        copy.sop_instance_uid,
        copy.encoded.codec,
        copy.encoded.pixel_bytes_in,
        copy.encoded.pixel_bytes_out,
        "dropped" if original is None else f"kept with {original.codec}",
    )
    return copy.encoded.codec


def encode_verified(
    codecs: SiteCodecs, data: bytes, choice: CodecChoice, uid: str, reference: ReferenceSlice | None = None
) -> tuple[EncodedInstance, bool]:
    """Try the chosen codec, then the fallbacks; a fallback is logged and flagged in the index."""
    failures = []
    for attempt in fallback_chain(choice):
        try:
            encoded = encode_smallest(codecs, data, attempt, uid, reference)
        except ImagingError as exc:  # data the codec refuses: the next one may manage
            failures.append(f"{attempt.name}: {exc}")
            log.warning("codec %s failed on %s: %s", attempt.name, uid, exc)
            continue
        return encoded, attempt != choice
    raise CompressionFailed(f"no codec could store {uid}: {'; '.join(failures)}")


class CompressionFailed(Exception):
    """Not even storing the pixel data as received worked (the file does not parse as it
    did at ingest); the instance stays served from its spool file, marked failed."""


def encode_smallest(
    codecs: SiteCodecs, data: bytes, choice: CodecChoice, uid: str, reference: ReferenceSlice | None = None
) -> EncodedInstance:
    """The chosen codec's verified blob (against `reference` where the codec has a series
    mode), or a rival's where that is smaller for this image."""
    codec = codec_for(codecs, choice)
    best = encode_instance(data, codec, reference=reference)
    if codec is None or best.mode != "coded":
        return best
    for rival in rivals(codec):
        try:
            candidate = encode_instance(data, codec_for(codecs, rival))
        except ImagingError as exc:
            log.warning("rival codec %s failed on %s: %s", rival.name, uid, exc)
            continue
        if len(candidate.blob) < len(best.blob):
            best = candidate
    if best.codec != choice.name:
        log.info("%s: %s codes smaller than %s", uid, best.codec, choice.name)
    return best


def mark_failed(context: NodeContext, work: _Work, error: str) -> None:
    """The instance stays retrievable from its spool file; `error` tells the admin why. Only
    the version the job worked on is marked: a newer store has its own job coming."""
    with context.sessions() as session:
        if states.mark_failed(session, work.uid, work.spool_path, error):
            session.commit()

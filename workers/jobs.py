"""The compress job: spool file -> codec -> verify -> blob -> index, then drop the spool file.

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

from sqlalchemy.orm.exc import StaleDataError

from scp_node.context import NodeContext
from scp_node.imaging.blob import EncodedInstance, encode_instance
from scp_node.imaging.codecs import CodecUnavailable, SiteCodecs
from scp_node.imaging.errors import ImagingError
from scp_node.index import states
from scp_node.index.models import utcnow
from scp_node.index.repository import find_instance
from scp_node.index.states import (
    DONE,
    DerivedCopy,
    StoredBlob,
    Superseded,
    mark_compressed,
    replace_with_copy,
)
from workers.lossy_copy import LossyCopy, encode_lossy_copy
from workers.policy import CodecChoice, choose_codec, codec_for, default_choice, fallback_chain, rivals

log = logging.getLogger(__name__)


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


def _compress(context: NodeContext, work: _Work) -> str:
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
    encoded, fell_back = encode_verified(codecs, data, choice, work.uid)
    blob = _stored(context, work.uid, encoded, fell_back)
    try:
        with context.sessions() as session:
            mark_compressed(session, work.uid, work.spool_path, blob)
            session.commit()
    except (Superseded, StaleDataError):
        log.info("instance %s changed while compressing; leaving it to its new job", work.uid)
        return "superseded"
    finally:
        # Whatever happened, keep exactly the files a committed row names: the blob when this
        # job won, the spool file when it did not (or its row's newer one).
        context.discard_unreferenced([blob.path, work.spool_path])
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


def _stored(context: NodeContext, uid: str, encoded: EncodedInstance, fell_back: bool) -> StoredBlob:
    """Write the blob; the file is this job's until a committed row names it."""
    path, sha256 = context.blobs.put(uid, encoded.blob)
    return StoredBlob(
        path=path,
        sha256=sha256,
        codec=encoded.codec,
        fell_back=fell_back,
        pixel_bytes_in=encoded.pixel_bytes_in,
        pixel_bytes_out=encoded.pixel_bytes_out,
        size=len(encoded.blob),
    )


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
    codecs: SiteCodecs, data: bytes, choice: CodecChoice, uid: str
) -> tuple[EncodedInstance, bool]:
    """Try the chosen codec, then the fallbacks; a fallback is logged and flagged in the index."""
    failures = []
    for attempt in fallback_chain(choice):
        try:
            encoded = encode_smallest(codecs, data, attempt, uid)
        except ImagingError as exc:  # data the codec refuses: the next one may manage
            failures.append(f"{attempt.name}: {exc}")
            log.warning("codec %s failed on %s: %s", attempt.name, uid, exc)
            continue
        return encoded, attempt != choice
    raise CompressionFailed(f"no codec could store {uid}: {'; '.join(failures)}")


class CompressionFailed(Exception):
    """Not even storing the pixel data as received worked (the file does not parse as it
    did at ingest); the instance stays served from its spool file, marked failed."""


def encode_smallest(codecs: SiteCodecs, data: bytes, choice: CodecChoice, uid: str) -> EncodedInstance:
    """The chosen codec's verified blob, or a rival's where that is smaller for this image."""
    codec = codec_for(codecs, choice)
    best = encode_instance(data, codec)
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

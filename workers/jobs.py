"""The compress job: spool file -> codec -> verify -> blob -> index, then drop the spool file.

Job functions take only a SOP Instance UID so RQ can pickle them; the process that runs them
binds its NodeContext once with `bind()`. A job is idempotent: it re-reads the index, skips
work already done, and a blob written twice lands on the same content-addressed path.
"""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.orm.exc import StaleDataError

from scp_node.context import NodeContext
from scp_node.index.models import StorageState
from scp_node.index.repository import find_instance
from workers.blob import EncodedInstance, VerificationError, encode_instance
from workers.codecs import CodecUnavailable
from workers.pixels import UnsupportedPixels
from workers.policy import CodecChoice, choose_codec, codec_for, fallback_chain, rivals

log = logging.getLogger(__name__)

_context: NodeContext | None = None


def bind(context: NodeContext) -> None:
    global _context
    _context = context


def bound_context() -> NodeContext:
    if _context is None:
        raise RuntimeError("workers.jobs.bind() was not called in this process")
    return _context


def compress_instance(sop_instance_uid: str) -> str:
    """Returns the codec that now holds the instance (RQ keeps it as the job result).

    On failure the instance is marked failed (it stays served from the spool) and the
    exception propagates so RQ records the job as failed too.
    """
    try:
        return _compress(sop_instance_uid)
    except Exception as exc:
        log.exception("compress job for %s failed", sop_instance_uid)
        mark_failed(sop_instance_uid, f"{type(exc).__name__}: {exc}")
        raise


def _compress(sop_instance_uid: str) -> str:
    context = bound_context()
    with context.sessions() as session:
        instance = find_instance(session, sop_instance_uid)
        if instance is None or instance.state == StorageState.COMPRESSED:
            return instance.codec if instance else "gone"
        spool_path = instance.spool_path
        modality = instance.series.modality
        calling_ae = instance.calling_ae
    try:
        data = Path(spool_path).read_bytes()
    except FileNotFoundError:
        if _superseded(context, sop_instance_uid, spool_path):
            return "superseded"
        raise
    choice = choose_codec(context.config.compression, modality=modality, calling_ae=calling_ae)
    encoded, fell_back = _encode_verified(data, choice, sop_instance_uid)
    blob_path, blob_sha = context.blobs.put(sop_instance_uid, encoded.blob)
    try:
        _record_compressed(context, sop_instance_uid, spool_path, encoded, fell_back, blob_path, blob_sha)
    except (_Superseded, StaleDataError):
        log.info("instance %s changed while compressing; leaving it to its new job", sop_instance_uid)
        blob_path.unlink(missing_ok=True)
        return "superseded"
    Path(spool_path).unlink(missing_ok=True)
    log.info(
        "compressed %s with %s: pixels %d -> %d bytes",
        sop_instance_uid,
        encoded.codec,
        encoded.pixel_bytes_in,
        encoded.pixel_bytes_out,
    )
    return encoded.codec


class _Superseded(Exception):
    """A newer copy of the instance was stored while the job worked on the old one."""


def _superseded(context: NodeContext, sop_instance_uid: str, spool_path: str) -> bool:
    with context.sessions() as session:
        instance = find_instance(session, sop_instance_uid)
        return instance is None or instance.spool_path != spool_path


def _record_compressed(
    context: NodeContext,
    sop_instance_uid: str,
    spool_path: str,
    encoded: EncodedInstance,
    fell_back: bool,
    blob_path: Path,
    blob_sha: str,
) -> None:
    """Point the row at the blob, unless a new store replaced the row meanwhile (the row's
    version makes a store that commits between this read and this write fail the commit)."""
    with context.sessions() as session:
        instance = find_instance(session, sop_instance_uid)
        if instance is None or instance.spool_path != spool_path:
            raise _Superseded
        instance.state = StorageState.COMPRESSED
        instance.codec = encoded.codec
        instance.codec_fallback = fell_back
        instance.pixel_bytes_in = encoded.pixel_bytes_in
        instance.pixel_bytes_out = encoded.pixel_bytes_out
        instance.stored_size = len(encoded.blob)
        instance.blob_path = str(blob_path)
        instance.blob_sha256 = blob_sha
        instance.spool_path = None
        instance.error = None
        session.commit()


def _encode_verified(data: bytes, choice: CodecChoice, uid: str) -> tuple[EncodedInstance, bool]:
    """Try the chosen codec, then the fallbacks; a fallback is logged and flagged in the index."""
    failures = []
    for attempt in fallback_chain(choice):
        try:
            encoded = _encode_smallest(data, attempt, uid)
        except _ENCODE_FAILURES as exc:
            failures.append(f"{attempt.name}: {exc}")
            log.warning("codec %s failed on %s: %s", attempt.name, uid, exc)
            continue
        return encoded, attempt != choice
    raise RuntimeError(f"no codec could store {uid}: {'; '.join(failures)}")


_ENCODE_FAILURES = (VerificationError, UnsupportedPixels, CodecUnavailable, RuntimeError, ValueError)


def _encode_smallest(data: bytes, choice: CodecChoice, uid: str) -> EncodedInstance:
    """The chosen codec's verified blob, or a rival's where that is smaller for this image."""
    codec = codec_for(choice)
    best = encode_instance(data, codec)
    if codec is None or best.mode != "coded":
        return best
    for rival in rivals(codec):
        try:
            candidate = encode_instance(data, codec_for(rival))
        except _ENCODE_FAILURES as exc:
            log.warning("rival codec %s failed on %s: %s", rival.name, uid, exc)
            continue
        if len(candidate.blob) < len(best.blob):
            best = candidate
    if best.codec != choice.name:
        log.info("%s: %s codes smaller than %s", uid, best.codec, choice.name)
    return best


def mark_failed(sop_instance_uid: str, error: str) -> None:
    """The instance stays retrievable from its spool file; `error` tells the admin why."""
    with bound_context().sessions() as session:
        instance = find_instance(session, sop_instance_uid)
        if instance is not None and instance.state != StorageState.COMPRESSED:
            instance.state = StorageState.FAILED
            instance.error = error
            session.commit()

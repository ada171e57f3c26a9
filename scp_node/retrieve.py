"""Turn an indexed instance back into what goes on the wire for a C-GET (later C-MOVE).

The stored file is rebuilt from the spool or the blob and checked against the digest taken at
ingest. If the file is what was received and the requester accepted its transfer syntax, the
file's bytes are sent as they are; otherwise the data set is converted to a syntax it accepted
(uncompressed, or a lossless compressed syntax re-encoded from the same pixels).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import UID

from scp_node.errors import ServiceError
from scp_node.imaging.blob import ReferenceFiles, decode_instance, encapsulated_file
from scp_node.imaging.codecs import SiteCodecs
from scp_node.imaging.dicom_layout import dataset_offset
from scp_node.imaging.encapsulation import (
    ENCODABLE,
    NotEncodable,
    decode_nested_pixel_data,
    decompress,
    encode_pixel_data,
)
from scp_node.index.models import Instance
from scp_node.negotiation import UNCOMPRESSED
from scp_node.storage.recent_files import RecentFiles

log = logging.getLogger(__name__)


class RetrieveError(ServiceError):
    """The instance cannot be produced, or not in any syntax the requester accepted."""


class NotConvertible(RetrieveError):
    """The instance is readable, but the node writes it in none of the syntaxes asked for."""


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    dataset_offset: int
    transfer_syntax: UID
    received_syntax: UID  # differs where compressed input was decoded into a pixel codec's blob

    @property
    def as_received(self) -> bool:
        """The very bytes received: these may go out unchanged."""
        return self.transfer_syntax == self.received_syntax


def load_stored_file(
    instance: Instance, codecs: SiteCodecs, reference_files: ReferenceFiles, recent_files: RecentFiles
) -> StoredFile:
    """The instance as a Part-10 file, digest-checked: byte-identical to what was received
    unless compressed input was stored with a pixel codec (then Explicit VR Little Endian).
    `reference_files`: the node's `NodeContext.instance_file`, for series-mode blobs;
    `recent_files`: its files received or rebuilt lately, served without reading or decoding."""
    received = UID(instance.transfer_syntax_uid)
    if not received.is_compressed:
        kept = recent_files.received(instance.sop_instance_uid, instance.dataset_sha256)
        if kept is not None:  # byte for byte what the spool file or the blob gives
            return StoredFile(kept.data, kept.dataset_offset, received, received)
    if instance.blob_path:
        blob_path = Path(instance.blob_path)
        rebuilt = recent_files.rebuilt(
            instance.sop_instance_uid,
            instance.blob_sha256,
            lambda: decode_instance(blob_path.read_bytes(), codecs, reference_files),
        )
        stored = StoredFile(rebuilt.data, rebuilt.dataset_offset, UID(rebuilt.transfer_syntax), received)
        if not stored.as_received:
            return stored  # compressed input decoded: its pixels were verified at encode time
        digest = rebuilt.dataset_sha256  # of the rebuilt bytes, taken by decode_instance
    elif instance.spool_path:
        data = Path(instance.spool_path).read_bytes()
        stored = StoredFile(data, dataset_offset(data), received, received)
        digest = hashlib.sha256(memoryview(data)[stored.dataset_offset :]).hexdigest()
    else:
        raise RetrieveError(f"{instance.sop_instance_uid} has neither spool file nor blob")
    if digest != instance.dataset_sha256:
        raise RetrieveError(f"{instance.sop_instance_uid}: SHA-256 differs from the one taken at ingest")
    return stored


def file_to_send(
    instance: Instance,
    accepted: list[UID],
    codecs: SiteCodecs,
    reference_files: ReferenceFiles,
    recent_files: RecentFiles,
) -> tuple[bytes, UID]:
    """The Part-10 file for a peer that accepts `accepted` (preferred first), and its syntax: the
    blob's own bitstreams where the first syntax is the one they code (nothing decoded or
    encoded); else as `stored_or_converted`. RetrieveError where none of these can be made."""
    if instance.blob_path and accepted and accepted[0].is_compressed:
        passed = encapsulated_file(Path(instance.blob_path).read_bytes(), accepted[0], codecs)
        if passed is not None:
            data, rebuilt_sha256 = passed
            # Native input: the blob rebuilds the received data set. Compressed input was
            # decoded into it, its pixels verified when coded (as in load_stored_file).
            received = UID(instance.transfer_syntax_uid)
            if not received.is_compressed and rebuilt_sha256 != instance.dataset_sha256:
                raise RetrieveError(f"{instance.sop_instance_uid}: the blob holds another data set")
            return data, accepted[0]
    return stored_or_converted(load_stored_file(instance, codecs, reference_files, recent_files), accepted)


def stored_or_converted(stored: StoredFile, accepted: list[UID]) -> tuple[bytes, UID]:
    """The file as received where its syntax is the first accepted, else converted."""
    if stored.as_received and accepted and stored.transfer_syntax == accepted[0]:
        return stored.data, stored.transfer_syntax
    return converted_file(stored, accepted)


def converted_file(stored: StoredFile, accepted: list[UID]) -> tuple[bytes, UID]:
    """The instance as a Part-10 file in the first accepted syntax the node can write, and that
    syntax; pixels decode to the same values as the stored ones, nested Pixel Data included."""
    ds = dcmread(io.BytesIO(stored.data))
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        decompress(ds)
    decode_nested_pixel_data(ds, stored.received_syntax)
    refusals = []
    for syntax in accepted:
        if syntax in UNCOMPRESSED:
            if ds.file_meta.TransferSyntaxUID.is_little_endian != syntax.is_little_endian:
                _swap_words(ds)
            return _part_10(ds, syntax), syntax
        if syntax in ENCODABLE:
            try:
                encode_pixel_data(ds, syntax)
            except NotEncodable as exc:
                refusals.append(str(exc))
                continue
            return _part_10(ds, syntax), syntax
    names = ", ".join(UID(s).name for s in accepted) or "none"
    reasons = f": {'; '.join(refusals)}" if refusals else ""
    raise NotConvertible(f"cannot convert {stored.transfer_syntax.name} to any of {names}{reasons}")


def _part_10(ds: Dataset, syntax: UID) -> bytes:
    """`ds` written as a file in `syntax`: pydicom resolves each element's VR on the way from
    implicit to explicit VR, and deflates where the syntax says so."""
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    dcmwrite(
        buffer,
        ds,
        implicit_vr=syntax.is_implicit_VR,
        little_endian=syntax.is_little_endian,
        enforce_file_format=True,
    )
    return buffer.getvalue()


# Byte width of the words in each "other" VR; pydicom writes their bytes unchanged.
_WORD_SIZE = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _swap_words(ds: Dataset) -> None:
    """Change the byte order of every OW / OF / OL / OD / OV value, pixel data included:
    pydicom re-encodes parsed numbers in the new byte order but leaves these bytes as read."""
    for element in ds.iterall():
        size = _WORD_SIZE.get(element.VR)
        if size and element.value:
            element.value = np.frombuffer(element.value, dtype=f"u{size}").byteswap().tobytes()

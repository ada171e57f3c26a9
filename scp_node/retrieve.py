"""Turn an indexed instance back into what goes on the wire for a C-GET (later C-MOVE).

The stored file is rebuilt from the spool or the blob and checked against the digest taken at
ingest. If the requester accepted the file's transfer syntax the file's bytes are sent as they
are; otherwise the data set is converted to a syntax it accepted (uncompressed, or a lossless
compressed syntax re-encoded from the same pixels).
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

from scp_node.index.models import Instance
from scp_node.negotiation import LOSSLESS_ENCODABLE, UNCOMPRESSED
from workers.blob import decode_instance
from workers.dicom_layout import dataset_offset

log = logging.getLogger(__name__)



class RetrieveError(RuntimeError):
    """The instance cannot be produced, or not in any syntax the requester accepted."""


@dataclass(frozen=True)
class StoredFile:
    data: bytes
    dataset_offset: int
    transfer_syntax: UID


def load_stored_file(instance: Instance) -> StoredFile:
    """The instance as a Part-10 file, digest-checked: byte-identical to what was received
    unless compressed input was stored with a pixel codec (then Explicit VR Little Endian)."""
    if instance.blob_path:
        rebuilt = decode_instance(Path(instance.blob_path).read_bytes())
        stored = StoredFile(rebuilt.data, rebuilt.dataset_offset, UID(rebuilt.transfer_syntax))
        if stored.transfer_syntax != instance.transfer_syntax_uid:
            return stored  # compressed input decoded: its pixels were verified at encode time
    elif instance.spool_path:
        data = Path(instance.spool_path).read_bytes()
        stored = StoredFile(data, dataset_offset(data), UID(instance.transfer_syntax_uid))
    else:
        raise RetrieveError(f"{instance.sop_instance_uid} has neither spool file nor blob")
    digest = hashlib.sha256(memoryview(stored.data)[stored.dataset_offset :]).hexdigest()
    if digest != instance.dataset_sha256:
        raise RetrieveError(f"{instance.sop_instance_uid}: SHA-256 differs from the one taken at ingest")
    return stored


def converted_dataset(stored: StoredFile, accepted: list[UID]) -> Dataset:
    """A data set in the first accepted syntax the node can write, for pynetdicom to send."""
    ds = dcmread(io.BytesIO(stored.data))
    for syntax in accepted:
        if syntax in UNCOMPRESSED:
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress(generate_instance_uid=False)
            return _reencoded(ds, syntax)
    for syntax in accepted:
        if syntax in LOSSLESS_ENCODABLE:
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress(generate_instance_uid=False)
            ds.compress(syntax, generate_instance_uid=False)
            return ds
    names = ", ".join(UID(s).name for s in accepted) or "none"
    raise RetrieveError(f"cannot convert {stored.transfer_syntax.name} to an accepted syntax ({names})")


def _reencoded(ds: Dataset, syntax: UID) -> Dataset:
    """The data set written in `syntax` and read back: pynetdicom sends a data set in the
    encoding it was read with, and element VRs must be resolved to go from implicit to explicit."""
    if ds.file_meta.TransferSyntaxUID.is_little_endian != syntax.is_little_endian:
        _swap_words(ds)
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=syntax.is_implicit_VR, little_endian=syntax.is_little_endian)
    buffer.seek(0)
    return dcmread(buffer)


# Byte width of the words in each "other" VR; pydicom writes their bytes unchanged.
_WORD_SIZE = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _swap_words(ds: Dataset) -> None:
    """Change the byte order of every OW / OF / OL / OD / OV value, pixel data included:
    pydicom re-encodes parsed numbers in the new byte order but leaves these bytes as read."""
    for element in ds.iterall():
        size = _WORD_SIZE.get(element.VR)
        if size and element.value:
            element.value = np.frombuffer(element.value, dtype=f"u{size}").byteswap().tobytes()

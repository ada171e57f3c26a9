"""The lossy copy of an instance: what a rule naming a lossy codec stores and serves.

PS3.3 C.7.6.1.1.5 and PS3.4 (lossy compression makes a new image): the copy gets its own SOP
Instance UID, Lossy Image Compression "01" with the ratio and method appended to any earlier
ones, Image Type DERIVED, a derivation description, and a Source Image Sequence item naming
the original as its "uncompressed predecessor" (DCM 121320), so a viewer and a radiologist
can tell it is not the acquired image and find what it came from.

Its pixels are exactly the codec's decode of the stored payload, so the blob rebuilds the
copy byte for byte and retrievals are digest-checked like any other instance.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from dataclasses import dataclass

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian

from scp_node.imaging.blob import EncodedInstance, PixelCoding, encode_instance, pixel_words
from scp_node.imaging.codecs import Codec
from scp_node.imaging.dicom_layout import PixelFormat, read_layout
from scp_node.imaging.pixels import (
    UnsupportedPixels,
    full_range_samples,
    native_from_words,
    words_from_samples,
)

UNCOMPRESSED_PREDECESSOR = ("121320", "DCM", "Uncompressed predecessor")
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "scp-node/lossy-copy")


@dataclass(frozen=True)
class LossyCopy:
    sop_instance_uid: str
    encoded: EncodedInstance
    size: int  # of the copy's Part-10 file
    dataset_sha256: str
    transfer_syntax: str


def lossy_copy_uid(original_uid: str, codec: Codec) -> str:
    """Derived from the original and the codec settings: a re-run job or a re-sent original
    replaces the same copy instead of adding another to the study."""
    name = "|".join([original_uid, codec.name, str(sorted(codec.options.items()))])
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


def encode_lossy_copy(data: bytes, codec: Codec) -> LossyCopy:
    """Raises UnsupportedPixels where the instance cannot have a useful lossy copy (no pixels,
    already lossy, unusual pixel words, nothing saved): the caller stores it losslessly."""
    layout = read_layout(data)
    words = pixel_words(data, layout)  # first: it refuses files without codable pixels
    fmt = PixelFormat.from_dataset(layout.dataset)
    samples, mapping, desc = full_range_samples(words, fmt)
    payload, reconstruction = codec.encode_and_reconstruct(samples, desc)
    if len(payload) >= fmt.native_length:
        raise UnsupportedPixels(f"{codec.name} would not make these pixels smaller")
    lossy_words = words_from_samples(reconstruction, mapping, fmt)
    uid = lossy_copy_uid(str(layout.dataset.SOPInstanceUID), codec)
    ratio = fmt.native_length / len(payload)
    copy = _derived_file(data, fmt, lossy_words, uid, ratio, codec.lossy_method)
    encoded = encode_instance(copy, codec, PixelCoding(payload, mapping, desc))
    offset = read_layout(copy).dataset_offset
    digest = hashlib.sha256(memoryview(copy)[offset:]).hexdigest()
    return LossyCopy(uid, encoded, len(copy), digest, str(ExplicitVRLittleEndian))


def _derived_file(
    data: bytes, fmt: PixelFormat, words: np.ndarray, uid: str, ratio: float, method: str
) -> bytes:
    ds = dcmread(io.BytesIO(data))
    original_uid, sop_class = str(ds.SOPInstanceUID), str(ds.SOPClassUID)
    native = native_from_words(words, fmt, little_endian=True)
    ds.PixelData = native + b"\0" * (len(native) % 2)
    ds["PixelData"].VR = "OW" if fmt.bits_allocated > 8 else "OB"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = [*_values(ds, "LossyImageCompressionRatio"), f"{ratio:.2f}"]
    ds.LossyImageCompressionMethod = [*_values(ds, "LossyImageCompressionMethod"), method]
    if "ImageType" in ds:
        ds.ImageType = ["DERIVED", *_values(ds, "ImageType")[1:]]
    note = f"Lossy compressed by scp-node with {method}, ratio {ratio:.2f}:1"
    earlier = str(ds.get("DerivationDescription", ""))
    ds.DerivationDescription = (f"{earlier}; {note}" if earlier else note)[-1024:]  # ST: 1024 chars
    ds.SourceImageSequence = [*ds.get("SourceImageSequence", []), _predecessor(sop_class, original_uid)]
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, implicit_vr=False, little_endian=True)
    return buffer.getvalue()


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, MultiValue) else [str(value)]


def _predecessor(sop_class: str, sop_instance: str) -> Dataset:
    purpose = Dataset()
    purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = UNCOMPRESSED_PREDECESSOR
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    item.PurposeOfReferenceCodeSequence = [purpose]
    return item

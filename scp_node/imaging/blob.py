"""The stored blob: a DICOM file cut around its pixel data, with the pixels coded.

Layout: MAGIC, u32 header length, JSON header, then the segments named in the header
(file meta, elements before Pixel Data, the Pixel Data element header, the payload, the bytes
after Pixel Data), then the SHA-256 of everything before it. Rebuilding concatenates the
segments with the payload decoded, so non-pixel bytes come back verbatim.

Modes:
- "verbatim": payload is the original Pixel Data value (already-lossy or undecodable data,
  non-image objects, the passthrough policy). The file comes back byte for byte.
- "coded": payload is a codec's bitstream of the pixel samples. Native input comes back byte
  for byte; encapsulated (compressed) input comes back as Explicit VR Little Endian with the
  same elements and the same decoded pixels, and its meta and Pixel Data header say so.

Series mode: a codec with `series_depth` may code the pixels against an already stored
neighbouring slice (`ReferenceSlice`). Where the payload depends on it, the header names the
slice's SOP Instance UID (`reference_uid`) and rebuilding needs that slice's file, which the
caller supplies (`ReferenceFiles`); the codec checks the slice's pixels by digest. The slice
is handed to the codec as samples in this image's own sample mapping, clipped to its bit
depth: any deterministic function of the reference serves as context, and encoder and decoder
compute the same one.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import write_file_meta_info
from pydicom.pixels import pixel_array
from pydicom.uid import UID, ExplicitVRLittleEndian

from scp_node.imaging.codecs import Codec, ImageDescription, SiteCodecs
from scp_node.imaging.codecs.base import FrameCodec, frame_bitstreams
from scp_node.imaging.dicom_layout import FileLayout, PixelFormat, read_layout
from scp_node.imaging.errors import ImagingError
from scp_node.imaging.pixels import (
    SampleMapping,
    UnsupportedPixels,
    native_from_words,
    samples_from_words,
    values_from_words,
    words_from_native,
    words_from_samples,
    words_from_values,
)

MAGIC = b"SCPBLOB1"
SEGMENTS = ("meta", "head", "pixel_header", "payload", "tail")

# Compressed syntaxes whose decoded pixels are exactly what the sender coded.
LOSSLESS_ENCAPSULATED = {
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless, Process 14
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless Only
    "1.2.840.10008.1.2.4.201",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.5",  # RLE Lossless
}
# Colour models that survive a decode to native pixels unchanged.
NATIVE_PHOTOMETRICS = {"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL"}


class BlobError(ImagingError):
    """A blob is damaged or was written by a codec this build cannot decode."""


class VerificationError(ImagingError):
    """Decoding the fresh blob did not give back the original: the blob must not be stored."""


@dataclass(frozen=True)
class EncodedInstance:
    blob: bytes
    mode: str
    codec: str
    pixel_bytes_in: int  # size of the Pixel Data value as received
    pixel_bytes_out: int  # size of the payload that replaces it
    rebuilt: RebuiltInstance  # what the blob rebuilds to, as verified: retrieval may serve it
    reference_uid: str | None = None  # the slice it was coded against, needed to rebuild it


@dataclass(frozen=True)
class PixelCoding:
    """Pixels already coded by the caller (a lossy copy, whose samples are the codec's output)."""

    payload: bytes
    mapping: SampleMapping
    desc: ImageDescription


@dataclass(frozen=True)
class ReferenceSlice:
    """A stored neighbouring slice a series-mode codec may code against."""

    sop_instance_uid: str
    data: bytes  # its Part-10 file


# The Part-10 file of a stored instance by SOP Instance UID (the reference slices a blob names).
ReferenceFiles = Callable[[str], bytes]


@dataclass(frozen=True)
class RebuiltInstance:
    data: bytes  # the Part-10 file
    dataset_offset: int
    dataset_sha256: str
    transfer_syntax: str

    @property
    def dataset_bytes(self) -> bytes:
        return self.data[self.dataset_offset :]


def why_verbatim(layout: FileLayout) -> str | None:
    """The reason this file's pixels must be kept as received, or None if they may be coded."""
    if not layout.has_pixels:
        return "no pixel data"
    if str(layout.dataset.get("LossyImageCompression", "")) == "01":
        return "already lossy"
    if layout.encapsulated and layout.transfer_syntax not in LOSSLESS_ENCAPSULATED:
        return f"compressed with {layout.transfer_syntax.name}"
    fmt = PixelFormat.from_dataset(layout.dataset)
    if fmt.photometric not in NATIVE_PHOTOMETRICS:
        return f"photometric {fmt.photometric} changes when decoded"
    if fmt.bits_allocated not in (8, 16) or fmt.samples not in (1, 3):
        return f"{fmt.bits_allocated}-bit, {fmt.samples}-sample pixels"
    return None


def encode_instance(
    data: bytes,
    codec: Codec | None,
    coding: PixelCoding | None = None,
    reference: ReferenceSlice | None = None,
) -> EncodedInstance:
    """Cut `data` (a Part-10 file) into a blob; code its pixels with `codec` unless None
    (`coding`: with that payload, which decodes to exactly the file's pixels), against
    `reference` where the codec has a series mode and the slice fits (`EncodedInstance.reference_uid`
    says whether the blob depends on it).

    Verify before replace: the blob is decoded again here and must rebuild the expected
    bytes; a mismatch raises VerificationError and nothing is returned.
    """
    layout = read_layout(data)
    # A lossy copy (coding given) says it is lossy, but its payload is what it was made from.
    if codec is not None and (coding is not None or why_verbatim(layout) is None):
        header, segments = _coded(data, layout, codec, coding, reference)
    else:
        header, segments = _verbatim(data, layout)
    blob = _pack(header, segments)
    reference_file = {reference.sop_instance_uid: reference.data} if reference else {}
    rebuilt = _rebuild(blob, lambda _name, **_options: codec, reference_file.__getitem__)
    if hashlib.sha256(rebuilt.dataset_bytes).hexdigest() != header["output_sha256"]:
        raise VerificationError(f"{header['codec']} blob does not rebuild the instance")
    pixels_in = (layout.pixel_value_end or 0) - (layout.pixel_value_offset or 0)
    return EncodedInstance(
        blob,
        header["mode"],
        header["codec"],
        pixels_in,
        len(segments["payload"]),
        rebuilt,
        header.get("reference_uid"),
    )


def decode_instance(
    blob: bytes, codecs: SiteCodecs | None = None, reference_files: ReferenceFiles | None = None
) -> RebuiltInstance:
    """Rebuild the file; checks the blob checksum and the rebuilt data set's digest.

    codecs: the node's (its site settings and loaded weights); None: the built-in settings.
    reference_files: where the file of a reference slice comes from (series-mode blobs)."""
    return _rebuild(blob, (codecs or SiteCodecs()).shared, reference_files)


def encapsulated_file(blob: bytes, syntax: str, codecs: SiteCodecs | None = None) -> tuple[bytes, str] | None:
    """The instance as a Part-10 file in `syntax` whose Pixel Data fragments are the blob's own
    frame bitstreams, not decoded, and the SHA-256 of the data set the blob rebuilds (to check
    against the one taken at ingest): where its codec writes `syntax`'s frames and they code the
    pixel words themselves (one sample, no offset taken off, a decoder's sample width equal to
    the words'); None otherwise (decode and convert instead). The bitstreams decoded to the
    received pixels when the blob was verified, and the blob's checksum holds them unchanged."""
    header, segments = unpack(blob)
    if header["mode"] != "coded" or "reference_uid" in header:
        return None
    if header["transfer_syntax"] != ExplicitVRLittleEndian:  # the other elements go out as stored
        return None
    codec = (codecs or SiteCodecs()).shared(header["codec"], **header["codec_options"])
    if not isinstance(codec, FrameCodec) or codec.dicom_syntax != syntax:
        return None
    fmt = PixelFormat(**header["pixel_format"])
    mapping = SampleMapping(**header["mapping"])
    desc = ImageDescription(**header["description"])
    if fmt.samples != 1:
        return None
    if not (mapping.whole_words or (mapping.offset == 0 and not fmt.signed)):
        return None
    try:
        frames = frame_bitstreams(segments["payload"])
    except struct.error as exc:
        raise BlobError(f"{header['codec']} payload has a damaged frame table") from exc
    if any((codec.frame_precision(f, desc) > 8) != (fmt.bits_allocated > 8) for f in frames):
        return None
    meta = FileMetaDataset(dcmread(io.BytesIO(segments["meta"])).file_meta)
    meta.TransferSyntaxUID = UID(syntax)
    stream = io.BytesIO()
    stream.write(segments["meta"][:132])  # preamble and 'DICM'
    write_file_meta_info(stream, meta, enforce_standard=False)
    pixel_header = struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\x00\x00\xff\xff\xff\xff"
    sequence_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    pixels = pixel_header + encapsulate(frames, has_bot=len(frames) > 1) + sequence_end
    return stream.getvalue() + segments["head"] + pixels + segments["tail"], header["output_sha256"]


def reference_uid(blob: bytes) -> str | None:
    """The slice a blob was coded against, if any: its file is needed to rebuild it."""
    return unpack(blob)[0].get("reference_uid")


# The codec that decodes a payload, from the name and options its header records.
_CodecFor = Callable[..., Codec | None]


def _rebuild(blob: bytes, codec_for: _CodecFor, reference_files: ReferenceFiles | None) -> RebuiltInstance:
    header, segments = unpack(blob)
    if header["mode"] == "coded":
        codec = codec_for(header["codec"], **header["codec_options"])
        assert codec is not None, "a coded payload names its codec"
        pixels = _decode_pixels(header, segments["payload"], codec, reference_files)
    else:
        pixels = segments["payload"]
    data = b"".join((segments["meta"], segments["head"], segments["pixel_header"], pixels, segments["tail"]))
    dataset_offset = len(segments["meta"])
    digest = hashlib.sha256(memoryview(data)[dataset_offset:]).hexdigest()
    if digest != header["output_sha256"]:
        raise BlobError("rebuilt data set does not match its recorded SHA-256")
    return RebuiltInstance(data, dataset_offset, digest, header["transfer_syntax"])


def unpack(blob: bytes) -> tuple[dict[str, Any], dict[str, bytes]]:
    if len(blob) < len(MAGIC) + 4 + 32 or not blob.startswith(MAGIC):
        raise BlobError("not a scp-node blob")
    body, checksum = blob[:-32], blob[-32:]
    if hashlib.sha256(body).digest() != checksum:
        raise BlobError("blob checksum mismatch (damaged on disk?)")
    (header_length,) = struct.unpack_from("<I", body, len(MAGIC))
    start = len(MAGIC) + 4
    header = json.loads(body[start : start + header_length])
    offset = start + header_length
    segments = {}
    for name, length in zip(SEGMENTS, header["segments"], strict=True):
        segments[name] = body[offset : offset + length]
        offset += length
    return header, segments


def _pack(header: dict[str, Any], segments: dict[str, bytes]) -> bytes:
    header["segments"] = [len(segments[name]) for name in SEGMENTS]
    header_bytes = json.dumps(header, sort_keys=True).encode()
    body = b"".join(
        [
            MAGIC,
            struct.pack("<I", len(header_bytes)),
            header_bytes,
            *(segments[n] for n in SEGMENTS),
        ]
    )
    return body + hashlib.sha256(body).digest()


def _split(data: bytes, layout: FileLayout) -> dict[str, bytes]:
    if not layout.has_pixels:
        return {
            "meta": data[: layout.dataset_offset],
            "head": data[layout.dataset_offset :],
            "pixel_header": b"",
            "payload": b"",
            "tail": b"",
        }
    return {
        "meta": data[: layout.dataset_offset],
        "head": data[layout.dataset_offset : layout.pixel_header_offset],
        "pixel_header": data[layout.pixel_header_offset : layout.pixel_value_offset],
        "payload": data[layout.pixel_value_offset : layout.pixel_value_end],
        "tail": data[layout.pixel_value_end :],
    }


def _verbatim(data: bytes, layout: FileLayout) -> tuple[dict[str, Any], dict[str, bytes]]:
    header = {
        "mode": "verbatim",
        "codec": "passthrough",
        "transfer_syntax": str(layout.transfer_syntax),
        "output_sha256": hashlib.sha256(memoryview(data)[layout.dataset_offset :]).hexdigest(),
    }
    return header, _split(data, layout)


def _coded(
    data: bytes,
    layout: FileLayout,
    codec: Codec,
    coding: PixelCoding | None,
    reference: ReferenceSlice | None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    fmt = PixelFormat.from_dataset(layout.dataset)
    segments = _split(data, layout)
    if layout.encapsulated:
        words = _decoded_words(data, fmt)
        little_endian = True
        extra = b"\x00" if fmt.native_length % 2 else b""
        segments["meta"] = _explicit_little_meta(data, layout)
        segments["pixel_header"] = _native_pixel_header(fmt, fmt.native_length + len(extra))
        transfer_syntax = str(ExplicitVRLittleEndian)
    else:
        little_endian = layout.transfer_syntax.is_little_endian
        value = segments["payload"]
        words = words_from_native(value, fmt, little_endian)
        extra = value[fmt.native_length :]
        transfer_syntax = str(layout.transfer_syntax)
    native = native_from_words(words, fmt, little_endian) + extra
    used_reference = None
    if coding is None:
        samples, mapping, desc = samples_from_words(words, fmt)
        context = None
        if reference is not None and codec.series_depth:
            context = _reference_samples(reference.data, fmt, mapping, desc)
        if context is None:
            coding = PixelCoding(codec.encode(samples, desc), mapping, desc)
        else:
            coding = PixelCoding(codec.encode(samples, desc, reference=context), mapping, desc)
            used_reference = reference.sop_instance_uid if codec.uses_reference(coding.payload) else None
    segments["payload"] = coding.payload
    header = {
        "mode": "coded",
        "codec": codec.name,
        "codec_version": codec.version,
        "codec_options": codec.options,
        "transfer_syntax": transfer_syntax,
        "pixel_format": fmt.__dict__,
        "little_endian": little_endian,
        "mapping": coding.mapping.to_dict(),
        "description": coding.desc.to_dict(),
        "extra": extra.hex(),
        "output_sha256": hashlib.sha256(
            b"".join((segments["head"], segments["pixel_header"], native, segments["tail"]))
        ).hexdigest(),
    }
    if used_reference is not None:
        header["reference_uid"] = used_reference
    return header, segments


def _reference_samples(
    data: bytes, fmt: PixelFormat, mapping: SampleMapping, desc: ImageDescription
) -> np.ndarray | None:
    """The reference slice as context for an image (`fmt`, `mapping`, `desc`), or None where
    it is not a slice of the same grid (one frame of the same size, samples and word size)."""
    layout = read_layout(data)
    if why_verbatim(layout) is not None:
        return None
    ref_fmt = PixelFormat.from_dataset(layout.dataset)
    shape = (ref_fmt.frames, ref_fmt.rows, ref_fmt.columns, ref_fmt.samples, ref_fmt.bits_allocated)
    if shape != (1, fmt.rows, fmt.columns, fmt.samples, fmt.bits_allocated):
        return None
    words = pixel_words(data, layout)[0]
    if mapping.whole_words:
        values = words.astype(np.int64)
    else:
        values = values_from_words(words, ref_fmt) - mapping.offset
    return np.clip(values, 0, (1 << desc.bit_depth) - 1).astype(desc.dtype)


def extract_samples(data: bytes) -> tuple[np.ndarray, ImageDescription]:
    """The codec input for a file, as the compress job builds it (for `codec try` and bench)."""
    layout = read_layout(data)
    samples, _, desc = samples_from_words(pixel_words(data, layout), PixelFormat.from_dataset(layout.dataset))
    return samples, desc


def pixel_words(data: bytes, layout: FileLayout) -> np.ndarray:
    """The file's pixel words (frames, rows, columns, samples), decoded if encapsulated."""
    reason = why_verbatim(layout)
    if reason is not None:
        raise UnsupportedPixels(reason)
    fmt = PixelFormat.from_dataset(layout.dataset)
    if layout.encapsulated:
        return _decoded_words(data, fmt)
    value = data[layout.pixel_value_offset : layout.pixel_value_end]
    return words_from_native(value, fmt, layout.transfer_syntax.is_little_endian)


def _decode_pixels(
    header: dict[str, Any], payload: bytes, codec: Codec, reference_files: ReferenceFiles | None
) -> bytes:
    if codec.version != header["codec_version"]:
        raise BlobError(f"blob needs {header['codec']} v{header['codec_version']}, have v{codec.version}")
    fmt = PixelFormat(**header["pixel_format"])
    desc = ImageDescription(**header["description"])
    mapping = SampleMapping(**header["mapping"])
    uid = header.get("reference_uid")
    if uid is None:
        samples = codec.decode(payload, desc)
    else:
        if reference_files is None:
            raise BlobError(f"blob was coded against slice {uid}; its file was not supplied")
        context = _reference_samples(reference_files(uid), fmt, mapping, desc)
        if context is None:
            raise BlobError(f"reference slice {uid} is no longer a slice of this image's grid")
        samples = codec.decode(payload, desc, reference=context)
    words = words_from_samples(samples, mapping, fmt)
    return native_from_words(words, fmt, header["little_endian"]) + bytes.fromhex(header["extra"])


def _decoded_words(data: bytes, fmt: PixelFormat) -> np.ndarray:
    try:
        values = pixel_array(io.BytesIO(data), as_rgb=False)
    except Exception as exc:
        raise UnsupportedPixels(f"cannot decode compressed pixel data: {exc}") from exc
    values = values.reshape(fmt.frames, fmt.rows, fmt.columns, fmt.samples).astype(np.int64)
    return words_from_values(values, fmt)


def _explicit_little_meta(data: bytes, layout: FileLayout) -> bytes:
    meta = FileMetaDataset(layout.dataset.file_meta)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    stream = io.BytesIO()
    stream.write(data[:132])  # preamble and 'DICM'
    write_file_meta_info(stream, meta, enforce_standard=False)
    return stream.getvalue()


def _native_pixel_header(fmt: PixelFormat, length: int) -> bytes:
    vr = b"OW" if fmt.bits_allocated > 8 else b"OB"
    return struct.pack("<HH", 0x7FE0, 0x0010) + vr + b"\x00\x00" + struct.pack("<I", length)

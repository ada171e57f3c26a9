"""Native pixel data <-> encapsulated lossless transfer syntaxes, for a peer that asks for one.

pydicom writes RLE, JPEG-LS and JPEG 2000 lossless itself; JPEG Lossless SV1 (libjpeg-turbo),
HTJ2K lossless (OpenJPH) and JPEG XL lossless (libjxl) come from imagecodecs. The encoders
take the file's words as they are (all Bits Allocated bits, a signed value as its two's
complement), so whatever a decoder makes of the stored words it makes of the sent ones.
"""

from __future__ import annotations

from collections.abc import Callable

import imagecodecs
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from scp_node.imaging.blob import NATIVE_PHOTOMETRICS
from scp_node.imaging.errors import ImagingError

# DICOM's JPEG XL Lossless transfer syntax (PS3.5 A.4.11; newer than pydicom's UID list).
JPEGXLLossless = UID("1.2.840.10008.1.2.4.110")


class NotEncodable(ImagingError):
    """These pixels cannot be written in that syntax without loss (the caller tries another)."""


def encode_pixel_data(ds: Dataset, syntax: UID) -> None:
    """Re-encode `ds`'s native Pixel Data in `syntax`, in place (SOP Instance UID unchanged)."""
    if syntax in _PYDICOM_ENCODED:
        try:
            ds.compress(syntax, generate_instance_uid=False)
        except (ValueError, RuntimeError) as exc:
            raise NotEncodable(f"{syntax.name}: {exc}") from exc
        return
    encode_frame = _FRAME_ENCODERS.get(syntax)
    if encode_frame is None:
        raise NotEncodable(f"the node writes no {syntax.name}")
    fragments = [encode_frame(frame, ds) for frame in _frames(ds)]
    ds.PixelData = encapsulate(fragments)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = 0
        ds.PhotometricInterpretation = _COLOUR_TRANSFORMED.get(syntax, ds.PhotometricInterpretation)
    ds.file_meta.TransferSyntaxUID = syntax


class NotDecodable(ImagingError):
    """Encapsulated Pixel Data that the decoders refuse (damaged, or a syntax none handles)."""


def decompress(ds: Dataset) -> None:
    """Decode encapsulated Pixel Data in place to Explicit VR Little Endian: pydicom's decoders,
    and JPEG XL (which pydicom does not know yet) through imagecodecs."""
    try:
        _decompress(ds)
    except (ValueError, RuntimeError, NotImplementedError) as exc:  # what pydicom's plugins raise
        raise NotDecodable(f"{ds.file_meta.TransferSyntaxUID.name}: {exc}") from exc


def _decompress(ds: Dataset) -> None:
    if ds.file_meta.TransferSyntaxUID != JPEGXLLossless:
        ds.decompress(generate_instance_uid=False)
        return
    frames = int(ds.get("NumberOfFrames") or 1)
    decoded = [imagecodecs.jpegxl_decode(f) for f in generate_frames(ds.PixelData, number_of_frames=frames)]
    words = np.stack(decoded).astype("<u2" if ds.BitsAllocated == 16 else np.uint8, copy=False)
    ds.PixelData = words.tobytes()
    ds["PixelData"].VR = "OW" if ds.BitsAllocated == 16 else "OB"
    ds["PixelData"].is_undefined_length = False
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian


def decode_nested_pixel_data(ds: Dataset, syntax: UID) -> None:
    """Decode Pixel Data inside sequence items (an Icon Image Sequence thumbnail) still
    encapsulated in `syntax`: every Pixel Data must follow the syntax of the data set that
    carries it, or peers refuse the file (Orthanc: "PixelData larger than remaining bytes")."""
    for element in ds:
        if element.VR != "SQ":
            continue
        for item in element.value:
            if "PixelData" in item and item["PixelData"].is_undefined_length:
                item.file_meta = FileMetaDataset()
                item.file_meta.TransferSyntaxUID = syntax
                decompress(item)
                del item.file_meta
            decode_nested_pixel_data(item, syntax)


def _frames(ds: Dataset) -> list[np.ndarray]:
    """Each frame's words as (rows, columns) or (rows, columns, samples)."""
    if ds.BitsAllocated not in (8, 16):
        raise NotEncodable(f"{ds.BitsAllocated} bits allocated")
    if ds.PhotometricInterpretation not in NATIVE_PHOTOMETRICS:
        raise NotEncodable(f"photometric interpretation {ds.PhotometricInterpretation}")
    dtype = np.dtype(np.uint8) if ds.BitsAllocated == 8 else np.dtype("<u2")
    frames, samples = int(ds.get("NumberOfFrames") or 1), ds.SamplesPerPixel
    rows, columns = ds.Rows, ds.Columns
    words = np.frombuffer(ds.PixelData, dtype=dtype, count=frames * rows * columns * samples)
    if samples == 1:
        return list(words.reshape(frames, rows, columns))
    if ds.get("PlanarConfiguration", 0) == 1:
        return list(words.reshape(frames, samples, rows, columns).transpose(0, 2, 3, 1))
    return list(words.reshape(frames, rows, columns, samples))


def _precision(ds: Dataset) -> int:
    return 8 if ds.BitsAllocated == 8 else 16


def _jpeg_lossless_sv1(frame: np.ndarray, ds: Dataset) -> bytes:
    # Colour stays as it is: no colour transform, so the components are the file's samples.
    colour = {"colorspace": "RGB", "outcolorspace": "RGB"} if frame.ndim == 3 else {}
    return imagecodecs.jpeg8_encode(frame, lossless=True, predictor=1, bitspersample=_precision(ds), **colour)


def _htj2k_lossless(frame: np.ndarray, ds: Dataset) -> bytes:
    if frame.ndim == 3 and ds.PhotometricInterpretation != "RGB":
        raise NotEncodable(f"HTJ2K colour is written from RGB, not {ds.PhotometricInterpretation}")
    return imagecodecs.htj2k_encode(frame, reversible=True)


def _jpeg_xl_lossless(frame: np.ndarray, _ds: Dataset) -> bytes:
    return imagecodecs.jpegxl_encode(frame, lossless=True, effort=3)


_PYDICOM_ENCODED = (RLELossless, JPEGLSLossless, JPEG2000Lossless)
_FRAME_ENCODERS: dict[UID, Callable[[np.ndarray, Dataset], bytes]] = {
    JPEGLosslessSV1: _jpeg_lossless_sv1,
    HTJ2KLossless: _htj2k_lossless,
    JPEGXLLossless: _jpeg_xl_lossless,
}
# OpenJPH applies JPEG 2000's reversible colour transform to three samples; PS3.5 8.2.4 then
# has the data set say YBR_RCT (decoders undo it: the decoded pixels are the RGB ones).
_COLOUR_TRANSFORMED = {HTJ2KLossless: "YBR_RCT"}
# Every lossless syntax the node can write, for negotiation.
ENCODABLE = [*_PYDICOM_ENCODED, *_FRAME_ENCODERS]

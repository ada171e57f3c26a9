"""Map DICOM pixel words to the unsigned sample arrays codecs take, exactly reversibly.

A word's bits above Bits Stored usually repeat the sign (signed data) or are zero; then
the image is coded as values minus their minimum, which keeps the alphabet small (a CT slice
in -1024..3071 becomes 12-bit). When a file puts anything else in those bits (overlays,
garbage), the whole words are coded instead, so no bit is ever lost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from scp_node.imaging.codecs.base import ImageDescription
from scp_node.imaging.dicom_layout import PixelFormat
from scp_node.imaging.errors import ImagingError


class UnsupportedPixels(ImagingError):
    """Pixel data the codecs cannot take (e.g. 1 or 32 bits allocated): store it verbatim."""


@dataclass(frozen=True)
class SampleMapping:
    """How coded samples turn back into the file's words: word = encode(sample + offset)."""

    whole_words: bool  # True: samples are the raw words, offset 0
    offset: int

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)


def check_codable(fmt: PixelFormat) -> None:
    if fmt.bits_allocated not in (8, 16):
        raise UnsupportedPixels(f"{fmt.bits_allocated} bits allocated")
    if fmt.samples not in (1, 3):
        raise UnsupportedPixels(f"{fmt.samples} samples per pixel")
    if not 1 <= fmt.bits_stored <= fmt.bits_allocated:
        raise UnsupportedPixels(f"bits stored {fmt.bits_stored} of {fmt.bits_allocated}")


def words_from_native(value: bytes, fmt: PixelFormat, little_endian: bool) -> np.ndarray:
    """The native pixel words as an array (frames, rows, columns, samples)."""
    check_codable(fmt)
    dtype = np.dtype(np.uint8) if fmt.bits_allocated == 8 else np.dtype("<u2" if little_endian else ">u2")
    flat = np.frombuffer(value, dtype, count=fmt.sample_count).astype(dtype.newbyteorder("="))
    if fmt.planar and fmt.samples > 1:
        return flat.reshape(fmt.frames, fmt.samples, fmt.rows, fmt.columns).transpose(0, 2, 3, 1)
    return flat.reshape(fmt.frames, fmt.rows, fmt.columns, fmt.samples)


def native_from_words(words: np.ndarray, fmt: PixelFormat, little_endian: bool) -> bytes:
    if fmt.planar and fmt.samples > 1:
        words = words.transpose(0, 3, 1, 2)
    dtype = np.uint8 if fmt.bits_allocated == 8 else ("<u2" if little_endian else ">u2")
    return np.ascontiguousarray(words).astype(dtype).tobytes()


def values_from_words(words: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """Pixel values (int64) as Bits Stored and Pixel Representation define them."""
    values = words.astype(np.int64) & ((1 << fmt.bits_stored) - 1)
    if fmt.signed:
        values = np.where(values >= 1 << (fmt.bits_stored - 1), values - (1 << fmt.bits_stored), values)
    return values


def words_from_values(values: np.ndarray, fmt: PixelFormat) -> np.ndarray:
    """Two's-complement words of `bits_allocated` bits: the canonical encoding of the values."""
    dtype = np.uint8 if fmt.bits_allocated == 8 else np.uint16
    return (values & ((1 << fmt.bits_allocated) - 1)).astype(dtype)


def samples_from_words(
    words: np.ndarray, fmt: PixelFormat
) -> tuple[np.ndarray, SampleMapping, ImageDescription]:
    values = values_from_words(words, fmt)
    if np.array_equal(words_from_values(values, fmt), words):
        offset = int(values.min()) if values.size else 0
        samples = values - offset
        mapping = SampleMapping(whole_words=False, offset=offset)
    else:
        samples = words.astype(np.int64)
        mapping = SampleMapping(whole_words=True, offset=0)
    bit_depth = max(1, int(samples.max()).bit_length()) if samples.size else 1
    desc = ImageDescription(fmt.frames, fmt.rows, fmt.columns, fmt.samples, bit_depth)
    return samples.astype(desc.dtype), mapping, desc


def words_from_samples(samples: np.ndarray, mapping: SampleMapping, fmt: PixelFormat) -> np.ndarray:
    if mapping.whole_words:
        return samples.astype(np.uint8 if fmt.bits_allocated == 8 else np.uint16)
    return words_from_values(samples.astype(np.int64) + mapping.offset, fmt)


def full_range_samples(
    words: np.ndarray, fmt: PixelFormat
) -> tuple[np.ndarray, SampleMapping, ImageDescription]:
    """Samples over the whole range Bits Stored allows (signed data offset by half of it).

    A lossy codec may return any value in its range; with the data's own minimum as offset
    (`samples_from_words`) such a value could fall outside what Bits Stored can hold, and
    wrap. Here every codec value maps to a representable pixel value.
    """
    values = values_from_words(words, fmt)
    if not np.array_equal(words_from_values(values, fmt), words):
        raise UnsupportedPixels("pixel words carry bits above Bits Stored")
    offset = -(1 << (fmt.bits_stored - 1)) if fmt.signed else 0
    desc = ImageDescription(fmt.frames, fmt.rows, fmt.columns, fmt.samples, fmt.bits_stored)
    return (values - offset).astype(desc.dtype), SampleMapping(whole_words=False, offset=offset), desc

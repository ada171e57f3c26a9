"""The codec interface every storage codec implements.

Codecs see pixels only as unsigned integer arrays of shape (frames, rows, columns, samples)
whose values fit in `ImageDescription.bit_depth` bits; mapping DICOM's signed and padded words
to that form is `scp_node.imaging.pixels`' job, so a codec never deals with DICOM encoding rules.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from scp_node.imaging.errors import ImagingError

if TYPE_CHECKING:
    from scp_node.imaging.codecs.settings import CodecSettings


class CodecUnavailable(ImagingError):
    """The codec cannot run here (missing library or weights); policy must not select it."""


class CodecError(ImagingError):
    """The codec cannot code these pixels, or its payload does not decode (damaged, or made
    by another codec): the wrapped library's own error, translated."""


@dataclass(frozen=True)
class ImageDescription:
    frames: int
    rows: int
    columns: int
    samples: int
    bit_depth: int  # values are < 2**bit_depth; the array dtype is uint8 or uint16

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.frames, self.rows, self.columns, self.samples)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8 if self.bit_depth <= 8 else np.uint16)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class Codec(ABC):
    """A lossless (or declared lossy) image codec.

    `version` is stored with every blob: bump it whenever the bitstream changes so old blobs
    are decoded by code that understands them (or refused clearly).
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    lossless: bool = True  # class default; a codec whose options decide it sets it per instance
    available: ClassVar[bool] = True  # False where its library is missing
    # Series mode: > 0 where encode and decode take `reference=`, the samples of a neighbouring
    # slice (rows, columns, samples) to code against; the longest chain of slices so coded.
    series_depth: int = 0

    def __init__(self, **options: Any) -> None:
        self.options = options

    @property
    def lossy_method(self) -> str:
        """Lossy Image Compression Method (CS, at most 16 characters) for copies it makes."""
        return self.name.upper()[:16]

    @classmethod
    def unavailable_reason(cls, config: CodecSettings) -> str | None:
        """Why this codec cannot run here with this site's settings, or None if it can."""
        return None if cls.available else f"codec {cls.name!r} is not available on this machine"

    @classmethod
    def from_config(cls, config: CodecSettings, **options: Any) -> Codec:
        """Codecs that need site settings (model weights) take them from `config` here."""
        return cls(**options)

    @abstractmethod
    def encode(self, pixels: np.ndarray, desc: ImageDescription) -> bytes: ...

    def encode_and_reconstruct(self, pixels: np.ndarray, desc: ImageDescription) -> tuple[bytes, np.ndarray]:
        """The payload and the pixels its decode gives (a lossy copy's pixels). A codec whose
        encoder already computes them overrides this to save a decode."""
        payload = self.encode(pixels, desc)
        return payload, self.decode(payload, desc)

    @abstractmethod
    def decode(self, payload: bytes, desc: ImageDescription) -> np.ndarray: ...

    def uses_reference(self, payload: bytes) -> bool:
        """Whether `payload` decodes only with the reference slice it was coded against."""
        return False


class FrameCodec(Codec):
    """A codec that codes every frame on its own, as the standard image codecs do.

    The payload is a frame count, one length per frame, then the frames' bitstreams.
    """

    # What the wrapped library raises on data it refuses; raised on as CodecError.
    library_errors: ClassVar[tuple[type[Exception], ...]] = ()
    # The DICOM transfer syntax whose Pixel Data fragments are this codec's frame bitstreams
    # (where the samples are the pixel words themselves); None where no syntax takes them.
    dicom_syntax: ClassVar[str | None] = None

    def frame_precision(self, stream: bytes, desc: ImageDescription) -> int:
        """Bits per sample that a decoder of `stream` gives (its array's width follows)."""
        return desc.bit_depth

    @abstractmethod
    def encode_frame(self, frame: np.ndarray, bit_depth: int) -> bytes:
        """Code one (rows, columns, samples) frame."""

    @abstractmethod
    def decode_frame(self, data: bytes, desc: ImageDescription) -> np.ndarray: ...

    def encode(self, pixels: np.ndarray, desc: ImageDescription) -> bytes:
        with self._translated_errors("encode"):
            streams = [self.encode_frame(frame, desc.bit_depth) for frame in pixels]
        header = struct.pack(f"<I{len(streams)}Q", len(streams), *map(len, streams))
        return header + b"".join(streams)

    def decode(self, payload: bytes, desc: ImageDescription) -> np.ndarray:
        # A damaged payload shows as a bad frame table or frames of the wrong size, too.
        with self._translated_errors("decode", struct.error, ValueError):
            out = np.empty(desc.shape, desc.dtype)
            for index, stream in enumerate(frame_bitstreams(payload)):
                out[index] = self.decode_frame(stream, desc).reshape(desc.rows, desc.columns, desc.samples)
        return out

    @contextmanager
    def _translated_errors(self, action: str, *more: type[Exception]) -> Iterator[None]:
        try:
            yield
        except (*self.library_errors, *more) as exc:
            raise CodecError(f"{self.name} cannot {action}: {exc}") from exc


def frame_bitstreams(payload: bytes) -> list[bytes]:
    """The frames' bitstreams of a FrameCodec payload; struct.error where its table is damaged."""
    (count,) = struct.unpack_from("<I", payload)
    lengths = struct.unpack_from(f"<{count}Q", payload, 4)
    offset, streams = 4 + 8 * count, []
    for length in lengths:
        streams.append(payload[offset : offset + length])
        offset += length
    return streams


def squeeze_samples(frame: np.ndarray) -> np.ndarray:
    """Image libraries want (rows, columns) for one sample and (rows, columns, 3) for colour."""
    return frame[..., 0] if frame.shape[-1] == 1 else frame

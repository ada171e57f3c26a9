"""The downscale / upscale codec scheme, shared by every upscaler (exact bicubic, the LDM).

Payload: MAGIC, scale, delta (-1: none), the upscaler's recipe (what decode needs to repeat
the prediction: seed, steps, weights digest...), the SHA-256 of the prediction, the small image
(JPEG XL lossless, the best standard lossless codec here), then in bounded mode the residual
indices.

Decode recomputes the prediction and refuses (PredictionMismatch) when its digest differs
from the encoder's, so a decode returns exactly the pixels the encoder verified, or nothing.

Bounded mode (delta >= 0): with r = original - prediction, the index q = floor((r + delta) /
(2 delta + 1)) is stored losslessly, and decode returns prediction + q (2 delta + 1), clipped to
the sample range. Then |error| <= delta for every sample; clipping only moves a value towards
the range that holds the original. delta 0 is lossless. The bound holds only if decode
computes exactly the encoder's prediction, so an upscaler must give the same integers on every
machine (bicubic: integer arithmetic), or the digest check turns a difference into a refusal.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from abc import abstractmethod
from typing import Any

import numpy as np

from scp_node.imaging.codecs.base import Codec, CodecError, ImageDescription
from scp_node.imaging.codecs.standard import JpegXlCodec
from scp_node.imaging.codecs.upscale.resample import downscale

MAGIC = b"UPSCALE2"
_HEADER = "<BiIH"  # scale, delta, small image length, recipe length
SCALES = (2, 4)
# Residual index planes: JPEG XL when they fit its 16-bit samples, else zlib of int32.
JPEGXL_INDICES, ZLIB_INDICES = 0, 1


class PredictionMismatch(CodecError):
    """This machine upscales differently from the encoder's: the decode would not return the
    pixels the encoder verified (and in bounded mode could exceed delta), so it is refused."""


class UpscaleCodec(Codec):
    """Options: `scale` (2 or 4, default 2), `delta` (absent: the paper's plain lossy scheme;
    an integer >= 0: every sample within delta of the original)."""

    version = 2
    lossless = False  # with the default options; an instance with delta 0 is lossless

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.scale = int(options.get("scale", 2))
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}, not {self.scale}")
        delta = options.get("delta")
        self.delta = None if delta is None else int(delta)
        if self.delta is not None and self.delta < 0:
            raise ValueError(f"delta must be >= 0, not {self.delta}")
        self.lossless = self.delta == 0
        self._store = JpegXlCodec()

    @property
    def lossy_method(self) -> str:
        """No DICOM defined term covers this scheme, e.g. LDM_X2 or BICUBIC_X4_D2."""
        bound = "" if self.delta is None else f"_D{self.delta}"
        return f"{self.name.upper()}_X{self.scale}{bound}"[:16]

    @abstractmethod
    def recipe(self, pixels: np.ndarray) -> bytes:
        """What decode needs, besides the small image, to repeat this encoder's prediction."""

    @abstractmethod
    def upscale(self, small: np.ndarray, max_value: int, recipe: bytes) -> np.ndarray:
        """(rows / scale, columns / scale) int64 -> (rows, columns) int64 in [0, max_value]."""

    def encode(self, pixels: np.ndarray, desc: ImageDescription) -> bytes:
        return self.encode_and_reconstruct(pixels, desc)[0]

    def encode_and_reconstruct(self, pixels: np.ndarray, desc: ImageDescription) -> tuple[bytes, np.ndarray]:
        """The encoder computes the prediction (and the residual) anyway: the decoded pixels come
        without running the upscaler a second time, which for the LDM is a whole diffusion."""
        max_value = (1 << desc.bit_depth) - 1
        small = self._downscaled(pixels, desc)
        small_desc = ImageDescription(
            desc.frames, small.shape[1], small.shape[2], desc.samples, desc.bit_depth
        )
        small_payload = self._store.encode(small.astype(desc.dtype), small_desc)
        recipe = self.recipe(pixels)
        prediction = self._predict(small, desc, recipe)
        delta = -1 if self.delta is None else self.delta
        header = MAGIC + struct.pack(_HEADER, self.scale, delta, len(small_payload), len(recipe))
        payload = header + recipe + _digest(prediction) + small_payload
        if self.delta is None:
            return payload, prediction.astype(desc.dtype)
        step = 2 * self.delta + 1
        indices = np.floor_divide(pixels.astype(np.int64) - prediction + self.delta, step)
        reconstruction = _reconstruct(prediction, indices, step, max_value)
        if np.abs(reconstruction - pixels).max(initial=0) > self.delta:
            raise CodecError(f"{self.name}: reconstruction exceeds delta {self.delta}")
        return payload + _pack_indices(indices, self._store), reconstruction.astype(desc.dtype)

    def decode(self, payload: bytes, desc: ImageDescription) -> np.ndarray:
        if not payload.startswith(MAGIC):
            raise CodecError("not an upscale-codec payload")
        scale, delta, small_length, recipe_length = struct.unpack_from(_HEADER, payload, len(MAGIC))
        if (scale, None if delta < 0 else delta) != (self.scale, self.delta):
            raise CodecError(f"payload is scale {scale} delta {delta}, codec is {self.scale} {self.delta}")
        offset = len(MAGIC) + struct.calcsize(_HEADER)
        recipe = payload[offset : offset + recipe_length]
        expected_digest = payload[offset + recipe_length : offset + recipe_length + 32]
        offset += recipe_length + 32
        small_shape = (desc.frames, -(-desc.rows // scale), -(-desc.columns // scale), desc.samples)
        small_desc = ImageDescription(*small_shape, bit_depth=desc.bit_depth)
        small = self._store.decode(payload[offset : offset + small_length], small_desc).astype(np.int64)
        prediction = self._predict(small, desc, recipe)
        if _digest(prediction) != expected_digest:
            raise PredictionMismatch(
                f"{self.name}: this machine's upscaled prediction differs from the encoder's; "
                "decode it where it was encoded (same device class and software)"
            )
        if self.delta is None:
            return prediction.astype(desc.dtype)
        indices = _unpack_indices(payload[offset + small_length :], desc.shape, self._store)
        step = 2 * self.delta + 1
        return _reconstruct(prediction, indices, step, (1 << desc.bit_depth) - 1).astype(desc.dtype)

    def _downscaled(self, pixels: np.ndarray, desc: ImageDescription) -> np.ndarray:
        """Every frame and sample plane, padded to a multiple of the scale and downscaled."""
        max_value = (1 << desc.bit_depth) - 1
        rows, columns = -(-desc.rows // self.scale), -(-desc.columns // self.scale)
        small = np.empty((desc.frames, rows, columns, desc.samples), np.int64)
        for f in range(desc.frames):
            for s in range(desc.samples):
                plane = _padded(pixels[f, :, :, s], self.scale)
                small[f, :, :, s] = downscale(plane, self.scale, max_value)
        return small

    def _predict(self, small: np.ndarray, desc: ImageDescription, recipe: bytes) -> np.ndarray:
        max_value = (1 << desc.bit_depth) - 1
        out = np.empty(desc.shape, np.int64)
        for f in range(desc.frames):
            for s in range(desc.samples):
                plane = self.upscale(small[f, :, :, s], max_value, recipe)
                out[f, :, :, s] = plane[: desc.rows, : desc.columns]
        return out


def _padded(plane: np.ndarray, scale: int) -> np.ndarray:
    rows, columns = plane.shape
    return np.pad(plane, ((0, -rows % scale), (0, -columns % scale)), mode="edge")


def _digest(prediction: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(prediction, "<i8").tobytes()).digest()


def _reconstruct(prediction: np.ndarray, indices: np.ndarray, step: int, max_value: int) -> np.ndarray:
    return np.clip(prediction + indices * step, 0, max_value)


def _pack_indices(indices: np.ndarray, store: JpegXlCodec) -> bytes:
    lowest = int(indices.min(initial=0))
    unsigned = indices - lowest
    bits = max(1, int(unsigned.max(initial=0)).bit_length())
    header = struct.pack("<q", lowest)
    if bits <= 16:
        desc = ImageDescription(*indices.shape, bit_depth=bits)
        return header + bytes([JPEGXL_INDICES]) + store.encode(unsigned.astype(desc.dtype), desc)
    return header + bytes([ZLIB_INDICES]) + zlib.compress(unsigned.astype("<i4").tobytes(), 9)


def _unpack_indices(data: bytes, shape: tuple[int, int, int, int], store: JpegXlCodec) -> np.ndarray:
    (lowest,) = struct.unpack_from("<q", data)
    kind, body = data[8], data[9:]
    if kind == JPEGXL_INDICES:
        unsigned = store.decode(body, ImageDescription(*shape, bit_depth=16)).astype(np.int64)
    else:
        unsigned = np.frombuffer(zlib.decompress(body), "<i4").astype(np.int64).reshape(shape)
    return unsigned + lowest

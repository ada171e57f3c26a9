"""The coarsest pyramid level of a tile, coded by whichever standard codec makes it smallest.

A small, smooth image is what JPEG XL and JPEG-LS do well, and a learned stage below the
coarsest gains nothing there (the issue's prototype measured 1.3 % saved by coding the
half-resolution level with JPEG XL). The codec tries the candidates on each level it could
stop at and keeps the cheapest; raw samples are the fallback that always works, for levels too
small or too odd for a library.
"""

from __future__ import annotations

import numpy as np

from scp_node.imaging.codecs.base import ImageDescription
from scp_node.imaging.codecs.standard import JpegLsCodec, JpegXlCodec

RAW, JPEG_XL, JPEG_LS = 0, 1, 2


def _raw_encode(level: np.ndarray, bit_depth: int) -> bytes:
    return level.astype(np.uint8 if bit_depth <= 8 else "<u2").tobytes()


def _raw_decode(data: bytes, rows: int, columns: int, bit_depth: int) -> np.ndarray:
    values = np.frombuffer(data, np.uint8 if bit_depth <= 8 else "<u2")
    if values.size != rows * columns:
        raise ValueError(f"raw level holds {values.size} samples, {rows * columns} expected")
    return values.reshape(rows, columns)


def encode(level: np.ndarray, bit_depth: int) -> tuple[int, bytes]:
    """(codec id, bytes) of the smallest lossless coding of a (rows, columns) level."""
    frame = np.ascontiguousarray(level.astype(np.uint8 if bit_depth <= 8 else np.uint16)[:, :, None])
    candidates = [(RAW, _raw_encode(level, bit_depth))]
    for codec_id, codec in ((JPEG_XL, JpegXlCodec(effort=7)), (JPEG_LS, JpegLsCodec())):
        try:
            candidates.append((codec_id, codec.encode_frame(frame, bit_depth)))
        except Exception:
            continue
    return min(candidates, key=lambda candidate: len(candidate[1]))


def decode(codec_id: int, data: bytes, rows: int, columns: int, bit_depth: int) -> np.ndarray:
    """The (rows, columns) level as int64. Raises ValueError for anything that does not decode
    to a level of that shape (the codec reports it as a bad payload)."""
    if codec_id == RAW:
        level = _raw_decode(data, rows, columns, bit_depth)
    elif codec_id in (JPEG_XL, JPEG_LS):
        codec = JpegXlCodec() if codec_id == JPEG_XL else JpegLsCodec()
        try:
            level = np.asarray(codec.decode_frame(data, ImageDescription(1, rows, columns, 1, bit_depth)))
        except Exception as exc:
            raise ValueError(f"coarsest level does not decode: {exc}") from exc
    else:
        raise ValueError(f"unknown coarsest-level codec {codec_id}")
    if level.shape[:2] != (rows, columns):
        raise ValueError(f"coarsest level is {level.shape}, ({rows}, {columns}) expected")
    return level.reshape(rows, columns).astype(np.int64)

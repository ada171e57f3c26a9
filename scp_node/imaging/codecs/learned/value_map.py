"""Images that use few of their bit depth's values are coded as indices into their sorted values.

Digitised film mammograms hold about 2,500 distinct values spread over 16 bits (12-bit scanner
values scaled by about 21.8), and padded CT leaves a wide gap between the padding value and the
tissue. A predictor in pixel units then sees steps of 22 where the image has steps of 1, and
pays for impossible values between them; JPEG XL's palette transforms do not. Mapping each
value to its rank among the image's values (a monotone map, so smooth stays smooth) and sending
the value table once gives the model the image's real grid. The table is the sorted values'
differences, deflated.
"""

from __future__ import annotations

import zlib

import numpy as np


def build(pixels: np.ndarray, bit_depth: int) -> np.ndarray | None:
    """The sorted distinct values, where ranks need fewer bits than the values; else None."""
    values = np.unique(pixels).astype(np.int64)
    if rank_bits(values) >= bit_depth:
        return None
    return values


def rank_bits(values: np.ndarray) -> int:
    return max(1, (len(values) - 1).bit_length())


def to_bytes(values: np.ndarray) -> bytes:
    return zlib.compress(np.diff(values, prepend=0).astype("<u2").tobytes(), 9)


def from_bytes(data: bytes, bit_depth: int) -> np.ndarray:
    """The value table, or ValueError where it is not a strictly increasing table of values."""
    try:
        differences = np.frombuffer(zlib.decompress(data), "<u2").astype(np.int64)
    except zlib.error as exc:
        raise ValueError(f"value table does not inflate: {exc}") from exc
    values = np.cumsum(differences)
    if not len(values) or (differences[1:] <= 0).any() or values[-1] >= 1 << bit_depth:
        raise ValueError("value table is not a strictly increasing table of sample values")
    return values


def ranks(pixels: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each pixel's rank (uint16); a value missing from the table (a reference slice's) takes
    the rank of the next larger one, the same on both sides of the coder. A lookup table over
    every possible value keeps a 4096 x 3328 mammogram's ranks at 2 bytes a pixel."""
    largest = max(int(pixels.max(initial=0)), int(values[-1]))
    lookup = np.minimum(np.searchsorted(values, np.arange(largest + 1)), len(values) - 1)
    return lookup.astype(np.uint16)[pixels]


def restore(ranks_: np.ndarray, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return values.astype(dtype)[np.minimum(ranks_, len(values) - 1)]

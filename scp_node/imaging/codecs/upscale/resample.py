"""Downscaling (encoder only) and exact integer bicubic upscaling (encoder and decoder).

The upscaled image is the prediction that the bounded-error residual corrects. Encoder and
decoder must compute it bit for bit alike on any machine. A float resampler may round
differently on another device, and then the guaranteed error bound would silently fail. So
upscaling is Keys' bicubic (a = -1/2) in integer arithmetic:
- At the x2 phases (+-1/4 pixel) its taps are exactly -9/128, 111/128, 29/128 and -3/128.
- Both separable passes accumulate in int64, and there is one rounding at the end.
Downscaling runs only in the encoder; its result is stored losslessly, so it may use torch's
anti-aliased float bicubic.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional

TAP_SHIFT = 7  # taps are integers / 2**7
# Output 2i+1 sits 1/4 pixel right of input i: taps on inputs i-1, i, i+1, i+2.
QUARTER_TAPS = (-9, 111, 29, -3)
# Output 2i sits 1/4 pixel left of input i: taps on inputs i-2, i-1, i, i+1 (the mirror).
THREE_QUARTER_TAPS = QUARTER_TAPS[::-1]


def downscale(plane: np.ndarray, factor: int, max_value: int) -> np.ndarray:
    """(rows, columns) samples -> (rows / factor, columns / factor) integer samples; sides must
    be multiples of `factor` (pad first)."""
    rows, columns = plane.shape
    image = torch.from_numpy(plane.astype(np.float64))[None, None]
    small = functional.interpolate(
        image, size=(rows // factor, columns // factor), mode="bicubic", antialias=True, align_corners=False
    )
    return np.clip(np.rint(small[0, 0].numpy()), 0, max_value).astype(np.int64)


def upscale(plane: np.ndarray, factor: int, max_value: int) -> np.ndarray:
    """Integer x2 bicubic, applied log2(factor) times; int64 in [0, max_value]."""
    result = plane.astype(np.int64)
    for _ in range(factor.bit_length() - 1):
        result = _upscale_twice(result, max_value)
    return result


def _upscale_twice(plane: np.ndarray, max_value: int) -> np.ndarray:
    wide = _upscale_axis(plane, axis=1)
    full = _upscale_axis(wide, axis=0)
    half = 1 << (2 * TAP_SHIFT - 1)
    return np.clip((full + half) >> (2 * TAP_SHIFT), 0, max_value)


def _upscale_axis(values: np.ndarray, axis: int) -> np.ndarray:
    """Twice the samples along `axis`, scaled by 2**TAP_SHIFT (edges replicated)."""
    moved = np.moveaxis(values, axis, 0)
    length = moved.shape[0]
    padded = np.pad(moved, [(2, 2)] + [(0, 0)] * (moved.ndim - 1), mode="edge")

    def tap(offset: int) -> np.ndarray:  # input i + offset for every i, from the padded array
        return padded[2 + offset : 2 + offset + length]

    even = sum(w * tap(o) for w, o in zip(THREE_QUARTER_TAPS, (-2, -1, 0, 1), strict=True))
    odd = sum(w * tap(o) for w, o in zip(QUARTER_TAPS, (-1, 0, 1, 2), strict=True))
    out = np.empty((2 * length, *moved.shape[1:]), np.int64)
    out[0::2], out[1::2] = even, odd
    return np.moveaxis(out, 0, axis)

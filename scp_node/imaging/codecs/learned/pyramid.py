"""The exact integer image pyramid and the deterministic quantities the predictors build on.

Level s + 1 is the floor average of each 2x2 block of level s. Given level s + 1, three of a
block's four sub-pixels determine the fourth up to the remainder of the block sum modulo 4:
d = 4 * coarse + r - a - b - c with r in 0..3. So a level is coded as three sub-pixels under the
model and one two-bit-at-most remainder, with nothing lost and no side information.

Everything here is int64 arithmetic (shifts, sums, integer divisions, comparisons against
tables computed with `decimal`), so encoder and decoder compute the same baselines, content
scales and network inputs on any device and thread count. Tensors are (N, 1, H, W) levels or
(N, 4, H/2, W/2) sub-pixels in the order top-left, top-right, bottom-left, bottom-right
(pixel_unshuffle's order).
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from functools import cache

import torch
from torch.nn import functional

from scp_node.imaging.codecs.learned.fixed_point import SCALE_LEVELS, SCALE_MIN_LOG2, SCALE_STEPS_PER_OCTAVE
from scp_node.imaging.codecs.learned.layers import ACTIVATION_LIMIT, ACTIVATION_STEPS

SUB_PIXELS = 4
# The content scale's noise floor: sigma starts at (activity + ACTIVITY_FLOOR) / 4, so a flat
# region of a noisy image does not start at the smallest scale the coder has.
ACTIVITY_FLOOR = 2


def build(image: torch.Tensor, scales: int) -> list[torch.Tensor]:
    """[level 0 = image, level 1, ..., level `scales`]; H and W multiples of 2**scales."""
    levels = [image]
    for _ in range(scales):
        blocks = sub_pixels(levels[-1])
        levels.append(torch.div(blocks.sum(dim=1, keepdim=True), SUB_PIXELS, rounding_mode="floor"))
    return levels


def sub_pixels(level: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 4, H/2, W/2): each 2x2 block's four values as channels."""
    return functional.pixel_unshuffle(level, 2)


def merge(sub: torch.Tensor) -> torch.Tensor:
    """The inverse of `sub_pixels`."""
    return functional.pixel_shuffle(sub, 2)


def last_sub_pixel_base(coarse: torch.Tensor, first_three: torch.Tensor) -> torch.Tensor:
    """The smallest value the fourth sub-pixel can take: 4 * coarse - (a + b + c)."""
    return SUB_PIXELS * coarse - first_three.sum(dim=1, keepdim=True)


def shifted(level: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """level[y + rows, x + columns] with edges replicated."""
    height, width = level.shape[-2:]
    row_index = (torch.arange(height, device=level.device) + rows).clamp(0, height - 1)
    column_index = (torch.arange(width, device=level.device) + columns).clamp(0, width - 1)
    return level.index_select(-2, row_index).index_select(-1, column_index)


def baseline(coarse: torch.Tensor) -> torch.Tensor:
    """(N, 4, h, w): bilinear interpolation of the coarser level at each sub-pixel's centre,
    rounded: (9 * own + 3 * vertical + 3 * horizontal + 1 * diagonal neighbour + 8) // 16."""
    planes = []
    for vertical in (-1, 1):
        for horizontal in (-1, 1):
            total = (
                9 * coarse
                + 3 * shifted(coarse, vertical, 0)
                + 3 * shifted(coarse, 0, horizontal)
                + shifted(coarse, vertical, horizontal)
            )
            planes.append(torch.div(total + 8, 16, rounding_mode="floor"))
    return torch.cat(planes, dim=1)


def activity(coarse: torch.Tensor) -> torch.Tensor:
    """|central difference| across plus down the coarser level: how busy the block is."""
    across = shifted(coarse, 0, 1) - shifted(coarse, 0, -1)
    down = shifted(coarse, 1, 0) - shifted(coarse, -1, 0)
    return across.abs() + down.abs()


@cache
def _log_thresholds() -> torch.Tensor:
    """int64: ceil(2 ** ((s - 1/2) / SCALE_STEPS_PER_OCTAVE)) for s in 1..SCALE_LEVELS - 1, so
    that an integer a has round(8 * log2 a) = the number of thresholds <= a."""
    with localcontext() as context:
        context.prec = 50
        values = []
        for step in range(1, SCALE_LEVELS):
            exponent = (Decimal(step) - Decimal(1) / 2) / SCALE_STEPS_PER_OCTAVE
            values.append(int((exponent * Decimal(2).ln()).exp().to_integral_value(rounding="ROUND_CEILING")))
    return torch.tensor(values, dtype=torch.int64)


def content_scale_index(coarse: torch.Tensor) -> torch.Tensor:
    """(N, 1, h, w) scale-table index of sigma = (activity + ACTIVITY_FLOOR) / 4, rounded in
    the log domain, exactly: the scale every prediction starts from (the network adds to it)."""
    thresholds = _log_thresholds().to(coarse.device)
    index = torch.bucketize(activity(coarse) + ACTIVITY_FLOOR, thresholds, right=True)
    # sigma_s = 2 ** (s / 8 + SCALE_MIN_LOG2); sigma = a / 4 = 2 ** (log2 a - 2).
    return (index + SCALE_STEPS_PER_OCTAVE * (-2 - SCALE_MIN_LOG2)).clamp(0, SCALE_LEVELS - 1)


def norm_shift(coarse: torch.Tensor) -> torch.Tensor:
    """(N, 1, 1, 1): k such that 2**k > the median activity of each sample of the batch; the
    network sees differences in units of 2**k / ACTIVATION_STEPS and predicts offsets in them,
    so one model serves flat and busy images, 8 and 16 bits alike."""
    median = activity(coarse).flatten(1).median(dim=1).values
    powers = 1 << torch.arange(20, device=coarse.device)
    return (median[:, None] >= powers[None, :]).sum(dim=1).view(-1, 1, 1, 1)


def quantized_input(difference: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Integer differences -> network activations round(16 * d / 2**shift), clamped, as float32."""
    scaled = difference * ACTIVATION_STEPS
    half = (1 << shift) >> 1
    rounded = torch.div(scaled + half, 1 << shift, rounding_mode="floor")
    return rounded.clamp(-ACTIVATION_LIMIT, ACTIVATION_LIMIT).to(torch.float32)


def local_detail(coarse: torch.Tensor) -> torch.Tensor:
    """The coarser level minus the floor mean of its 3x3 neighbourhood (a curvature cue)."""
    total = sum(shifted(coarse, rows, columns) for rows in (-1, 0, 1) for columns in (-1, 0, 1))
    return coarse - torch.div(total, 9, rounding_mode="floor")

"""Arithmetic coding of integer values under a discretized Gaussian mixture, with CDFs built
only from integers so that encoder and decoder agree bit for bit on any device.

The network predicts, per value, K Gaussian components as integers (fixed-point means, an
index into a log-spaced scale table, a logit index); `mixture_from_indices` turns the logits
into weights summing to WEIGHT_TOTAL. Everything here is integer arithmetic:

- Each value x is split around the DOMINANT component's mean c into a coarse bin j and low
  bits: x - c = j * 2**b + low, with bins no wider than that component's sigma / 4. The low
  bits go into a raw bit stream; torchac codes j over 2 * HALF_WINDOW bins (+-8 dominant
  sigmas) plus one escape symbol. Sizing the window by the widest component instead (the first
  version) made a sigma=4 component with a 0.8 %-weight sigma=256 one cost 7 bits a value
  against 4.07 ideal: every value paid raw low bits for the rare wide one. Here the wide
  component's mass outside the window goes to the escape symbol, which costs its probability
  plus `value_bits` raw bits, and only where it happens. torchac's alphabet stays small (its
  CDFs are 16-bit and N x L in memory; a 65536-symbol alphabet would decode wrong silently).
- Bin masses come from a table of Phi (fixed_point.py) indexed by (edge - mean) / sigma in
  fixed point; every symbol gets at least 1/2**16, the escape takes the tails.
- `encode_remainder` codes a value known to lie in [base, base + 3] (the last sub-pixel of a
  pyramid block) as one of four symbols under the same mixture.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from scp_node.imaging.codecs.learned.fixed_point import (
    INVERSE_SHIFT,
    LOGIT_LIMIT,
    MEAN_FRAC_BITS,
    PHI_BITS,
    SCALE_LEVELS,
    Z_MAX,
    Z_STEPS,
    exp2_table,
    inverse_scale_table,
    low_bits_of_scale,
    phi_table,
)

HALF_WINDOW = 32  # bins each side of the centre; 2 * 32 bins + escape = 65 symbols
WEIGHT_BITS = 8
WEIGHT_TOTAL = 2**WEIGHT_BITS
CDF_TOTAL = 2**16  # torchac's precision


@dataclass(frozen=True)
class Mixture:
    """Integer mixture parameters, each (N, K) int64."""

    mean: torch.Tensor  # value * 2**MEAN_FRAC_BITS
    scale_index: torch.Tensor  # in [0, SCALE_LEVELS)
    weight: torch.Tensor  # >= 0, rows sum to WEIGHT_TOTAL


def mixture_from_indices(mean: torch.Tensor, scale_index: torch.Tensor, logit_index: torch.Tensor) -> Mixture:
    """Integer network outputs (N, K) -> a Mixture, with integer arithmetic only.

    mean: fixed point (MEAN_FRAC_BITS); scale_index: into the scale table (clamped here);
    logit_index: weights are proportional to 2 ** (logit_index / LOGIT_STEPS). Weights are
    rounded to WEIGHT_TOTAL by largest remainder (ties by component order), each at least 1
    so that no component vanishes.
    """
    logit_index = logit_index.clamp(-LOGIT_LIMIT, LOGIT_LIMIT)
    relative = exp2_table().to(mean.device)[logit_index.amax(dim=-1, keepdim=True) - logit_index]
    spare = WEIGHT_TOTAL - relative.shape[-1]
    total = relative.sum(dim=-1, keepdim=True)
    whole = torch.div(relative * spare, total, rounding_mode="floor")
    remainder = relative * spare - whole * total
    missing = spare - whole.sum(dim=-1, keepdim=True)
    order = torch.argsort(remainder, dim=-1, descending=True, stable=True)
    bonus = (torch.arange(relative.shape[-1], device=mean.device) < missing).long()
    whole.scatter_add_(-1, order, bonus)
    return Mixture(mean.long(), scale_index.long().clamp(0, SCALE_LEVELS - 1), whole + 1)


def half_window(value_bits: int) -> int:
    """Bins each side of the centre: HALF_WINDOW, or fewer where the values have fewer levels
    (4-bit auxiliary symbols need 16: a 65-symbol CDF would cost twice the work)."""
    return min(HALF_WINDOW, 1 << value_bits)


def _centre_and_low_bits(mixture: Mixture, half: int, max_value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer centre (the dominant component's mean, rounded down, within [0, max_value]) and
    low-bit count (bins within sigma / 4 of the dominant component).

    Two caps: bins never need to be wider than the window needs to span the whole range, and
    near an end value they are at most as wide as the room to that end: the bin holding the
    end value then starts there, so its low bits do not spread a likely end value over
    impossible positions.
    """
    dominant = torch.argmax(mixture.weight, dim=-1, keepdim=True)  # first of equals: deterministic
    dominant_mean = torch.gather(mixture.mean, -1, dominant).squeeze(-1)
    centre = (dominant_mean >> MEAN_FRAC_BITS).clamp(0, max_value)
    low_bits = low_bits_of_scale(torch.gather(mixture.scale_index, -1, dominant).squeeze(-1))
    doublings = torch.arange(17, device=centre.device)
    room = torch.minimum(centre, max_value - centre) + 1
    room_cap = ((1 << doublings)[None, :] <= room[:, None]).sum(dim=-1) - 1  # floor(log2(room))
    range_cap = max(0, max_value.bit_length() - half.bit_length() + 1)
    return centre, torch.minimum(low_bits, room_cap.clamp(max=range_cap))


def _cdf(
    mixture: Mixture,
    centre: torch.Tensor,
    low_bits: torch.Tensor,
    half: int,
    max_value: int,
    with_escape: bool = True,
) -> torch.Tensor:
    """(N, 2 * half + 2) int16 CDF for torchac: bins -half..half-1 then the escape symbol.

    Edge e = centre + j * 2**b - 1/2 (in mean units) for j in -H..H; the mass below an edge is
    sum_k weight_k * Phi((edge - mean_k) / sigma_k) from the integer tables, except that edges
    at or below the first value count as 0 and edges above the last value as all the mass: the
    tails beyond [0, max_value] belong to the end values, as in the training loss
    (likelihood.py). Bins are differences of masses, the escape takes what lies outside the
    window (with_escape=False: nothing lies outside, and the bins share all the mass); every
    symbol gets at least 1/2**16.
    The loop is C++ (cdf_backend.cpp): in torch it would move (N, K, bins) int64 temporaries
    through memory and take most of the coding time.
    """
    inverse = inverse_scale_table()[mixture.scale_index.cpu()]
    return _cdf_backend().build_cdf(
        mixture.mean.cpu(),
        inverse,
        mixture.weight.cpu(),
        centre.cpu(),
        low_bits.cpu(),
        phi_table(),
        half,
        max_value,
        MEAN_FRAC_BITS,
        INVERSE_SHIFT,
        Z_MAX * Z_STEPS,
        1 << (PHI_BITS + WEIGHT_BITS),
        CDF_TOTAL,
        with_escape,
    )


@cache
def _cdf_backend() -> ModuleType:
    """Compiled on first use, like torchac's own backend, and cached by torch."""
    from torch.utils.cpp_extension import load

    return load(
        name="scp_node_mixture_cdf",
        sources=[str(Path(__file__).with_name("cdf_backend.cpp"))],
        extra_cflags=["-O3", "-std=c++20"],
    )


def encode(values: torch.Tensor, mixture: Mixture, value_bits: int) -> tuple[bytes, bytes]:
    """values (N,) int64 in [0, 2**value_bits) -> (arithmetic-coded bins, raw bits)."""
    import torchac

    half, max_value = half_window(value_bits), (1 << value_bits) - 1
    centre, low_bits = _centre_and_low_bits(mixture, half, max_value)
    values = values.to(centre.device)
    bins = torch.div(values - centre, 1 << low_bits, rounding_mode="floor")
    low = values - centre - bins * (1 << low_bits)
    inside = (bins >= -half) & (bins < half)
    symbols = torch.where(inside, bins + half, torch.full_like(bins, 2 * half))  # 2 * half: escape
    coded = torchac.encode_int16_normalized_cdf(
        _cdf(mixture, centre, low_bits, half, max_value), symbols.to(torch.int16).cpu()
    )
    raw_values = torch.cat([low[inside], values[~inside]]).cpu()
    widths = torch.cat([low_bits[inside], torch.full_like(values[~inside], value_bits)]).cpu()
    return coded, _pack_bits(raw_values, widths)


def decode(coded: bytes, raw: bytes, mixture: Mixture, value_bits: int) -> torch.Tensor:
    """The inverse of `encode`, given the same integer mixture."""
    import torchac

    half, max_value = half_window(value_bits), (1 << value_bits) - 1
    centre, low_bits = _centre_and_low_bits(mixture, half, max_value)
    cdf = _cdf(mixture, centre, low_bits, half, max_value)
    symbols = torchac.decode_int16_normalized_cdf(cdf, coded).long().to(centre.device)
    inside = symbols != 2 * half
    widths = torch.cat([low_bits[inside], torch.full_like(symbols[~inside], value_bits)]).cpu()
    unpacked = _unpack_bits(raw, widths).to(centre.device)
    inside_count = int(inside.sum())
    values = torch.empty_like(symbols)
    values[inside] = (
        centre[inside] + (symbols[inside] - half) * (1 << low_bits[inside]) + unpacked[:inside_count]
    )
    values[~inside] = unpacked[inside_count:]
    return values


REMAINDERS = 4  # the last sub-pixel of a 2x2 block lies in [base, base + 3]


def _remainder_cdf(mixture: Mixture, base: torch.Tensor, value_bits: int) -> torch.Tensor:
    """CDFs over the four candidates base..base + 3, renormalised to carry all the mass (the
    mixture's mass outside them is impossible here, as in the loss): a window of half 2 centred
    on base + 2 with one-value bins, its escape symbol never used and given 1/2**16."""
    centre = base + REMAINDERS // 2
    return _cdf(mixture, centre, torch.zeros_like(centre), REMAINDERS // 2, (1 << value_bits) - 1, False)


def encode_remainder(values: torch.Tensor, base: torch.Tensor, mixture: Mixture, value_bits: int) -> bytes:
    """values (N,) each in [base, base + 3] -> arithmetic-coded remainders."""
    import torchac

    symbols = (values - base).to(torch.int16).cpu()
    return torchac.encode_int16_normalized_cdf(_remainder_cdf(mixture, base, value_bits), symbols)


def decode_remainder(coded: bytes, base: torch.Tensor, mixture: Mixture, value_bits: int) -> torch.Tensor:
    import torchac

    symbols = torchac.decode_int16_normalized_cdf(_remainder_cdf(mixture, base, value_bits), coded)
    return base + symbols.long().to(base.device).clamp(max=REMAINDERS - 1)


def _pack_bits(values: torch.Tensor, widths: torch.Tensor) -> bytes:
    """Concatenate each value's low `width` bits (most significant first)."""
    if values.numel() == 0:
        return b""
    bit_positions = torch.arange(16, -1, -1)
    bits = (values[:, None] >> bit_positions[None, :]) & 1  # (N, 17)
    keep = bit_positions[None, :] < widths[:, None]
    return np.packbits(bits[keep].numpy().astype(np.uint8)).tobytes()


def _unpack_bits(raw: bytes, widths: torch.Tensor) -> torch.Tensor:
    total = int(widths.sum())
    if widths.numel() == 0:
        return torch.zeros(0, dtype=torch.int64)
    bits = torch.from_numpy(np.unpackbits(np.frombuffer(raw, dtype=np.uint8))[:total].astype(np.int64))
    if bits.numel() != total:
        raise ValueError(f"raw bit stream holds {bits.numel()} bits, {total} expected")
    owner = torch.repeat_interleave(torch.arange(widths.numel()), widths)
    start = torch.cumsum(widths, 0) - widths
    position = torch.arange(total) - start[owner]  # 0 = most significant of that value
    weight = torch.ones(total, dtype=torch.int64) << (widths[owner] - 1 - position)
    return torch.zeros(widths.numel(), dtype=torch.int64).index_add_(0, owner, bits * weight)

"""Arithmetic coding of integer values under a discretized Gaussian mixture, with CDFs built
only from integers so that encoder and decoder agree bit for bit on any device.

The network predicts, per value, K Gaussian components (mean, scale, weight) as floats;
`quantize` turns them into integers (fixed-point means, an index into a log-spaced scale
table, weights summing to WEIGHT_TOTAL). Everything after that is integer arithmetic:

- Each value x is split around the mixture's centre c into a coarse bin j and low bits:
  x - c = j * 2**b + low, with b from the dominant component's scale (bins no wider than
  sigma / 4). The low bits go into a raw bit stream; torchac codes j over 2 * HALF_WINDOW bins
  plus one escape symbol. This keeps torchac's alphabet small (its CDFs are 16-bit and N x L in
  memory; a 65536-symbol alphabet would decode wrong without an error).
- Values outside the window (escape) are written raw, with `value_bits` bits, after the low bits.
- Bin masses come from a table of Phi (fixed_point.py) indexed by (edge - mean) / sigma in
  fixed point; every symbol gets at least 1/2**16, the escape takes the tails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workers.codecs.learned.fixed_point import (
    INVERSE_SHIFT,
    MEAN_FRAC_BITS,
    PHI_BITS,
    SCALE_LEVELS,
    SCALE_MIN_LOG2,
    SCALE_STEPS_PER_OCTAVE,
    Z_MAX,
    Z_STEPS,
    inverse_scale_table,
    low_bits_of_scale,
    phi_table,
    reach_table,
)

HALF_WINDOW = 64  # bins each side of the centre; 2 * 64 bins + escape = 129 symbols
WEIGHT_BITS = 8
WEIGHT_TOTAL = 2**WEIGHT_BITS
CDF_TOTAL = 2**16  # torchac's precision
ESCAPE = 2 * HALF_WINDOW


@dataclass(frozen=True)
class Mixture:
    """Integer mixture parameters, each (N, K) int64."""

    mean: torch.Tensor  # value * 2**MEAN_FRAC_BITS
    scale_index: torch.Tensor  # in [0, SCALE_LEVELS)
    weight: torch.Tensor  # >= 0, rows sum to WEIGHT_TOTAL


def quantize(mean: torch.Tensor, log_scale: torch.Tensor, logit: torch.Tensor) -> Mixture:
    """Float network outputs (N, K) -> integer parameters; the only step that sees floats."""
    fixed_mean = torch.round(mean.double() * 2**MEAN_FRAC_BITS).long()
    log2_scale = log_scale.double() / np.log(2.0)
    index = torch.round((log2_scale - SCALE_MIN_LOG2) * SCALE_STEPS_PER_OCTAVE).long()
    weights = torch.softmax(logit.double(), dim=-1)
    # Largest-remainder rounding keeps the sum exact; each weight at least 1 so no component vanishes.
    spare = WEIGHT_TOTAL - weights.shape[-1]
    raw = weights * spare
    whole = torch.floor(raw).long()
    missing = spare - whole.sum(dim=-1, keepdim=True)
    order = torch.argsort(raw - whole, dim=-1, descending=True, stable=True)
    bonus = (torch.arange(weights.shape[-1], device=mean.device) < missing).long()
    whole.scatter_add_(-1, order, bonus)
    return Mixture(fixed_mean, index.clamp(0, SCALE_LEVELS - 1), whole + 1)


def _centre_and_low_bits(mixture: Mixture) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer centre (weighted mean, rounded down) and low-bit count per value.

    Bins are as narrow as the dominant component allows (sigma / 4), but wide enough that the
    window of 2 * HALF_WINDOW bins reaches every component's mass (REACH_SIGMAS sigmas), so a
    spread-out mixture costs a few raw low bits instead of many escapes.
    """
    weighted = (mixture.mean * mixture.weight).sum(dim=-1)
    centre = torch.div(weighted, WEIGHT_TOTAL << MEAN_FRAC_BITS, rounding_mode="floor")
    dominant = torch.argmax(mixture.weight, dim=-1, keepdim=True)
    low_bits = low_bits_of_scale(torch.gather(mixture.scale_index, -1, dominant).squeeze(-1))
    distance = (mixture.mean - (centre[:, None] << MEAN_FRAC_BITS)).abs() >> MEAN_FRAC_BITS
    reach = (distance + 1 + reach_table().to(centre.device)[mixture.scale_index]).amax(dim=-1)
    doublings = torch.arange(17, device=centre.device)
    needed = ((HALF_WINDOW << doublings)[None, :] < reach[:, None]).sum(dim=-1)
    return centre, torch.maximum(low_bits, needed)


def _cdf(mixture: Mixture, centre: torch.Tensor, low_bits: torch.Tensor) -> torch.Tensor:
    """(N, ESCAPE + 2) int16 CDF for torchac: bins -H..H-1 then the escape symbol."""
    device = mixture.mean.device
    phi = phi_table().to(device)
    inverse = inverse_scale_table().to(device)[mixture.scale_index]  # (N, K)
    steps = torch.arange(-HALF_WINDOW, HALF_WINDOW + 1, device=device)  # bin edges, (E,)
    # Edge e = centre + j * 2**b - 1/2, in mean units (2**MEAN_FRAC_BITS per value).
    edge = ((centre[:, None] + steps[None, :] * (1 << low_bits)[:, None]) << MEAN_FRAC_BITS) - (
        1 << (MEAN_FRAC_BITS - 1)
    )
    offset = edge[:, None, :] - mixture.mean[:, :, None]  # (N, K, E)
    z = torch.div(offset * inverse[:, :, None], 1 << INVERSE_SHIFT, rounding_mode="floor")
    z_index = (z + Z_MAX * Z_STEPS).clamp(0, 2 * Z_MAX * Z_STEPS)
    mass_below = (phi[z_index] * mixture.weight[:, :, None]).sum(dim=1)  # (N, E), of 2**(16+8)
    total = 1 << (PHI_BITS + WEIGHT_BITS)
    bins = mass_below[:, 1:] - mass_below[:, :-1]
    escape = mass_below[:, :1] + (total - mass_below[:, -1:])
    masses = torch.cat([bins, escape], dim=-1)  # (N, ESCAPE + 1)
    symbols = masses.shape[-1]
    frequencies = 1 + torch.div(masses * (CDF_TOTAL - symbols), total, rounding_mode="floor")
    cdf = torch.zeros(masses.shape[0], symbols + 1, dtype=torch.int64, device=device)
    cdf[:, 1:] = torch.cumsum(frequencies, dim=-1)
    # torchac reads uint16; the last entry is ignored (the last symbol ends at 2**16).
    return cdf.clamp(max=CDF_TOTAL - 1).to(torch.int32).to(torch.int16)


def encode(values: torch.Tensor, mixture: Mixture, value_bits: int) -> tuple[bytes, bytes]:
    """values (N,) int64 in [0, 2**value_bits) -> (arithmetic-coded bins, raw bits)."""
    import torchac

    centre, low_bits = _centre_and_low_bits(mixture)
    values = values.to(centre.device)
    bins = torch.div(values - centre, 1 << low_bits, rounding_mode="floor")
    low = values - centre - bins * (1 << low_bits)
    inside = (bins >= -HALF_WINDOW) & (bins < HALF_WINDOW)
    symbols = torch.where(inside, bins + HALF_WINDOW, torch.full_like(bins, ESCAPE))
    coded = torchac.encode_int16_normalized_cdf(
        _cdf(mixture, centre, low_bits).cpu(), symbols.to(torch.int16).cpu()
    )
    raw_values = torch.cat([low[inside], values[~inside]]).cpu()
    widths = torch.cat([low_bits[inside], torch.full_like(values[~inside], value_bits)]).cpu()
    return coded, _pack_bits(raw_values, widths)


def decode(coded: bytes, raw: bytes, mixture: Mixture, value_bits: int) -> torch.Tensor:
    """The inverse of `encode`, given the same integer mixture."""
    import torchac

    centre, low_bits = _centre_and_low_bits(mixture)
    cdf = _cdf(mixture, centre, low_bits).cpu()
    symbols = torchac.decode_int16_normalized_cdf(cdf, coded).long().to(centre.device)
    inside = symbols != ESCAPE
    widths = torch.cat([low_bits[inside], torch.full_like(symbols[~inside], value_bits)]).cpu()
    unpacked = _unpack_bits(raw, widths).to(centre.device)
    inside_count = int(inside.sum())
    values = torch.empty_like(symbols)
    values[inside] = (
        centre[inside] + (symbols[inside] - HALF_WINDOW) * (1 << low_bits[inside]) + unpacked[:inside_count]
    )
    values[~inside] = unpacked[inside_count:]
    return values


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

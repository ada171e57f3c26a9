"""Integer tables for the entropy model, computed with exact decimal arithmetic.

Encoder and decoder must build bit-identical CDFs on any machine. Float libm results (erf, pow)
may differ in the last place between platforms, and a table entry that rounds differently would
desynchronise the arithmetic decoder, so the tables are evaluated with `decimal` at 60 digits
(software arithmetic, the same everywhere) and rounded once to integers.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from functools import cache

import torch

# Standard normal CDF Phi(z) for z in [-Z_MAX, Z_MAX] in steps of 1/Z_STEPS, scaled to 2**PHI_BITS.
Z_MAX = 8
Z_STEPS = 128
PHI_BITS = 16
# Scales sigma_s = 2 ** (s / SCALE_STEPS_PER_OCTAVE + SCALE_MIN_LOG2) for s in [0, SCALE_LEVELS).
SCALE_LEVELS = 144
SCALE_STEPS_PER_OCTAVE = 8
SCALE_MIN_LOG2 = -2  # 0.25 ... about 2**15.9: a 16-bit image's whole range
# Means are fixed point with MEAN_FRAC_BITS fractional bits.
MEAN_FRAC_BITS = 4
# z * Z_STEPS = (x - mean) * inverse_scale >> INVERSE_SHIFT, x and mean in mean units.
INVERSE_SHIFT = 24
# Mixture weights are proportional to 2 ** (logit_index / LOGIT_STEPS), |logit_index| <= LOGIT_LIMIT.
LOGIT_STEPS = 8
LOGIT_LIMIT = 64
EXP2_BITS = 16


def _phi(z: Decimal, sqrt_two_pi: Decimal) -> Decimal:
    """Phi(z) = 1/2 + 1/sqrt(2 pi) * sum (-1)^n z^(2n+1) / (2^n n! (2n+1)); converges for all z."""
    total, term, n = Decimal(0), z, 0
    z2 = z * z
    while True:
        contribution = term / (2 * n + 1)
        total += contribution
        if abs(contribution) < Decimal(10) ** -40:
            break
        n += 1
        term = -term * z2 / (2 * n)
    return Decimal(1) / 2 + total / sqrt_two_pi


def _pi() -> Decimal:
    """pi by Machin's formula, to the context's precision."""

    def arctan_inverse(x: int) -> Decimal:
        total, power, n, sign = Decimal(0), Decimal(1) / x, 0, 1
        x2 = x * x
        while power > Decimal(10) ** -55:
            total += sign * power / (2 * n + 1)
            power /= x2
            n += 1
            sign = -sign
        return total

    return 4 * (4 * arctan_inverse(5) - arctan_inverse(239))


@cache
def phi_table() -> torch.Tensor:
    """int64[2 * Z_MAX * Z_STEPS + 1]: round(Phi(z) * 2**PHI_BITS), non-decreasing."""
    with localcontext() as context:
        context.prec = 60
        scale = Decimal(2) ** PHI_BITS
        sqrt_two_pi = (2 * _pi()).sqrt()
        values = [
            int((_phi(Decimal(i) / Z_STEPS, sqrt_two_pi) * scale).to_integral_value())
            for i in range(-Z_MAX * Z_STEPS, Z_MAX * Z_STEPS + 1)
        ]
    return torch.tensor(values, dtype=torch.int64)


def _sigma(scale_index: int) -> Decimal:
    """sigma_s at the current decimal context's precision."""
    log2_sigma = Decimal(scale_index) / SCALE_STEPS_PER_OCTAVE + SCALE_MIN_LOG2
    return (log2_sigma * Decimal(2).ln()).exp()


@cache
def inverse_scale_table() -> torch.Tensor:
    """int64[SCALE_LEVELS]: round(Z_STEPS * 2**INVERSE_SHIFT / (sigma_s * 2**MEAN_FRAC_BITS))."""
    with localcontext() as context:
        context.prec = 60
        values = []
        for s in range(SCALE_LEVELS):
            numerator = Decimal(Z_STEPS * 2**INVERSE_SHIFT)
            values.append(int((numerator / (_sigma(s) * 2**MEAN_FRAC_BITS)).to_integral_value()))
    return torch.tensor(values, dtype=torch.int64)


def low_bits_of_scale(scale_index: torch.Tensor) -> torch.Tensor:
    """Bits left to raw coding at this scale: bins of 2**b values stay within sigma / 4, where the
    Gaussian is nearly flat, so coding their position uniformly costs almost nothing."""
    octave = torch.div(scale_index, SCALE_STEPS_PER_OCTAVE, rounding_mode="floor") + SCALE_MIN_LOG2
    return (octave - 2).clamp(min=0)


@cache
def exp2_table() -> torch.Tensor:
    """int64[2 * LOGIT_LIMIT + 1]: round(2**EXP2_BITS * 2**(-d / LOGIT_STEPS)) for d = 0, 1, ...,
    the relative weight of a component d logit steps below the largest."""
    with localcontext() as context:
        context.prec = 60
        values = [
            int(((Decimal(EXP2_BITS) - Decimal(d) / LOGIT_STEPS) * Decimal(2).ln()).exp().to_integral_value())
            for d in range(2 * LOGIT_LIMIT + 1)
        ]
    return torch.tensor(values, dtype=torch.int64)

"""The training loss: bits of integer values under a discretized Gaussian mixture, in log space.

A bin's probability Phi(upper) - Phi(lower) underflows float32 a few sigmas from the mean, and
clamping it (as the first version did, at 1e-9) leaves every such value without a gradient:
at initialisation that was 78 % of a CT crop. Here the bin is moved to the lower tail by
symmetry and its log probability is log Phi(b) + log(1 - Phi(a) / Phi(b)) with `log_ndtr`,
which stays finite and differentiable however far the value lies from the mean. The coder
(entropy.py) uses the same distribution quantised to integers, and the loss adds what the
coder adds: an escape of probability 2**-16 for values far outside the prediction.
"""

from __future__ import annotations

import math

import torch
from torch.special import log_ndtr

# Stand-in for +-infinity in z (the first and last value take the tails), and the bound on z:
# log_ndtr's float32 derivative overflows from about 5e4 sigmas, and 0 * inf is a NaN gradient.
# Values that far out are escapes, priced by ESCAPE_PROBABILITY, whatever their exact z.
FAR_Z = 1e4
LOG2 = math.log(2)
# The coder gives its escape symbol at least 2**-16 and then writes the value raw: no value
# costs more than about 16 + value bits. The loss prices values the same way (a mixture with a
# uniform of that weight), so that one burned-in annotation 10**4 sigmas from its prediction
# costs what it costs in the coder, not 10**9 bits that would swamp a training step.
ESCAPE_PROBABILITY = 2.0**-16


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(d)) for d < 0, accurate on both sides of -log 2."""
    d = d.clamp(max=-1e-7)  # a bin narrower than float32 resolves; never reached in practice
    near = d > -LOG2
    # Each branch gets only inputs it is accurate and finite on: torch.where passes gradients
    # through both, and an infinite gradient in the unused one would still make a NaN.
    near_zero = torch.log(-torch.expm1(torch.where(near, d, -LOG2)))
    far = torch.log1p(-torch.exp(torch.where(near, -LOG2, d)))
    return torch.where(near, near_zero, far)


def log_bin_probability(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for lower < upper (standardised), stable in both tails."""
    flip = (lower + upper) > 0  # mostly above the mean: use Phi(-l) - Phi(-u) instead
    a = torch.where(flip, -upper, lower)
    b = torch.where(flip, -lower, upper)
    log_b = log_ndtr(b)
    return log_b + _log1mexp(log_ndtr(a) - log_b)


def mixture_log_probability(
    values: torch.Tensor,
    mean: torch.Tensor,
    log_scale: torch.Tensor,
    log_weight: torch.Tensor,
    max_value: int,
) -> torch.Tensor:
    """Natural log P(values): values (...,) integers as float; mean, log_scale (natural log of
    sigma), log_weight (normalised log mixture weights) (..., K). Values 0 and max_value take
    the tails beyond them, so the masses over 0..max_value sum to one."""
    x = values.unsqueeze(-1)
    inverse_scale = torch.exp(-log_scale)
    lower = torch.where(x <= 0, -FAR_Z, ((x - 0.5 - mean) * inverse_scale).clamp(-FAR_Z, FAR_Z))
    upper = torch.where(x >= max_value, FAR_Z, ((x + 0.5 - mean) * inverse_scale).clamp(-FAR_Z, FAR_Z))
    model = torch.logsumexp(log_weight + log_bin_probability(lower, upper), dim=-1)
    escape = math.log(ESCAPE_PROBABILITY / (max_value + 1))
    return torch.logaddexp(model + math.log1p(-ESCAPE_PROBABILITY), torch.full_like(model, escape))


def mixture_bits(
    values: torch.Tensor,
    mean: torch.Tensor,
    log_scale: torch.Tensor,
    logit: torch.Tensor,
    max_value: int,
) -> torch.Tensor:
    """-log2 P(values) per value, the logits not yet normalised."""
    log_weight = torch.log_softmax(logit, dim=-1)
    return -mixture_log_probability(values, mean, log_scale, log_weight, max_value) / LOG2

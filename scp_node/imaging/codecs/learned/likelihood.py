"""The training loss of Seed B: bits of integer values under a discretized Gaussian mixture.

Float and differentiable, for training and for estimating a model's rate. The coder itself
(entropy.py) uses the same distribution quantised to integers; its real cost stays within a
small margin of these bits (tests/test_learned_entropy.py measures that margin).
"""

from __future__ import annotations

import math

import torch

# Probability floor: keeps log2 finite for values the model all but rules out.
MIN_PROBABILITY = 1e-9


def _normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def mixture_bits(
    values: torch.Tensor,
    mean: torch.Tensor,
    log_scale: torch.Tensor,
    logit: torch.Tensor,
    max_value: int,
) -> torch.Tensor:
    """-log2 P(values) per value.

    values: (...,) integers in [0, max_value] (as float); mean, log_scale, logit: (..., K) with
    the components last. The first and last value take the tails, so the masses sum to one.
    """
    x = values.unsqueeze(-1)
    inverse_scale = torch.exp(-log_scale)
    upper = _normal_cdf((x + 0.5 - mean) * inverse_scale)
    lower = _normal_cdf((x - 0.5 - mean) * inverse_scale)
    upper = torch.where(x >= max_value, torch.ones_like(upper), upper)
    lower = torch.where(x <= 0, torch.zeros_like(lower), lower)
    component = (upper - lower).clamp_min(MIN_PROBABILITY)
    log_probability = torch.logsumexp(torch.log_softmax(logit, dim=-1) + torch.log(component), dim=-1)
    return -log_probability / math.log(2)

"""The learned codec's integer layers and its training loss: a feature extractor that sees far,
a likelihood that is a distribution and keeps its gradient where the first version lost it."""

from __future__ import annotations

import math

import torch

from scp_node.imaging.codecs.learned.entropy import encode
from scp_node.imaging.codecs.learned.layers import FeatureExtractor
from scp_node.imaging.codecs.learned.likelihood import ESCAPE_PROBABILITY, log_bin_probability, mixture_bits
from tests.support import mixture_from_floats as quantize


def test_feature_extractor_keeps_size_sees_far_and_has_no_batch_norm() -> None:
    extractor = FeatureExtractor(1, 8, (1, 2, 4, 8, 16))
    impulse = torch.zeros(1, 1, 129, 129)
    impulse[0, 0, 64, 64] = 100.0  # integer activations: a large step survives rounding
    with torch.no_grad():
        response = (extractor(impulse) - extractor(torch.zeros_like(impulse))).abs().sum(dim=1)[0]
    assert response.shape == (129, 129)
    reached = response[64].nonzero().flatten()
    assert reached.min() <= 16 and reached.max() >= 112  # dilations reach about 50-60 pixels each way
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in extractor.modules())


def test_mixture_bits_is_a_distribution_over_the_value_range() -> None:
    max_value = 255
    values = torch.arange(max_value + 1, dtype=torch.float64)
    mean = torch.tensor([[40.0, 200.0]], dtype=torch.float64).expand(len(values), 2)
    log_scale = torch.tensor([[1.0, 3.0]], dtype=torch.float64).expand(len(values), 2)
    logit = torch.tensor([[0.3, -0.2]], dtype=torch.float64).expand(len(values), 2)
    bits = mixture_bits(values, mean, log_scale, logit, max_value)
    assert abs(float(torch.exp2(-bits).sum()) - 1.0) < 1e-6


def _old_clamped_bits(value: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """The first version's loss: a float32 erf difference clamped at 1e-9."""
    cdf = lambda z: 0.5 * (1 + torch.erf(z / math.sqrt(2)))  # noqa: E731
    probability = (cdf((value + 0.5 - mean) / sigma) - cdf((value - 0.5 - mean) / sigma)).clamp_min(1e-9)
    return -torch.log2(probability)


def test_bin_probability_keeps_its_gradient_far_into_both_tails() -> None:
    """The issue's finding: at initialisation 78 % of a CT crop's pixels got no gradient, because
    the clamped erf difference was flat beyond a few sigmas. The log-space bin has a gradient
    that pulls the mean toward the value wherever the value lies."""
    offsets = torch.tensor([-300.0, -40.0, -9.0, -3.0, 0.0, 3.0, 9.0, 40.0, 300.0])
    mean = torch.zeros_like(offsets, requires_grad=True)
    sigma = 2.0
    bits = -log_bin_probability((offsets - 0.5 - mean) / sigma, (offsets + 0.5 - mean) / sigma) / math.log(2)
    (gradient,) = torch.autograd.grad(bits.sum(), mean)
    assert torch.isfinite(bits).all() and torch.isfinite(gradient).all()
    pulls_toward_value = torch.sign(gradient) == -torch.sign(offsets)
    assert bool(pulls_toward_value[offsets != 0].all()), gradient
    old_mean = torch.zeros_like(offsets, requires_grad=True)
    (old_gradient,) = torch.autograd.grad(_old_clamped_bits(offsets, old_mean, sigma).sum(), old_mean)
    assert int((old_gradient == 0).sum()) >= 4  # the old loss is flat for |offset| >= 9 sigma-ish


def test_escape_bounds_the_cost_of_a_value_far_outside_the_prediction() -> None:
    """As in the coder: a value 10**4 sigmas out costs the escape plus its raw bits, not 10**8."""
    bits = mixture_bits(
        torch.tensor([60000.0]), torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), 65535
    )
    assert float(bits) <= -math.log2(ESCAPE_PROBABILITY) + 16 + 0.01


def test_coded_size_matches_the_loss_within_a_small_margin() -> None:
    """Components close together, as a trained predictor makes them."""
    n = 20000
    generator = torch.Generator().manual_seed(5)
    mean = 1000 + 8 * torch.randn(n, 3, generator=generator)
    log_scale = math.log(8.0) + 0.5 * torch.randn(n, 3, generator=generator)
    logit = torch.randn(n, 3, generator=generator)
    component = torch.multinomial(torch.softmax(logit, -1), 1, generator=generator).squeeze(-1)
    chosen_mean = mean.gather(-1, component[:, None]).squeeze(-1)
    chosen_scale = log_scale.gather(-1, component[:, None]).squeeze(-1).exp()
    values = (chosen_mean + chosen_scale * torch.randn(n, generator=generator)).round().long()
    model_bits = float(
        mixture_bits(values.double(), mean.double(), log_scale.double(), logit.double(), 4095).mean()
    )
    coded, raw = encode(values, quantize(mean, log_scale, logit), 12)
    coded_bits = 8 * (len(coded) + len(raw)) / n
    assert model_bits - 0.02 <= coded_bits < model_bits + 0.1


def test_a_rare_wide_component_costs_near_its_ideal() -> None:
    """The issue's example: sigma 4 plus a 0.8 %-weight sigma 256 cost 7.00 bits a value in the
    first coder (window sized by the widest component), against 4.07 ideal. The window now
    follows the dominant component and the rare wide values escape."""
    n = 40000
    generator = torch.Generator().manual_seed(1)
    wide = torch.rand(n, generator=generator) < 0.008
    values = (30000 + torch.where(wide, 256.0, 4.0) * torch.randn(n, generator=generator)).round().long()
    mean = torch.full((n, 2), 30000.0)
    log_scale = torch.tensor([[math.log(4.0), math.log(256.0)]]).expand(n, 2)
    logit = torch.tensor([[math.log(0.992), math.log(0.008)]]).expand(n, 2)
    model_bits = float(
        mixture_bits(values.double(), mean.double(), log_scale.double(), logit.double(), 65535).mean()
    )
    coded, raw = encode(values, quantize(mean, log_scale, logit), 16)
    coded_bits = 8 * (len(coded) + len(raw)) / n
    assert model_bits < 4.25 and coded_bits < model_bits + 0.1

"""Seed B's layers and its training loss."""

from __future__ import annotations

import math

import torch

from scp_node.imaging.codecs.learned.entropy import encode
from scp_node.imaging.codecs.learned.layers import FeatureExtractor, Upsampler
from scp_node.imaging.codecs.learned.likelihood import mixture_bits
from tests.support import mixture_from_floats as quantize


def test_upsampler_doubles_resolution_into_parameter_channels() -> None:
    features = torch.randn(2, 16, 7, 9)  # odd sizes
    assert Upsampler(16, 9)(features).shape == (2, 9, 14, 18)


def test_feature_extractor_keeps_size_sees_far_and_has_no_batch_norm() -> None:
    extractor = FeatureExtractor(1, 8)
    impulse = torch.zeros(1, 1, 129, 129)
    impulse[0, 0, 64, 64] = 100.0  # integer activations: a large step survives rounding
    with torch.no_grad():
        response = (extractor(impulse) - extractor(torch.zeros_like(impulse))).abs().sum(dim=1)[0]
    assert response.shape == (129, 129)
    reached = response[64].nonzero().flatten()
    assert reached.min() <= 10 and reached.max() >= 118  # dilations reach about 60 pixels each way
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in extractor.modules())


def test_mixture_bits_is_a_distribution_over_the_value_range() -> None:
    max_value = 255
    values = torch.arange(max_value + 1, dtype=torch.float64)
    mean = torch.tensor([[40.0, 200.0]], dtype=torch.float64).expand(len(values), 2)
    log_scale = torch.tensor([[1.0, 3.0]], dtype=torch.float64).expand(len(values), 2)
    logit = torch.tensor([[0.3, -0.2]], dtype=torch.float64).expand(len(values), 2)
    bits = mixture_bits(values, mean, log_scale, logit, max_value)
    assert abs(float(torch.exp2(-bits).sum()) - 1.0) < 1e-6  # the 1e-9 floor adds a little


def test_coded_size_matches_the_loss_within_a_small_margin() -> None:
    n = 20000
    generator = torch.Generator().manual_seed(5)
    mean = 1000 + 200 * torch.rand(n, 3, generator=generator)
    log_scale = math.log(8.0) + 0.3 * torch.randn(n, 3, generator=generator)
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
    assert model_bits <= coded_bits < model_bits + 0.1

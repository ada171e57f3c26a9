"""Seed B's multi-scale model: three quantized auxiliary scales, each predicted from the next
coarser one by super-resolution, the image predicted from the finest.

    x --E1--> z1 --E2--> z2 --E3--> z3            (analysis, encoder only)
    z3 : uniform          D3(z3) -> p(z2)          (synthesis, encoder and decoder)
    D2(z2, f3) -> p(z1)   D1(z1, f2) -> p(x)

E(s) is, as in L3C, a stride-2 conv, a feature extractor and a 1x1 conv to the auxiliary
channels, bounded to [0, AUX_LEVELS - 1] and rounded (straight-through in training). Putting
the stride first runs the extractor at the coarser resolution: four times less work than
extracting at full resolution, for the same receptive field in pixels. D(s) embeds the symbols
of scale s, adds the upsampled features of the coarser predictor, runs a feature extractor and
an Upsampler whose output holds, for every sub-pixel of the finer scale, K mixture components.

The synthesis side is an integer network (layers.py) and its outputs are mapped to the coder's
integer parameters by `integer_mixture` with correctly rounded float operations only, so the
decoder reproduces the encoder's distributions exactly on any device. The analysis side runs
only in the encoder (its symbols are transmitted), so it uses the same layers in float.

Images are normalised by their bit depth, so one model serves 8 to 16 bits: means are
predicted in [0, 1] of the range, scales as log2 offsets from a bit-depth dependent start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from scp_node.imaging.codecs.learned.entropy import Mixture, mixture_from_indices
from scp_node.imaging.codecs.learned.fixed_point import (
    LOGIT_STEPS,
    MEAN_FRAC_BITS,
    SCALE_MIN_LOG2,
    SCALE_STEPS_PER_OCTAVE,
)
from scp_node.imaging.codecs.learned.layers import (
    ACTIVATION_STEPS,
    FeatureExtractor,
    IntConv2d,
    Upsampler,
    requantize,
    round_straight_through,
)
from scp_node.imaging.codecs.learned.likelihood import mixture_bits

SCALES = 3
AUX_BITS = 4
AUX_LEVELS = 2**AUX_BITS  # symbols 0..15 per auxiliary channel
PARAMETERS_PER_COMPONENT = 3  # mean, log2 scale, log2 weight
# An untrained model predicts log2 sigma = max(bit depth - INITIAL_BITS_BELOW, 0): 2 for 8-bit
# images, 32 for 12-bit, 1 for the 4-bit symbols; near where trained models end up, so training
# does not spend its first thousands of steps walking the scale down from the whole range.
INITIAL_BITS_BELOW = 7


@dataclass(frozen=True)
class ModelConfig:
    channels: int = 32
    aux_channels: int = 5
    components: int = 3

    @property
    def multiple(self) -> int:
        """Image sides must be a multiple of this (one halving per scale)."""
        return 2**SCALES


class Analysis(nn.Module):
    """E(s): halve the resolution, extract features, bound to [0, AUX_LEVELS - 1] and round."""

    def __init__(self, in_channels: int, config: ModelConfig) -> None:
        super().__init__()
        self.down = nn.Conv2d(in_channels, config.channels, 3, stride=2, padding=1)
        self.features = FeatureExtractor(config.channels, config.channels, integer=False)
        self.to_symbols = IntConv2d(config.channels, config.aux_channels, 1, integer=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float in [-0.5, 0.5] -> integer symbols (as float)."""
        features = self.features(self.down(x) * ACTIVATION_STEPS)
        continuous = torch.sigmoid(self.to_symbols(features) / ACTIVATION_STEPS) * (AUX_LEVELS - 1)
        return round_straight_through(continuous)


class Synthesis(nn.Module):
    """D(s): from the symbols of scale s (and the coarser features) to p(scale s - 1)."""

    def __init__(self, out_channels: int, config: ModelConfig, *, has_coarser: bool) -> None:
        super().__init__()
        self.embed = IntConv2d(config.aux_channels, config.channels, 3, padding=1)
        self.coarser = Upsampler(config.channels, config.channels) if has_coarser else None
        self.features = FeatureExtractor(config.channels, config.channels)
        self.predict = Upsampler(config.channels, out_channels * config.components * PARAMETERS_PER_COMPONENT)

    def forward(
        self, symbols: torch.Tensor, coarser: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(parameters at twice the resolution in activation units, features for the finer D)."""
        embedded = self.embed(symbols * 2 - (AUX_LEVELS - 1))  # symbols as integers in +-15
        if self.coarser is not None and coarser is not None:
            embedded = embedded + self.coarser(coarser)
        features = self.features(requantize(embedded))
        return self.predict(features), features


class MultiScaleModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        aux = config.aux_channels
        self.analysis = nn.ModuleList([Analysis(1, config), Analysis(aux, config), Analysis(aux, config)])
        # synthesis[s] predicts scale s from scale s + 1 (scale 0 is the image).
        self.synthesis = nn.ModuleList(
            [
                Synthesis(1, config, has_coarser=True),
                Synthesis(aux, config, has_coarser=True),
                Synthesis(aux, config, has_coarser=False),
            ]
        )

    def analyse(self, image: torch.Tensor, bit_depth: int) -> list[torch.Tensor]:
        """Auxiliary symbols [z1, z2, z3] of an image (N, 1, H, W) of samples, H and W padded."""
        scales, current = [], image / (2**bit_depth - 1) - 0.5
        for analysis in self.analysis:
            symbols = analysis(current)
            scales.append(symbols)
            current = symbols / (AUX_LEVELS - 1) - 0.5
        return scales

    def predict(
        self, scale: int, symbols: torch.Tensor, coarser: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters for scale `scale` given the symbols of scale + 1: (N, C, H, W, K, 3) in
        activation units, and the features the next finer predictor takes."""
        raw, features = self.synthesis[scale](symbols, coarser)
        n, _, height, width = raw.shape
        raw = raw.view(n, -1, self.config.components, PARAMETERS_PER_COMPONENT, height, width)
        return raw.permute(0, 1, 4, 5, 2, 3), features

    def bits(self, image: torch.Tensor, bit_depth: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Training loss: total bits of the image and every auxiliary scale, per scale
        (coarsest first).

        image: (N, 1, H, W) integer samples as float, H and W multiples of `config.multiple`.
        """
        scales = self.analyse(image, bit_depth)
        targets = [image, *scales[:-1]]
        depths = [bit_depth] + [AUX_BITS] * (SCALES - 1)
        per_scale = [torch.full((), scales[-1].numel() * float(AUX_BITS), device=image.device)]
        features = None
        for scale in reversed(range(SCALES)):
            raw, features = self.predict(scale, scales[scale], features)
            mean, log_scale, logit = float_parameters(raw, depths[scale])
            per_scale.append(
                mixture_bits(targets[scale], mean, log_scale, logit, 2 ** depths[scale] - 1).sum()
            )
        return sum(per_scale), per_scale


def float_parameters(raw: torch.Tensor, bit_depth: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, natural log scale, logit) in sample units, for the training loss."""
    real = raw / ACTIVATION_STEPS
    mean = (real[..., 0] + 0.5) * (2**bit_depth - 1)
    log_scale = (real[..., 1] + _initial_log2_scale(bit_depth)) * math.log(2)
    return mean, log_scale, real[..., 2] * math.log(2)


def integer_mixture(raw: torch.Tensor, bit_depth: int) -> Mixture:
    """The coder's integer parameters for raw (..., K, 3), flattened to (N, K).

    The same distribution as `float_parameters`, on the coder's grids (means to
    1/2**MEAN_FRAC_BITS, scales to 1/SCALE_STEPS_PER_OCTAVE octave, weights to 1/LOGIT_STEPS
    octave). Only additions and multiplications by exactly representable constants and
    rounding: IEEE makes these identical on every device.
    """
    real = raw.reshape(-1, raw.shape[-2], PARAMETERS_PER_COMPONENT) / ACTIVATION_STEPS
    # Means are clamped to a bound no useful prediction reaches, so the int64 cast is defined.
    mean = torch.round((real[..., 0].clamp(-1.0, 2.0) + 0.5) * float((2**bit_depth - 1) << MEAN_FRAC_BITS))
    offset = _initial_log2_scale(bit_depth) - SCALE_MIN_LOG2
    scale_index = torch.round((real[..., 1].clamp(-64.0, 64.0) + offset) * SCALE_STEPS_PER_OCTAVE)
    logit_index = torch.round(real[..., 2].clamp(-64.0, 64.0) * LOGIT_STEPS)
    return mixture_from_indices(mean.long(), scale_index.long(), logit_index.long())


def _initial_log2_scale(bit_depth: int) -> int:
    return max(bit_depth - INITIAL_BITS_BELOW, 0)

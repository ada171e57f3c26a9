"""Seed B's multi-scale model: three quantized auxiliary scales, each predicted from the next
coarser one by super-resolution, the image predicted from the finest.

    x --E1--> z1 --E2--> z2 --E3--> z3            (analysis, encoder only)
    z3 : uniform          D3(z3) -> p(z2)          (synthesis, encoder and decoder)
    D2(z2, f3) -> p(z1)   D1(z1, f2) -> p(x)

E(s) is a feature extractor followed by a stride-2 conv and a bounded quantizer (AUX_LEVELS
levels, straight-through rounding in training). D(s) embeds the symbols of scale s, adds the
upsampled features of the coarser predictor, runs a feature extractor and an Upsampler whose
output holds, for every sub-pixel of the finer scale, K mixture components (mean, log scale,
logit). Images are normalised by their bit depth, so one model serves 8 to 16 bits: means and
scales are predicted in [0, 1] units and mapped back to sample values for the coder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from workers.codecs.learned.layers import FeatureExtractor, Upsampler
from workers.codecs.learned.likelihood import mixture_bits

SCALES = 3
AUX_LEVELS = 16  # symbols 0..15 per auxiliary channel
PARAMETERS_PER_COMPONENT = 3  # mean, log scale, logit


@dataclass(frozen=True)
class ModelConfig:
    channels: int = 64
    aux_channels: int = 5
    components: int = 3
    image_channels: int = 1  # 1 (grayscale) or 3 (colour, coded as three planes)

    @property
    def multiple(self) -> int:
        """Image sides must be a multiple of this (one halving per scale)."""
        return 2**SCALES


@dataclass(frozen=True)
class Mixtures:
    """Float mixture parameters for one scale, each (N, C, H, W, K), in sample units."""

    mean: torch.Tensor
    log_scale: torch.Tensor
    logit: torch.Tensor


class Analysis(nn.Module):
    """E(s): features, halve the resolution, bound to [0, AUX_LEVELS - 1] and round."""

    def __init__(self, in_channels: int, config: ModelConfig) -> None:
        super().__init__()
        self.features = FeatureExtractor(in_channels, config.channels)
        self.down = nn.Conv2d(config.channels, config.aux_channels, 5, stride=2, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        continuous = torch.sigmoid(self.down(self.features(x))) * (AUX_LEVELS - 1)
        return continuous + (torch.round(continuous) - continuous).detach()  # straight-through


class Synthesis(nn.Module):
    """D(s): from the symbols of scale s (and the coarser features) to p(scale s - 1)."""

    def __init__(
        self, in_channels: int, out_channels: int, config: ModelConfig, *, has_coarser: bool
    ) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_channels, config.channels, 3, padding=1)
        self.coarser = Upsampler(config.channels, config.channels) if has_coarser else None
        self.features = FeatureExtractor(config.channels, config.channels)
        self.predict = Upsampler(config.channels, out_channels * config.components * PARAMETERS_PER_COMPONENT)
        self.out_channels = out_channels
        self.components = config.components

    def forward(
        self, symbols: torch.Tensor, coarser: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw parameters at twice the resolution, features for the next finer predictor)."""
        features = self.embed(symbols)
        if self.coarser is not None and coarser is not None:
            features = features + self.coarser(coarser)
        features = self.features(features)
        return self.predict(features), features


class MultiScaleModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        aux = config.aux_channels
        self.analysis = nn.ModuleList(
            [Analysis(config.image_channels, config), Analysis(aux, config), Analysis(aux, config)]
        )
        # synthesis[s] predicts scale s from scale s + 1 (scale 0 is the image).
        self.synthesis = nn.ModuleList(
            [
                Synthesis(aux, config.image_channels, config, has_coarser=True),
                Synthesis(aux, aux, config, has_coarser=True),
                Synthesis(aux, aux, config, has_coarser=False),
            ]
        )

    def analyse(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Auxiliary symbols [z1, z2, z3] of a normalised image (N, C, H, W), H and W padded."""
        scales, current = [], image
        for analysis in self.analysis:
            current = analysis(current)
            scales.append(current)
        return scales

    def predict(
        self, scale: int, symbols: torch.Tensor, coarser: torch.Tensor | None, max_value: int
    ) -> tuple[Mixtures, torch.Tensor]:
        """Mixtures for scale `scale` given the symbols of scale + 1, in units of 0..max_value."""
        raw, features = self.synthesis[scale](_normalised_symbols(symbols), coarser)
        n, _, height, width = raw.shape
        channels = self.synthesis[scale].out_channels
        raw = raw.view(n, channels, self.config.components, PARAMETERS_PER_COMPONENT, height, width)
        raw = raw.permute(0, 1, 4, 5, 2, 3)  # (N, C, H, W, K, 3)
        mean = (raw[..., 0] + 0.5) * max_value
        log_scale = raw[..., 1] + math.log(max_value) - 3.0  # start near max_value / 20
        return Mixtures(mean, log_scale, raw[..., 2]), features

    def bits(self, image: torch.Tensor, bit_depth: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Training loss: total bits of the image and every auxiliary scale, per scale.

        image: (N, C, H, W) integer samples as float, H and W multiples of `config.multiple`.
        """
        max_value = 2**bit_depth - 1
        scales = self.analyse(image / max_value)
        targets = [image, *scales[:-1]]
        maxima = [max_value] + [AUX_LEVELS - 1] * (SCALES - 1)
        coarsest = scales[-1]
        per_scale = [torch.full((), coarsest.numel() * math.log2(AUX_LEVELS), device=image.device)]
        features = None
        for scale in reversed(range(SCALES)):
            symbols = scales[scale]
            mixtures, features = self.predict(scale, symbols, features, maxima[scale])
            target = targets[scale]
            per_scale.append(
                mixture_bits(target, mixtures.mean, mixtures.log_scale, mixtures.logit, maxima[scale]).sum()
            )
        return sum(per_scale), per_scale


def _normalised_symbols(symbols: torch.Tensor) -> torch.Tensor:
    return symbols / (AUX_LEVELS - 1) - 0.5

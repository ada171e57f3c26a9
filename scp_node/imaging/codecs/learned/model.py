"""The pyramid model: each level of the exact image pyramid (pyramid.py) predicted from the next
coarser one, four sub-pixel passes per 2x2 block, optionally conditioned on a reference slice.

    level 3 (standard codec) -> level 2 -> level 1 -> level 0 = the image

For every stage (predicting level s from level s + 1) a feature extractor in Seed B's style
(dilated residual blocks, Leaky ReLU, no batch norm) reads the coarser level at its own
resolution, as integer differences in units of a per-tile power of two (`norm_shift`), plus,
in series mode, the reference slice's levels. Four pass heads follow (DS conv -> pixel
attention -> DS conv, as Seed B's upsampler): pass k predicts sub-pixel k of every block from
the features, the residuals of sub-pixels 0..k-1 (already decoded) and the reference's
residual at sub-pixel k. The four passes' outputs together are the pixel shuffle of Seed B's
upsampler, computed one quarter at a time so that later quarters see earlier ones. Pass 3
only chooses among the four values the block sum allows.

Outputs are mixture parameters relative to deterministic integers, in pixel units:
- mean = bilinear baseline of the coarser level + offset * 2**norm_shift / 16 pixels,
- scale index = content scale (from the coarser level's local activity) + offset,
- weights from fixed per-component priors + offset.
The output convs start at zero, so an untrained model already codes like an interpolating
predictor with activity-adapted scales; training only has to learn corrections.

With `residual_skip`, each pass head also has a linear 1x1 conv from its extra inputs (the
earlier residuals and the reference's) straight to its outputs, beside its non-linear layers.
Trained without it, some heads stopped using the earlier sub-pixels at all (the shipped model's
stage 1: 5.61 bits with them, 5.61 with their baselines instead; stage 0 gains a full bit), and
a linear path cannot go dead that way. It starts at zero, so a model warm-started from weights
without it codes exactly as they did. Measured (runs/pyramid-c16-skip against -finetune, 5,000
steps from the shipped weights on one schedule): no held-out gain (3.744 bpsp both); stage 1
still gains little from the earlier sub-pixels. Not in the shipped weights.

The networks are integer networks (layers.py) and everything between their outputs and the
coder's integer mixtures is IEEE-exact (products with powers of two, rounding), so encoder and
decoder build the same CDFs on any device and thread count. Training runs the same arithmetic
with straight-through rounding: the loss is the cost the coder pays, up to table rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from scp_node.imaging.codecs.learned import pyramid
from scp_node.imaging.codecs.learned.entropy import Mixture, mixture_from_indices
from scp_node.imaging.codecs.learned.fixed_point import (
    LOGIT_LIMIT,
    LOGIT_STEPS,
    MEAN_FRAC_BITS,
    SCALE_LEVELS,
    SCALE_MIN_LOG2,
    SCALE_STEPS_PER_OCTAVE,
)
from scp_node.imaging.codecs.learned.layers import (
    ACTIVATION_LIMIT,
    ACTIVATION_STEPS,
    DepthwiseSeparableConv,
    FeatureExtractor,
    IntConv2d,
    PixelAttention,
    conv3x3,
    leaky_relu,
    requantize,
    round_straight_through,
)
from scp_node.imaging.codecs.learned.likelihood import LOG2, mixture_log_probability

SCALES = 3  # learned stages; level SCALES is the coarsest
PARAMETERS_PER_COMPONENT = 3  # mean offset, scale offset, logit
LEVEL_INPUTS = 4  # across and down differences, local detail, content scale
REFERENCE_INPUTS = 6  # present flag, coarse difference, the reference's four sub-pixel residuals
# Fixed per-component starting points (scale index steps, logit steps): a dominant component at
# the content scale, a sharper one and a wide one for edges. Distinct priors break the symmetry
# that identical zero-initialised components would never leave.
COMPONENT_SCALE_PRIORS = (0, -8, 16, 32, -16)
COMPONENT_LOGIT_PRIORS = (16, 0, -8, -16, -16)
# Bound on raw outputs before they become integers (activation units): far beyond useful values.
RAW_LIMIT = 4096.0


@dataclass(frozen=True)
class ModelConfig:
    channels: int = 16
    blocks: int = 4
    components: int = 3
    residual_skip: bool = False  # weight files without the key are models without it

    def __post_init__(self) -> None:
        if not 1 <= self.components <= len(COMPONENT_SCALE_PRIORS):
            raise ValueError(f"components must be 1..{len(COMPONENT_SCALE_PRIORS)}")

    @property
    def multiple(self) -> int:
        """Image sides must be a multiple of this (one halving per stage)."""
        return 2**SCALES

    @property
    def dilations(self) -> tuple[int, ...]:
        """Seed B's rates 1, 2, 4, 8, 16, cycled over the blocks."""
        rates = (1, 2, 4, 8, 16)
        return tuple(rates[index % len(rates)] for index in range(self.blocks))


@dataclass
class StageContext:
    """What both coder sides know before a stage: the coarser level and what follows from it."""

    coarse: torch.Tensor  # (N, 1, h, w) int64
    baseline: torch.Tensor  # (N, 4, h, w) int64
    scale_index: torch.Tensor  # (N, 1, h, w) int64
    shift: torch.Tensor  # (N, 1, 1, 1) int64
    inputs: torch.Tensor  # (N, LEVEL_INPUTS + REFERENCE_INPUTS, h, w) integer activations
    reference_residual: torch.Tensor  # (N, 4, h, w) integer activations (zero without reference)

    def residual_inputs(self, sub: torch.Tensor) -> torch.Tensor:
        """Decoded sub-pixels (N, k, h, w) as network activations relative to their baselines."""
        k = sub.shape[1]
        return pyramid.quantized_input(sub - self.baseline[:, :k], self.shift)


def stage_context(
    coarse: torch.Tensor,
    reference_fine: torch.Tensor | None = None,
    reference_coarse: torch.Tensor | None = None,
) -> StageContext:
    """The stage's deterministic quantities; the reference's levels at the same two scales when
    a reference slice is used."""
    baseline = pyramid.baseline(coarse)
    scale_index = pyramid.content_scale_index(coarse)
    shift = pyramid.norm_shift(coarse)
    shifted = pyramid.shifted
    across = pyramid.quantized_input(shifted(coarse, 0, 1) - shifted(coarse, 0, -1), shift)
    down = pyramid.quantized_input(shifted(coarse, 1, 0) - shifted(coarse, -1, 0), shift)
    detail = pyramid.quantized_input(pyramid.local_detail(coarse), shift)
    # log2(sigma / 2**shift) in 1/16 octaves: how noisy the block is, in the network's units.
    relative_scale = 2 * scale_index + 16 * (SCALE_MIN_LOG2 - shift)
    scale = relative_scale.clamp(-ACTIVATION_LIMIT, ACTIVATION_LIMIT).to(torch.float32)
    if reference_fine is None or reference_coarse is None:
        reference = torch.zeros(coarse.shape[0], REFERENCE_INPUTS, *coarse.shape[-2:], device=coarse.device)
        reference_residual = reference[:, 2:]
    else:
        reference_residual = pyramid.quantized_input(
            pyramid.sub_pixels(reference_fine) - pyramid.baseline(reference_coarse), shift
        )
        present = torch.full_like(across, float(ACTIVATION_STEPS))
        difference = pyramid.quantized_input(coarse - reference_coarse, shift)
        reference = torch.cat([present, difference, reference_residual], dim=1)
    inputs = torch.cat([across, down, detail, scale, reference], dim=1)
    return StageContext(coarse, baseline, scale_index, shift, inputs, reference_residual)


class PassHead(nn.Module):
    """Features + earlier residuals -> mixture parameters of one sub-pixel per block."""

    def __init__(self, config: ModelConfig, extra_inputs: int) -> None:
        super().__init__()
        self.merge = conv3x3(config.channels + extra_inputs, config.channels)
        self.expand = DepthwiseSeparableConv(config.channels, config.channels)
        self.attention = PixelAttention(config.channels)
        outputs = config.components * PARAMETERS_PER_COMPONENT
        self.project = DepthwiseSeparableConv(config.channels, outputs)
        nn.init.zeros_(self.project.pointwise.weight)  # start as the interpolating predictor
        nn.init.zeros_(self.project.pointwise.bias)
        self.extra_inputs = extra_inputs
        self.skip = IntConv2d(extra_inputs, outputs, 1) if config.residual_skip else None
        if self.skip is not None:
            nn.init.zeros_(self.skip.weight)
            nn.init.zeros_(self.skip.bias)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        hidden = requantize(leaky_relu(self.merge(q)))
        attended = self.attention(requantize(leaky_relu(self.expand(hidden))))
        raw = self.project(attended)
        if self.skip is not None:
            raw = raw + self.skip(q[:, -self.extra_inputs :])
        return raw


class StagePredictor(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.features = FeatureExtractor(LEVEL_INPUTS + REFERENCE_INPUTS, config.channels, config.dilations)
        # pass k sees k earlier residuals and the reference's residual at its own sub-pixel
        self.heads = nn.ModuleList(PassHead(config, k + 1) for k in range(pyramid.SUB_PIXELS))


class PyramidModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.stages = nn.ModuleList(StagePredictor(config) for _ in range(SCALES))  # [s]: level s

    def features(self, stage: int, context: StageContext) -> torch.Tensor:
        return self.stages[stage].features(context.inputs)

    def pass_parameters(
        self, stage: int, sub_pixel: int, features: torch.Tensor, context: StageContext, decoded: torch.Tensor
    ) -> torch.Tensor:
        """Raw parameters (N, h, w, K, 3) of sub-pixel `sub_pixel` given the decoded earlier
        sub-pixels (N, >= sub_pixel, h, w) of the same blocks."""
        inputs = torch.cat(
            [
                features,
                context.residual_inputs(decoded[:, :sub_pixel]),
                context.reference_residual[:, sub_pixel : sub_pixel + 1],
            ],
            dim=1,
        )
        raw = self.stages[stage].heads[sub_pixel](inputs)
        n, _, height, width = raw.shape
        raw = raw.view(n, self.config.components, PARAMETERS_PER_COMPONENT, height, width)
        return raw.permute(0, 3, 4, 1, 2).clamp(-RAW_LIMIT, RAW_LIMIT)

    def bits(
        self, image: torch.Tensor, bit_depth: int, reference: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Training loss: bits of levels 0..SCALES-1 given level SCALES (which a standard codec
        codes), total and per stage (finest first).

        image, reference: (N, 1, H, W) integer samples (any dtype), H and W multiples of 8.
        """
        levels = pyramid.build(image.long(), SCALES)
        reference_levels = pyramid.build(reference.long(), SCALES) if reference is not None else None
        max_value = 2**bit_depth - 1
        per_stage = []
        for stage in range(SCALES):
            context = stage_context(
                levels[stage + 1],
                *((reference_levels[stage], reference_levels[stage + 1]) if reference_levels else ()),
            )
            sub = pyramid.sub_pixels(levels[stage])
            features = self.features(stage, context)
            total = torch.zeros((), device=image.device)
            for k in range(pyramid.SUB_PIXELS):
                raw = self.pass_parameters(stage, k, features, context, sub)
                mean, log_scale, log_weight = float_parameters(raw, context, k)
                if k < pyramid.SUB_PIXELS - 1:
                    log_p = mixture_log_probability(sub[:, k].float(), mean, log_scale, log_weight, max_value)
                else:
                    base = pyramid.last_sub_pixel_base(context.coarse, sub[:, :3])[:, 0]
                    log_p = remainder_log_probability(
                        sub[:, 3] - base, base, mean, log_scale, log_weight, max_value
                    )
                total = total - log_p.sum() / LOG2
            per_stage.append(total)
        return sum(per_stage), per_stage


def remainder_log_probability(
    remainder: torch.Tensor,
    base: torch.Tensor,
    mean: torch.Tensor,
    log_scale: torch.Tensor,
    log_weight: torch.Tensor,
    max_value: int,
) -> torch.Tensor:
    """log P(base + remainder | the value is one of base..base + 3), as the coder's
    four-symbol CDF (candidates outside 0..max_value are impossible)."""
    candidates = base.unsqueeze(-1) + torch.arange(4, device=base.device)
    log_p = mixture_log_probability(
        candidates.float(), mean.unsqueeze(-2), log_scale.unsqueeze(-2), log_weight.unsqueeze(-2), max_value
    )
    log_p = log_p.masked_fill((candidates < 0) | (candidates > max_value), -math.inf)
    chosen = torch.gather(log_p, -1, remainder.long().unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(log_p, dim=-1)


def _priors(components: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    scale = torch.tensor(COMPONENT_SCALE_PRIORS[:components], device=device)
    logit = torch.tensor(COMPONENT_LOGIT_PRIORS[:components], device=device)
    return scale, logit


def _offsets(raw: torch.Tensor, context: StageContext) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raw outputs -> (mean offset in 1/16 pixels, scale steps, logit steps), not yet rounded:
    the one place both the loss and the coder take them from, so both round the same floats."""
    unit = (1 << context.shift).to(torch.float32).view(-1, 1, 1, 1)  # 2**shift, exact
    return raw[..., 0] * unit, raw[..., 1] / 2, raw[..., 2] / 2


def float_parameters(
    raw: torch.Tensor, context: StageContext, sub_pixel: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean in pixels, natural log sigma, normalised log weights), each (N, h, w, K), on the
    coder's grids with straight-through rounding."""
    scale_prior, logit_prior = _priors(raw.shape[-2], raw.device)
    mean_offset, scale_offset, logit_offset = _offsets(raw, context)
    baseline = context.baseline[:, sub_pixel].unsqueeze(-1).float()
    mean = baseline + round_straight_through(mean_offset) / 2**MEAN_FRAC_BITS
    index = context.scale_index[:, 0].unsqueeze(-1) + scale_prior + round_straight_through(scale_offset)
    index = index + (index.clamp(0, SCALE_LEVELS - 1) - index).detach()  # clamp, gradient kept
    log_scale = (index / SCALE_STEPS_PER_OCTAVE + SCALE_MIN_LOG2) * LOG2
    logit = logit_prior + round_straight_through(logit_offset)
    logit = logit + (logit.clamp(-LOGIT_LIMIT, LOGIT_LIMIT) - logit).detach()
    logits = logit / LOGIT_STEPS * LOG2
    return mean, log_scale, torch.log_softmax(logits, dim=-1)


def integer_mixture(raw: torch.Tensor, context: StageContext, sub_pixel: int) -> Mixture:
    """The coder's integer mixture (N * h * w, K) for the same raw outputs."""
    scale_prior, logit_prior = _priors(raw.shape[-2], raw.device)
    mean_offset, scale_offset, logit_offset = _offsets(raw, context)
    components = raw.shape[-2]
    baseline = context.baseline[:, sub_pixel].unsqueeze(-1) << MEAN_FRAC_BITS
    mean = baseline + torch.round(mean_offset).long()
    index = context.scale_index[:, 0].unsqueeze(-1) + scale_prior + torch.round(scale_offset).long()
    logit = logit_prior + torch.round(logit_offset).long()
    return mixture_from_indices(
        mean.reshape(-1, components), index.reshape(-1, components), logit.reshape(-1, components)
    )

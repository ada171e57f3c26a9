"""Seed B's building blocks (../shared/BRIEF.md) as integer networks, so that decoding gives the
same distributions on every device, thread count and batch shape.

Activations are integers in units of 1/ACTIVATION_STEPS, clamped to +-ACTIVATION_LIMIT. Every
conv uses integer weights (per output channel: round(w / s), |w| <= WEIGHT_LIMIT, with the
float scale s) and an integer bias, so its accumulator is a sum of integer products. Float32
holds such sums exactly while they stay below 2**24, and then the order of summation (threads,
tiling, GEMM blocking, CPU or GPU) cannot change the result. `IntConv2d` checks that bound for
its shape. After the conv come only correctly rounded IEEE operations (one multiply by s, the
Leaky ReLU multiply, round half to even), which give the same bits everywhere; the pixel
attention's sigmoid, which is not correctly rounded in any libm, is a table computed with
`decimal`. Training runs the same arithmetic with straight-through rounding, so the network
that is trained is the network that codes.

No batch norm anywhere: batch statistics would make a code depend on its batch.
"""

from __future__ import annotations

from decimal import Decimal, localcontext
from functools import cache

import torch
from torch import nn

ACTIVATION_STEPS = 16
ACTIVATION_LIMIT = 127
WEIGHT_LIMIT = 127
BIAS_LIMIT = 2**22
EXACT_LIMIT = 2**24  # float32 represents every integer of smaller magnitude
GATE_STEPS = 256  # pixel attention gates are integers g / GATE_STEPS in [0, 1]
LEAKY_SLOPE = 0.2


def round_straight_through(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest (ties to even); in training the gradient passes as if it were identity."""
    if not torch.is_grad_enabled():
        return torch.round(x)
    return x + (torch.round(x) - x).detach()


def requantize(x: torch.Tensor) -> torch.Tensor:
    """Activation units (float) -> integer activations in [-ACTIVATION_LIMIT, ACTIVATION_LIMIT]."""
    return round_straight_through(x).clamp(-ACTIVATION_LIMIT, ACTIVATION_LIMIT)


def leaky_relu(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x < 0, x * LEAKY_SLOPE, x)


class IntConv2d(nn.Conv2d):
    """A conv from integer activations to activation units (float, not yet rounded)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        taps = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        if taps * WEIGHT_LIMIT * ACTIVATION_LIMIT + BIAS_LIMIT >= EXACT_LIMIT:
            raise ValueError(f"{taps} taps per output can exceed float32's exact integers")

    def integer_parameters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(integer weight, integer bias, per-channel scale); the output is scale * (w * q + b)."""
        scale = self.weight.detach().abs().amax(dim=(1, 2, 3)).clamp_min(1e-8) / WEIGHT_LIMIT
        weight = round_straight_through(self.weight / scale[:, None, None, None])
        # bias is in real units; q is in 1/ACTIVATION_STEPS, so w * q is in scale / STEPS units.
        bias = round_straight_through(self.bias * ACTIVATION_STEPS / scale).clamp(-BIAS_LIMIT, BIAS_LIMIT)
        return weight, bias, scale

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        weight, bias, scale = (
            self.integer_parameters() if torch.is_grad_enabled() else self._coding_parameters()
        )
        accumulator = self._conv_forward(q, weight, bias)
        return accumulator * scale[None, :, None, None]

    def _coding_parameters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`integer_parameters`, computed once per version of the weights: a tile's passes call
        every conv many times, and coding never changes the weights (loading them does, and
        bumps their version)."""
        key = (self.weight._version, self.bias._version, self.weight.device)
        if getattr(self, "_coding_key", None) != key:
            self._coding_cache = self.integer_parameters()
            self._coding_key = key
        return self._coding_cache

    def _conv_forward(self, q: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if q.is_cuda:
            # cuDNN may pick Winograd / FFT algorithms (or TF32), which are not exact on integers.
            with torch.backends.cudnn.flags(enabled=False):
                return super()._conv_forward(q, weight, bias)
        return super()._conv_forward(q, weight, bias)


def conv3x3(in_channels: int, out_channels: int, dilation: int = 1, groups: int = 1) -> IntConv2d:
    return IntConv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, groups=groups)


class DilatedResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels, dilation)
        self.conv2 = conv3x3(channels, channels, dilation)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        hidden = requantize(leaky_relu(self.conv1(q)))
        return requantize(q + self.conv2(hidden))


class FeatureExtractor(nn.Module):
    """A head conv, dilated residual blocks, a tail conv with a long skip around the blocks."""

    def __init__(self, in_channels: int, channels: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.head = conv3x3(in_channels, channels)
        self.blocks = nn.Sequential(*(DilatedResidualBlock(channels, d) for d in dilations))
        self.tail = conv3x3(channels, channels)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        features = requantize(self.head(q))
        return requantize(features + self.tail(self.blocks(features)))


class DepthwiseSeparableConv(nn.Module):
    """Depthwise 3x3 then pointwise 1x1; returns activation units (the caller rounds)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise = conv3x3(in_channels, in_channels, groups=in_channels)
        self.pointwise = IntConv2d(in_channels, out_channels, 1)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.pointwise(requantize(self.depthwise(q)))


@cache
def _sigmoid_table() -> torch.Tensor:
    """round(GATE_STEPS * sigmoid(i / ACTIVATION_STEPS)) for i in [-LIMIT, LIMIT], exactly."""
    with localcontext() as context:
        context.prec = 40
        values = [
            int((GATE_STEPS / (1 + (Decimal(-i) / ACTIVATION_STEPS).exp())).to_integral_value())
            for i in range(-ACTIVATION_LIMIT, ACTIVATION_LIMIT + 1)
        ]
    return torch.tensor(values, dtype=torch.float32)


class PixelAttention(nn.Module):
    """A per-pixel, per-channel gate: 1x1 conv, sigmoid, multiplied into the features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = IntConv2d(channels, channels, 1)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        logit = requantize(self.gate(q))
        if torch.is_grad_enabled():
            exact = torch.sigmoid(logit / ACTIVATION_STEPS) * GATE_STEPS
            gate = round_straight_through(exact)
        else:
            table = _sigmoid_table().to(q.device)
            gate = table[(logit + ACTIVATION_LIMIT).long()]
        return round_straight_through(q * gate / GATE_STEPS)  # integer product, power-of-two divide

"""The building blocks Seed B names (../shared/BRIEF.md): dilated residual feature extractors and
the depthwise-separable / pixel-attention upsampler. No batch norm anywhere: a lossless codec
codes one image at a time, and batch statistics would make its output depend on the batch.
"""

from __future__ import annotations

import torch
from torch import nn

# Seed B: 8 residual blocks with dilation rates 1, 2, 4, 8, 16. The paper does not say how 8
# blocks take 5 rates; cycling them (1, 2, 4, 8, 16, 1, 2, 4) covers a 127-pixel receptive field
# and keeps local detail in the last blocks.
DILATIONS = (1, 2, 4, 8, 16, 1, 2, 4)
LEAKY_SLOPE = 0.2


class DilatedResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.activation = nn.LeakyReLU(LEAKY_SLOPE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.activation(self.conv1(x)))


class FeatureExtractor(nn.Module):
    """E(s) / the trunk of D(s): a head conv, the dilated residual blocks, a tail conv with a
    long skip around the blocks."""

    def __init__(self, in_channels: int, channels: int, dilations: tuple[int, ...] = DILATIONS) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.Sequential(*(DilatedResidualBlock(channels, d) for d in dilations))
        self.tail = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(x)
        return features + self.tail(self.blocks(features))


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=kernel_size // 2, groups=in_channels
        )
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class PixelAttention(nn.Module):
    """A per-pixel, per-channel gate: 1x1 conv, sigmoid, multiplied into the features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.gate(x))


class Upsampler(nn.Module):
    """DS conv (C, C, 3) -> pixel attention -> DS conv (C, 4 * out, 3) -> pixel shuffle x2.

    Seed B's (C, 4, 3) makes one output channel; the predictors need `out_channels` (the
    distribution parameters of every sub-pixel), so the second conv makes 4 * out_channels.
    """

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.expand = DepthwiseSeparableConv(channels, channels, 3)
        self.attention = PixelAttention(channels)
        self.project = DepthwiseSeparableConv(channels, 4 * out_channels, 3)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.project(self.attention(self.expand(x))))

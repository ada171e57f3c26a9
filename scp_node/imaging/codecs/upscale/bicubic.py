"""`bicubic`: the upscale scheme with the exact integer bicubic upscaler: bounded
near-lossless storage for sites without upscaler weights."""

from __future__ import annotations

import numpy as np

from scp_node.imaging.codecs.upscale.resample import upscale
from scp_node.imaging.codecs.upscale.scheme import UpscaleCodec


class BicubicCodec(UpscaleCodec):
    name = "bicubic"

    def recipe(self, pixels: np.ndarray) -> bytes:
        return b""  # integer arithmetic: the small image alone fixes the prediction

    def upscale(self, small: np.ndarray, max_value: int, recipe: bytes) -> np.ndarray:
        return upscale(small, self.scale, max_value)

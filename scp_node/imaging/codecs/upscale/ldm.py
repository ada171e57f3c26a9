"""`ldm`: the upscale scheme with diffusers' latent upscaler as predictor (Seed A).

Grayscale planes go to the pipeline as three equal channels in [0, 1] (value / max) and come
back as the channels' mean, rounded to the stored bit depth; sides are padded to multiples of
32 and cropped back; x4 is the x2 pipeline applied twice.

The recipe stored in every payload holds what fixes the prediction: the generator seed (from
the pixels, so a re-run job writes the same blob), steps, guidance, the device class and CPU
thread count of the encode, and the weights' digest. Decode runs with those; on a machine
whose arithmetic still differs, the scheme's prediction digest refuses the decode.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

import numpy as np
import torch

from scp_node.imaging.codecs.base import CodecUnavailable
from scp_node.imaging.codecs.settings import CodecSettings, LdmConfig
from scp_node.imaging.codecs.upscale.latent_upscaler import LatentUpscaler, diffusers_installed, load_upscaler
from scp_node.imaging.codecs.upscale.scheme import PredictionMismatch, UpscaleCodec

PAD_MULTIPLE = 32
MIN_SIDE = 64  # the UNet halves the 2x latents three times; reflect padding needs 2 at the bottom
_RECIPE = "<QHfBH"  # seed, steps, guidance, device class, CPU threads; then the weights digest
DEVICE_CLASSES = ("cpu", "cuda")


class LdmCodec(UpscaleCodec):
    """Options: `scale`, `delta` as every upscale codec; `steps` and `guidance` override
    compression.ldm's for this rule."""

    name = "ldm"
    available = diffusers_installed()

    def __init__(self, settings: LdmConfig, **options: Any) -> None:
        super().__init__(**options)
        self.steps = int(options.get("steps", settings.steps))
        self.guidance = float(options.get("guidance", settings.guidance))
        self._settings = settings
        self._upscaler = self._upscaler_on(_device(settings.device))

    @classmethod
    def unavailable_reason(cls, config: CodecSettings) -> str | None:
        if not cls.available:
            return "ldm needs diffusers and transformers: pip install 'scp-node[ldm]'"
        if config.ldm.weights_dir is None:
            return (
                "ldm needs compression.ldm.weights_dir: a local StableDiffusionLatentUpscalePipeline "
                "directory (e.g. a copy of stabilityai/sd-x2-latent-upscaler)"
            )
        if not config.ldm.weights_dir.is_dir():
            return f"ldm weights directory {config.ldm.weights_dir} does not exist"
        return None

    @classmethod
    def from_config(cls, config: CodecSettings, **options: Any) -> LdmCodec:
        return cls(config.ldm, **options)

    def recipe(self, pixels: np.ndarray) -> bytes:
        seed = int.from_bytes(hashlib.sha256(pixels.tobytes()).digest()[:8], "little") >> 1
        device_class = DEVICE_CLASSES.index(self._upscaler.device.type)
        fields = struct.pack(_RECIPE, seed, self.steps, self.guidance, device_class, torch.get_num_threads())
        return fields + self._upscaler.digest

    def upscale(self, small: np.ndarray, max_value: int, recipe: bytes) -> np.ndarray:
        seed, steps, guidance, device_class, threads = struct.unpack_from(_RECIPE, recipe)
        upscaler = self._upscaler_for(DEVICE_CLASSES[device_class])
        if recipe[struct.calcsize(_RECIPE) :] != upscaler.digest:
            raise PredictionMismatch(f"ldm: coded with weights other than {self._settings.weights_dir}")
        rows, columns = small.shape
        padded = np.pad(small, ((0, _padding(rows)), (0, _padding(columns))), mode="edge")
        image = torch.from_numpy(padded.astype(np.float32) / max_value)[None, None].expand(1, 3, -1, -1)
        for _ in range(self.scale.bit_length() - 1):
            image = upscaler.upscale_twice(image, seed=seed, steps=steps, guidance=guidance, threads=threads)
        plane = np.rint(image[0].mean(0).numpy() * max_value)
        return np.clip(plane, 0, max_value).astype(np.int64)[: rows * self.scale, : columns * self.scale]

    def _upscaler_for(self, device_class: str) -> LatentUpscaler:
        """The encoder's device class: a GPU node decodes CPU-coded blobs on its CPU; a CPU node
        cannot repeat a GPU's arithmetic and says so before minutes of diffusion."""
        if device_class == self._upscaler.device.type:
            return self._upscaler
        if device_class == "cuda" and not torch.cuda.is_available():
            raise PredictionMismatch("ldm: coded on a GPU; this machine has none to repeat the prediction")
        return self._upscaler_on(device_class)

    def _upscaler_on(self, device: str) -> LatentUpscaler:
        try:
            return load_upscaler(self._settings.weights_dir, device)
        except (OSError, ValueError) as exc:  # missing or damaged files, a foreign layout
            raise CodecUnavailable(
                f"ldm weights in {self._settings.weights_dir} cannot be loaded: {exc}"
            ) from exc


def _device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return setting


def _padding(side: int) -> int:
    return max(MIN_SIDE, side + -side % PAD_MULTIPLE) - side

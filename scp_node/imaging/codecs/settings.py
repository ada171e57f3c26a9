"""The site settings codecs read (weights they load), as types of the codec library's own: the
node's config embeds them (compression.ldm) and builds its SiteCodecs from them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class LdmConfig(BaseModel):
    """The `ldm` codec's upscaler: a StableDiffusionLatentUpscalePipeline saved in diffusers'
    layout (e.g. a local copy of stabilityai/sd-x2-latent-upscaler). Unset: `ldm` is unavailable."""

    model_config = ConfigDict(extra="forbid")  # a typo in config.yaml fails loudly

    weights_dir: Path | None = None
    steps: int = Field(default=20, ge=1)  # denoising steps per x2 pass (a rule's options may override)
    guidance: float = Field(default=0.0, ge=0.0)  # classifier-free guidance scale; 0 = none
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda where present


class CodecSettings(Protocol):
    """What SiteCodecs is built from: the node passes its compression config, tests anything alike."""

    ldm: LdmConfig

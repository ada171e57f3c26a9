"""A tiny, randomly initialised StableDiffusionLatentUpscalePipeline, saved in diffusers' layout.

Tests and the quality benchmark need the real pipeline classes and the real loading code but
cannot download the 1.4 GB `sd-x2-latent-upscaler`. This builds the same classes at toy
size (random weights, a 30-token vocabulary), so `ldm` runs end to end anywhere; its pictures
are meaningless, which is why benchmark rows made with it say "tiny".
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

# Byte-level BPE needs no merges for an empty prompt; the vocabulary just has to hold the
# special tokens and a few characters.
_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
_CHARACTERS = "abcdefghijklmnopqrstuvwxyz!"
TEXT_WIDTH = 32
MAX_TOKENS = 16


def save_tiny_pipeline(directory: Path, seed: int = 0) -> Path:
    """Write a tiny random pipeline to `directory` (created) and return it."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionLatentUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        act_fn="gelu",
        attention_head_dim=8,
        norm_num_groups=None,
        block_out_channels=[32, 32, 64, 64],
        time_cond_proj_dim=128 + TEXT_WIDTH,  # noise-level embedding (128) + pooled text
        conv_in_kernel=1,
        conv_out_kernel=1,
        cross_attention_dim=TEXT_WIDTH,
        down_block_types=("KDownBlock2D", *["KCrossAttnDownBlock2D"] * 3),
        in_channels=8,  # latents + the low-resolution image's latents
        mid_block_type=None,
        only_cross_attention=False,
        out_channels=5,  # latents + an unused variance channel
        resnet_time_scale_shift="scale_shift",
        time_embedding_type="fourier",
        timestep_post_act="gelu",
        up_block_types=(*["KCrossAttnUpBlock2D"] * 3, "KUpBlock2D"),
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 32, 64, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=TEXT_WIDTH,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(_SPECIAL_TOKENS) + 2 * len(_CHARACTERS),
            max_position_embeddings=MAX_TOKENS,
            hidden_act="quick_gelu",
        )
    )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = CLIPTokenizer(
        vocab_file=str(_write_vocabulary(directory)),
        merges_file=str(_write_merges(directory)),
        model_max_length=MAX_TOKENS,
    )
    pipeline = StableDiffusionLatentUpscalePipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=EulerDiscreteScheduler(prediction_type="sample"),
    )
    pipeline.save_pretrained(directory)
    for scratch in ("tiny-vocab.json", "tiny-merges.txt"):
        (directory / scratch).unlink()
    return directory


def _write_vocabulary(directory: Path) -> Path:
    tokens = [*_SPECIAL_TOKENS, *_CHARACTERS, *(c + "</w>" for c in _CHARACTERS)]
    path = directory / "tiny-vocab.json"
    path.write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
    return path


def _write_merges(directory: Path) -> Path:
    path = directory / "tiny-merges.txt"
    path.write_text("#version: 0.2\n")
    return path

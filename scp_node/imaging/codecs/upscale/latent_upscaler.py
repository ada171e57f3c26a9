"""Running diffusers' StableDiffusionLatentUpscalePipeline as a x2 image upscaler.

The pipeline loads once per (directory, device) in a process, from local files only: a
hospital node never reaches a model hub. Prompts play no part in storage, so the empty
prompt's text embeddings are computed once at load and reused for every image.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

# Files whose bytes decide the pipeline's output (weights, configs, vocabulary).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".txt")


def diffusers_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("diffusers", "transformers"))


class LatentUpscaler:
    """One loaded pipeline. Calls are serialised: the scheduler keeps per-call state, and on
    the CPU the thread count is pinned for the call because it changes float sums."""

    def __init__(self, weights_dir: Path, device: torch.device) -> None:
        from diffusers import StableDiffusionLatentUpscalePipeline

        self.device = device
        self.digest = weights_digest(weights_dir)
        self.pipeline = StableDiffusionLatentUpscalePipeline.from_pretrained(
            weights_dir, local_files_only=True, low_cpu_mem_usage=False
        ).to(device)
        self.pipeline.set_progress_bar_config(disable=True)
        with torch.no_grad():
            embeddings, _, pooled, _ = self.pipeline.encode_prompt([""], device, False, None)
        self._embeddings, self._pooled = embeddings, pooled
        self._lock = threading.Lock()

    @torch.no_grad()
    def upscale_twice(
        self, images: torch.Tensor, *, seed: int, steps: int, guidance: float, threads: int
    ) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1], sides multiples of 8 -> (N, 3, 2H, 2W) in [0, 1] on the CPU."""
        count = images.shape[0]
        embeddings = self._embeddings.expand(count, -1, -1)
        pooled = self._pooled.expand(count, -1)
        with self._lock, _pinned_threads(threads if self.device.type == "cpu" else None):
            result = self.pipeline(
                image=images.to(self.device),
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator(self.device).manual_seed(seed),
                prompt_embeds=embeddings,
                pooled_prompt_embeds=pooled,
                negative_prompt_embeds=embeddings,  # used only with guidance > 1
                negative_pooled_prompt_embeds=pooled,
                output_type="pt",
            )
        return result.images.float().cpu()


@contextlib.contextmanager
def _pinned_threads(threads: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@functools.lru_cache(maxsize=4)
def load_upscaler(weights_dir: Path, device: str) -> LatentUpscaler:
    return LatentUpscaler(weights_dir, torch.device(device))


def weights_digest(weights_dir: Path) -> bytes:
    """SHA-256 over every file that shapes the output, with its relative path: a blob coded
    with one model is refused by another instead of decoding to a different picture."""
    digest = hashlib.sha256()
    files = sorted(p for p in weights_dir.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no pipeline files under {weights_dir}")
    for path in files:
        digest.update(path.relative_to(weights_dir).as_posix().encode() + b"\0")
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.digest()

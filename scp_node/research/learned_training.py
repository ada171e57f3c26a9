"""Train Seed B's model on folders of DICOM files: random patches, Adam, bits per sub-pixel.

Only the training side of `image_corpus.split_by_patient` is used, and noise images never, so
the held-out patients stay unseen for the benchmark. Every step takes `batch` crops of one image
(one bit depth per step; the model normalises by it). Colour images train as their planes.
The checkpoint holds model, optimiser, step and random state: a run stopped at any point goes
on from its last checkpoint with `resume`, on CPU or GPU alike.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from scp_node.imaging.codecs.learned.model import ModelConfig, MultiScaleModel
from scp_node.research.image_corpus import Image, load_corpus, split_by_patient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingConfig:
    steps: int = 1000
    patch: int = 128
    batch: int = 8
    learning_rate: float = 1e-3
    # Cosine decay to this by the last step. Means are predicted in units of the whole range, so
    # a 16-bit mean moves by lr x 65535 x (feature size) per step: only a small final rate lets
    # them settle to within a few values.
    final_learning_rate: float = 1e-5
    checkpoint_every: int = 100
    seed: int = 0


def sample_batch(image: Image, patch: int, batch: int, generator: random.Random) -> torch.Tensor:
    """`batch` random crops of one frame and plane, edge-padded where the image is smaller."""
    frame = generator.randrange(image.desc.frames)
    plane = generator.randrange(image.desc.samples)
    pixels = image.samples[frame, :, :, plane].astype(np.float32)
    rows, columns = pixels.shape
    padded = np.pad(pixels, ((0, max(0, patch - rows)), (0, max(0, patch - columns))), mode="edge")
    crops = []
    for _ in range(batch):
        top = generator.randrange(padded.shape[0] - patch + 1)
        left = generator.randrange(padded.shape[1] - patch + 1)
        crops.append(padded[top : top + patch, left : left + patch])
    return torch.from_numpy(np.stack(crops))[:, None]


def train(
    folders: list[Path],
    checkpoint: Path,
    training: TrainingConfig,
    model_config: ModelConfig | None = None,
    device: str | None = None,
) -> dict[str, float]:
    """Train (or resume) and return the last step's bits per sub-pixel of the image scale."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    state = torch.load(checkpoint, map_location=device, weights_only=False) if checkpoint.exists() else None
    config = ModelConfig(**state["model_config"]) if state else (model_config or ModelConfig())
    if training.patch % config.multiple:
        raise ValueError(f"patch {training.patch} is not a multiple of {config.multiple}")
    images = split_by_patient(load_corpus(folders).images).train
    if not images:
        raise ValueError(f"no trainable images under {', '.join(map(str, folders))}")
    weights = [image.sample_count for image in images]
    model = MultiScaleModel(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=training.learning_rate)
    step, generator = 0, random.Random(training.seed)
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        generator.setstate(state["python_random"])
        log.info("resumed %s at step %d", checkpoint, step)
    started, last = time.monotonic(), {}
    while step < training.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, training)
        image = generator.choices(images, weights=weights)[0]
        patches = sample_batch(image, training.patch, training.batch, generator).to(device)
        optimizer.zero_grad()
        total, per_scale = model.bits(patches, image.desc.bit_depth)
        (total / patches.numel()).backward()
        optimizer.step()
        step += 1
        last = {
            "step": step,
            "bpsp_total": float(total.detach()) / patches.numel(),
            "bpsp_image": float(per_scale[-1].detach()) / patches.numel(),
        }
        if step % training.checkpoint_every == 0 or step == training.steps:
            _save(checkpoint, model, optimizer, step, generator, config, training, folders)
            rate = step / max(time.monotonic() - started, 1e-9)
            log.info(
                "step %d: %.3f bpsp (image %.3f), %.2f steps/s",
                step,
                last["bpsp_total"],
                last["bpsp_image"],
                rate,
            )
    return last


def learning_rate_at(step: int, training: TrainingConfig) -> float:
    """Cosine from learning_rate at step 0 to final_learning_rate at training.steps; a function
    of the step alone, so a resumed run continues the same schedule."""
    progress = min(step / max(training.steps, 1), 1.0)
    span = training.learning_rate - training.final_learning_rate
    return training.final_learning_rate + span * 0.5 * (1 + math.cos(math.pi * progress))


def _save(
    checkpoint: Path,
    model: MultiScaleModel,
    optimizer: torch.optim.Optimizer,
    step: int,
    generator: random.Random,
    config: ModelConfig,
    training: TrainingConfig,
    folders: list[Path],
) -> None:
    """Write to a temporary name and rename, so a run killed mid-save keeps its last checkpoint."""
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    partial = checkpoint.with_suffix(checkpoint.suffix + ".partial")
    torch.save(
        {
            "model_config": asdict(config),
            "training_config": asdict(training),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "python_random": generator.getstate(),
            "folders": [str(folder) for folder in folders],
        },
        partial,
    )
    partial.replace(checkpoint)

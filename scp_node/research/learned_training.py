"""Train the learned codec's pyramid model on folders of DICOM files, on CPU, resumably.

Only the training side of `image_corpus.split_by_patient` is used, and noise images never, so
the held-out patients (and with them whole series) stay unseen for evaluation. A step takes
`batch` random crops of one image (one bit depth per step); with probability
`series_fraction` the crops come from a pair of neighbouring slices and the model codes the
second given the first, so one set of weights serves single images and series mode. Crops are
coded as the codec codes them: as ranks in their image's value table where the codec would use
one (value_map.py; digitised film mammograms, for one). Modality
groups are drawn equally often, so eight large mammograms do not drown the CT slices.

The checkpoint holds model, optimiser, step, random state and training seconds; it is written
atomically every `checkpoint_every` steps or `checkpoint_seconds`, whichever comes first, and
the loss curve rows of those steps are appended to `loss.csv` beside it just before. A run
stopped at any point resumes from its checkpoint with the same data draws and learning-rate
schedule, and the CSV loses the rows past the checkpoint, so the curve continues unbroken.

    OMP_NUM_THREADS=1 python -m scp_node.research.learned_training FOLDER... --checkpoint RUN/checkpoint.pt
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from scp_node.imaging.codecs.learned import value_map
from scp_node.imaging.codecs.learned.model import ModelConfig, PyramidModel
from scp_node.research.image_corpus import Image, SlicePair, load_corpus, slice_pairs, split_by_patient

log = logging.getLogger(__name__)

CSV_FIELDS = ("step", "training_seconds", "learning_rate", "bpsp_single", "bpsp_series")


class TrainingRefused(Exception):
    """The folders or options cannot train a model (an admin's input: one line, no traceback)."""


@dataclass(frozen=True)
class TrainingConfig:
    steps: int = 1000
    patch: int = 128
    batch: int = 4
    learning_rate: float = 1e-3
    # Cosine decay to this by the last step, so the offsets settle in the end.
    final_learning_rate: float = 1e-5
    checkpoint_every: int = 100
    checkpoint_seconds: float = 180.0
    series_fraction: float = 0.3
    # Gradient norm clip: a patch of extreme outliers (a value 1000 sigmas off) should not
    # throw the weights away in one step.
    gradient_limit: float = 10.0
    seed: int = 0


def training_config(args: argparse.Namespace) -> TrainingConfig:
    """The TrainingConfig that command-line `args` set (this module's main and `codec train`);
    fields they do not name keep their defaults."""
    names = [field.name for field in fields(TrainingConfig) if hasattr(args, field.name)]
    return TrainingConfig(**{name: getattr(args, name) for name in names})


@dataclass
class TrainingData:
    """The training side: single images by modality group, neighbouring-slice pairs, and each
    image's value table where the codec would code ranks instead of values (value_map.py)."""

    groups: dict[str, list[Image]]
    pairs: list[SlicePair]
    tables: dict[Path, np.ndarray]

    @classmethod
    def from_folders(cls, folders: list[Path]) -> TrainingData:
        images = [
            image
            for image in split_by_patient(load_corpus(folders).images).train
            if image.desc.bit_depth <= 16
        ]
        groups: dict[str, list[Image]] = {}
        tables = {}
        for image in images:
            groups.setdefault(image.modality, []).append(image)
            table = value_map.build(image.samples, image.desc.bit_depth)
            if table is not None:
                tables[image.path] = table
        return cls(groups, slice_pairs(images), tables)

    def as_coded(self, image: Image, crops: list[np.ndarray], bit_depth: int) -> tuple[torch.Tensor, int]:
        """Crops as the codec codes them: ranks in `image`'s value table where it has one."""
        table = self.tables.get(image.path)
        if table is not None:
            crops = [value_map.ranks(crop, table).astype(np.int64) for crop in crops]
            bit_depth = value_map.rank_bits(table)
        return torch.from_numpy(np.stack(crops))[:, None], bit_depth


def _crop_corner(rows: int, columns: int, patch: int, generator: random.Random) -> tuple[int, int]:
    return generator.randrange(max(rows - patch, 0) + 1), generator.randrange(max(columns - patch, 0) + 1)


def _crop(plane: np.ndarray, top: int, left: int, patch: int) -> np.ndarray:
    """A patch x patch crop, edge-padded where the image is smaller."""
    region = plane[top : top + patch, left : left + patch].astype(np.int64)
    return np.pad(region, ((0, patch - region.shape[0]), (0, patch - region.shape[1])), mode="edge")


def sample_single(
    data: TrainingData, patch: int, batch: int, generator: random.Random
) -> tuple[torch.Tensor, int]:
    """`batch` crops of one frame and plane of one image: ((batch, 1, patch, patch), bit depth)."""
    group = data.groups[generator.choice(sorted(data.groups))]
    image = generator.choices(group, weights=[math.sqrt(image.sample_count) for image in group])[0]
    plane = image.samples[
        generator.randrange(image.desc.frames), :, :, generator.randrange(image.desc.samples)
    ]
    crops = [_crop(plane, *_crop_corner(*plane.shape, patch, generator), patch) for _ in range(batch)]
    return data.as_coded(image, crops, image.desc.bit_depth)


def sample_pair(
    data: TrainingData, patch: int, batch: int, generator: random.Random
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(targets, references, bit depth): the same crops of two neighbouring slices."""
    pair = generator.choice(data.pairs)
    plane = generator.randrange(pair.target.desc.samples)
    target = pair.target.samples[pair.target_frame, :, :, plane]
    reference = pair.reference.samples[pair.reference_frame, :, :, plane]
    targets, references = [], []
    for _ in range(batch):
        corner = _crop_corner(*target.shape, patch, generator)
        targets.append(_crop(target, *corner, patch))
        references.append(_crop(reference, *corner, patch))
    coded_targets, bit_depth = data.as_coded(pair.target, targets, pair.bit_depth)
    coded_references, _ = data.as_coded(pair.target, references, pair.bit_depth)  # the target's table
    return coded_targets, coded_references, bit_depth


def learning_rate_at(step: int, training: TrainingConfig) -> float:
    """Cosine from learning_rate at step 0 to final_learning_rate at training.steps; a function
    of the step alone, so a resumed run continues the same schedule."""
    progress = min(step / max(training.steps, 1), 1.0)
    span = training.learning_rate - training.final_learning_rate
    return training.final_learning_rate + span * 0.5 * (1 + math.cos(math.pi * progress))


def train(
    folders: list[Path],
    checkpoint: Path,
    training: TrainingConfig,
    model_config: ModelConfig | None = None,
    device: str | None = None,
    start_from: Path | None = None,
) -> dict[str, float]:
    """Train (or resume) to `training.steps`; returns the last step and its bits per sub-pixel.
    A new checkpoint's model starts from the weights in `start_from` where given."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    state = torch.load(checkpoint, map_location=device, weights_only=False) if checkpoint.exists() else None
    config = ModelConfig(**state["model_config"]) if state else (model_config or ModelConfig())
    if training.patch % config.multiple:
        raise TrainingRefused(f"patch {training.patch} is not a multiple of {config.multiple}")
    data = TrainingData.from_folders(folders)
    if not data.groups:
        raise TrainingRefused(f"no trainable images under {', '.join(map(str, folders))}")
    log.info(
        "training on %s; %d slice pairs",
        ", ".join(f"{group}: {len(images)}" for group, images in sorted(data.groups.items())),
        len(data.pairs),
    )
    model = PyramidModel(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=training.learning_rate)
    step, seconds, generator = 0, 0.0, random.Random(training.seed)
    curve = checkpoint.with_name("loss.csv")
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, seconds = state["step"], state.get("training_seconds", 0.0)
        generator.setstate(state["python_random"])
        log.info("resumed %s at step %d", checkpoint, step)
    elif start_from is not None:
        _start_from(model, start_from)
    _truncate_curve(curve, step)
    window: dict[str, list[float]] = {"single": [], "series": []}
    last: dict[str, float] = {"step": step}
    started, saved_at = time.monotonic(), time.monotonic()
    while step < training.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, training)
        series = bool(data.pairs) and generator.random() < training.series_fraction
        if series:
            patches, references, bit_depth = sample_pair(data, training.patch, training.batch, generator)
            references = references.to(device)
        else:
            patches, bit_depth = sample_single(data, training.patch, training.batch, generator)
            references = None
        optimizer.zero_grad()
        total, _ = model.bits(patches.to(device), bit_depth, references)
        loss = total / patches.numel()
        if torch.isfinite(loss):
            loss.backward()
            gradient_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), training.gradient_limit)
            if torch.isfinite(gradient_norm):
                optimizer.step()
            else:
                log.warning("step %d: non-finite gradient, skipped", step)
        step += 1
        bpsp = float(loss.detach())
        window["series" if series else "single"].append(bpsp)
        last = {"step": step, "bpsp": bpsp}
        due = (
            step % training.checkpoint_every == 0
            or time.monotonic() - saved_at >= training.checkpoint_seconds
        )
        if due or step == training.steps:
            now = time.monotonic()
            seconds += now - started
            started = saved_at = now
            row = _curve_row(step, seconds, learning_rate_at(step - 1, training), window)
            window = {"single": [], "series": []}
            _append_curve(curve, row)
            _save(checkpoint, model, optimizer, step, seconds, generator, config, training, folders)
            log.info("checkpoint %s", json.dumps(row))
    return last


def _curve_row(step: int, seconds: float, rate: float, window: dict[str, list[float]]) -> dict[str, float]:
    """One loss-curve point: the mean bits per sub-pixel of the steps since the last one."""

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 4) if values else float("nan")

    return {
        "step": step,
        "training_seconds": round(seconds, 1),
        "learning_rate": rate,
        "bpsp_single": mean(window["single"]),
        "bpsp_series": mean(window["series"]),
    }


def _append_curve(curve: Path, row: dict[str, float]) -> None:
    curve.parent.mkdir(parents=True, exist_ok=True)
    new = not curve.exists()
    with curve.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def _truncate_curve(curve: Path, step: int) -> None:
    """Drop rows past the checkpoint's step (a run killed between the CSV and the checkpoint)."""
    if not curve.exists():
        return
    with curve.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= step]
    partial = curve.with_suffix(".csv.partial")
    with partial.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(curve)


def _start_from(model: PyramidModel, weights: Path) -> None:
    """Load a weight file into a new model that may have layers more (they keep their zero
    start); anything else that differs is refused."""
    contents = torch.load(weights, map_location="cpu", weights_only=False)
    try:
        missing, unexpected = model.load_state_dict(contents["model"], strict=False)
    except RuntimeError as exc:  # a layer of another shape
        raise TrainingRefused(f"{weights} does not fit this model: {exc}") from exc
    added = [name for name in missing if ".skip." not in name]
    if added or unexpected:
        raise TrainingRefused(f"{weights} does not fit this model: {', '.join(added + unexpected)}")
    log.info("started from %s (%d layers new)", weights, len(missing))


def _save(
    checkpoint: Path,
    model: PyramidModel,
    optimizer: torch.optim.Optimizer,
    step: int,
    seconds: float,
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
            "training_seconds": seconds,
            "python_random": generator.getstate(),
            "folders": [str(folder) for folder in folders],
        },
        partial,
    )
    partial.replace(checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--checkpoint", type=Path, required=True, help="resumed when it exists")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    defaults = TrainingConfig()
    for name in ("steps", "patch", "batch", "checkpoint_every"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("learning_rate", "final_learning_rate", "checkpoint_seconds", "series_fraction"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    parser.add_argument("--channels", type=int, default=ModelConfig().channels, help="new checkpoints only")
    parser.add_argument("--blocks", type=int, default=ModelConfig().blocks, help="new checkpoints only")
    parser.add_argument(
        "--residual-skip", action="store_true", help="new checkpoints only: pass heads with a linear skip"
    )
    parser.add_argument(
        "--start-from",
        type=Path,
        help="new checkpoints only: start from these weights (a weight file of the same channels and "
        "blocks; layers they lack, such as the skips, start at zero)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    training = training_config(args)
    result = train(
        args.folders,
        args.checkpoint,
        training,
        ModelConfig(channels=args.channels, blocks=args.blocks, residual_skip=args.residual_skip),
        "cpu",
        start_from=args.start_from,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

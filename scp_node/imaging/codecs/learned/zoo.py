"""Weight files of the learned codec: the one the project ships, and any a site trains.

A weight file holds the model config, the state dict and a model card (what it was trained on,
for how long, what it measured). Blobs record the first bytes of the file's SHA-256, so a blob
is only ever decoded by the exact weights that coded it.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from scp_node.imaging.codecs.learned.model import ModelConfig, PyramidModel

SHIPPED_WEIGHTS = Path(__file__).parent / "weights" / "seedb.pt"
# Weights shipped before the current ones: blobs they coded still decode (by their digest).
RETIRED_WEIGHTS = SHIPPED_WEIGHTS.parent / "retired"
DIGEST_BYTES = 8


def save_weights(model: PyramidModel, path: Path, card: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    partial = path.with_suffix(path.suffix + ".partial")
    torch.save({"model_config": asdict(model.config), "model": state, "card": card}, partial)
    partial.replace(path)


def export_checkpoint(checkpoint: Path, out: Path) -> dict[str, Any]:
    """Weights only (no optimiser state) of a training checkpoint, with its card; returns the card.
    Replacing the shipped weights retires them first, so the blobs they coded stay readable."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model = PyramidModel(ModelConfig(**state["model_config"]))
    model.load_state_dict(state["model"])
    card = {
        "steps": state["step"],
        "training_seconds": state.get("training_seconds"),
        "training": state["training_config"],
        "folders": state.get("folders", []),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if out.is_file() and out.resolve() == SHIPPED_WEIGHTS.resolve():
        retire(out)
    save_weights(model, out, card)
    return card


def retire(path: Path) -> Path:
    """A copy of the weights at `path` among the retired ones, named by their digest."""
    target = RETIRED_WEIGHTS / f"{path.stem}-{weights_digest(path).hex()}.pt"
    if not target.is_file():
        RETIRED_WEIGHTS.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return target


def weights_digest(path: Path) -> bytes:
    return hashlib.sha256(path.read_bytes()).digest()[:DIGEST_BYTES]


def load_model(path: Path, device: torch.device) -> tuple[PyramidModel, bytes, dict[str, Any]]:
    """(model in eval mode on `device`, digest of the file, model card)."""
    contents = torch.load(path, map_location="cpu", weights_only=True)
    model = PyramidModel(ModelConfig(**contents["model_config"]))
    model.load_state_dict(contents["model"])
    return model.eval().to(device), weights_digest(path), contents.get("card", {})


def retired_weights(digest: bytes) -> Path | None:
    """The formerly shipped weight file with this digest, if the project still ships it."""
    for path in sorted(RETIRED_WEIGHTS.glob("*.pt")):
        if weights_digest(path) == digest:
            return path
    return None

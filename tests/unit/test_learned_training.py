"""The training script: runs on CPU over a folder of real DICOM files, checkpoints, resumes."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scp_node.research.learned_training import TrainingConfig, learning_rate_at, train
from tests.support import pydicom_test_file


def _train(folder: Path, checkpoint: Path, steps: int) -> dict:
    command = [sys.executable, "-m", "scp_node.cli", "codec", "train", str(folder)]
    command += ["--checkpoint", str(checkpoint), "--steps", str(steps), "--batch", "2", "--patch", "32"]
    command += ["--channels", "4", "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_training_checkpoints_and_resumes(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "OBXXXX1A.dcm"):
        (folder / name).write_bytes(pydicom_test_file(name).read_bytes())
    checkpoint = tmp_path / "model.pt"
    first = _train(folder, checkpoint, 3)
    assert first["step"] == 3 and checkpoint.exists()
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["step"] == 3 and saved["model_config"]["channels"] == 4

    resumed = _train(folder, checkpoint, 5)
    assert resumed["step"] == 5  # went on from step 3, not from scratch
    assert torch.load(checkpoint, weights_only=False)["step"] == 5
    assert not checkpoint.with_suffix(".pt.partial").exists()


def test_patch_size_must_fit_the_scales(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        train([tmp_path], tmp_path / "model.pt", TrainingConfig(patch=30))


def test_learning_rate_decays_from_start_to_final_along_a_cosine() -> None:
    training = TrainingConfig(steps=1000, learning_rate=1e-3, final_learning_rate=1e-5)
    rates = [learning_rate_at(step, training) for step in range(0, 1001, 50)]
    assert rates[0] == 1e-3 and abs(rates[-1] - 1e-5) < 1e-12
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert abs(learning_rate_at(500, training) - (1e-3 + 1e-5) / 2) < 1e-12

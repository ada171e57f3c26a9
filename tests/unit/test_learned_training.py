"""The training script: runs on CPU over a folder of real DICOM files, checkpoints, resumes the
same loss curve; slice pairs come from whole series ordered by position."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from scp_node.imaging.codecs.learned.model import ModelConfig, PyramidModel
from scp_node.imaging.codecs.learned.zoo import save_weights
from scp_node.research.image_corpus import load_corpus, slice_pairs, split_by_patient
from scp_node.research.learned_training import TrainingConfig, TrainingRefused, learning_rate_at, train
from tests.support import pydicom_test_file, shared_corpus


def _train(folder: Path, checkpoint: Path, steps: int) -> dict:
    command = [sys.executable, "-m", "scp_node.research.learned_training", str(folder)]
    command += ["--checkpoint", str(checkpoint), "--steps", str(steps), "--batch", "2", "--patch", "32"]
    command += ["--channels", "4", "--blocks", "1", "--checkpoint-every", "2", "--series-fraction", "0.5"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_training_checkpoints_and_resumes_the_same_curve(tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "emri_small.dcm"):
        (folder / name).write_bytes(pydicom_test_file(name).read_bytes())
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    first = _train(folder, checkpoint, 3)
    assert first["step"] == 3 and checkpoint.exists()
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["step"] == 3 and saved["model_config"]["channels"] == 4

    with (checkpoint.parent / "loss.csv").open("a") as curve:  # a row written after the checkpoint
        curve.write("4,9.9,0.001,1.0,nan\n")
    resumed = _train(folder, checkpoint, 5)
    assert resumed["step"] == 5  # went on from step 3, not from scratch
    assert torch.load(checkpoint, weights_only=False)["step"] == 5
    assert not checkpoint.with_suffix(".pt.partial").exists()
    with (checkpoint.parent / "loss.csv").open() as curve:
        rows = list(csv.DictReader(curve))
    assert [int(row["step"]) for row in rows] == [2, 3, 4, 5]
    seconds = [float(row["training_seconds"]) for row in rows]
    assert seconds == sorted(seconds)  # training time adds up across the resume


def test_patch_size_must_fit_the_scales(tmp_path: Path) -> None:
    with pytest.raises(TrainingRefused, match="multiple of 8"):
        train([tmp_path], tmp_path / "model.pt", TrainingConfig(patch=30))


def test_learning_rate_decays_from_start_to_final_along_a_cosine() -> None:
    training = TrainingConfig(steps=1000, learning_rate=1e-3, final_learning_rate=1e-5)
    rates = [learning_rate_at(step, training) for step in range(0, 1001, 50)]
    assert rates[0] == 1e-3 and abs(rates[-1] - 1e-5) < 1e-12
    assert all(a > b for a, b in itertools.pairwise(rates))
    assert abs(learning_rate_at(500, training) - (1e-3 + 1e-5) / 2) < 1e-12


def test_slice_pairs_follow_the_slice_normal_and_whole_series_stay_on_one_side() -> None:
    corpus = load_corpus([shared_corpus() / "series" / "mr-siemens-brain-t1post"])
    pairs = slice_pairs(corpus.images)
    assert len(pairs) == len(corpus.images) - 1
    gaps = [pair.target.position - pair.reference.position for pair in pairs]
    assert all(abs(gap - gaps[0]) < 0.01 and abs(gap) > 1 for gap in gaps)  # 6.5 mm, in order
    split = split_by_patient(corpus.images)
    assert not split.held_out or not split.train  # one patient: the series is never cut


def test_a_run_with_skips_starts_from_weights_without_them(tmp_path: Path) -> None:
    """--start-from: the new run's model holds the given weights, its skips at zero; weights
    of another shape are refused."""
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "CT_small.dcm").write_bytes(pydicom_test_file("CT_small.dcm").read_bytes())
    torch.manual_seed(0)
    start = PyramidModel(ModelConfig(channels=4, blocks=1))
    save_weights(start, tmp_path / "start.pt", {})
    training = TrainingConfig(steps=1, patch=32, batch=2, learning_rate=0.0, final_learning_rate=0.0)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    skipped = ModelConfig(channels=4, blocks=1, residual_skip=True)
    train([folder], checkpoint, training, skipped, "cpu", start_from=tmp_path / "start.pt")
    saved = torch.load(checkpoint, weights_only=False)
    assert saved["model_config"]["residual_skip"] is True
    for name, value in start.state_dict().items():
        assert torch.equal(saved["model"][name], value), name
    skips = [value for name, value in saved["model"].items() if ".skip." in name]
    assert skips and all(not value.any() for value in skips)
    with pytest.raises(TrainingRefused, match="does not fit"):
        wider = ModelConfig(channels=8, blocks=1, residual_skip=True)
        other = tmp_path / "other" / "checkpoint.pt"
        train([folder], other, training, wider, "cpu", start_from=tmp_path / "start.pt")

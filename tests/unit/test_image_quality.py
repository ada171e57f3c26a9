"""PSNR, SSIM and FSIM (scp_node/research/image_quality.py): identity scores perfectly, and each metric
falls as noise grows, on a real CT slice."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydicom import dcmread

from scp_node.research.image_quality import fsim, psnr, ssim
from tests.support import pydicom_data_dir


@pytest.fixture(scope="module")
def ct() -> np.ndarray:
    pixels = dcmread(pydicom_data_dir() / "693_UNCR.dcm").pixel_array.astype(np.int64)
    return (pixels - pixels.min())[:300, :280]


def _noisy(plane: np.ndarray, sigma: float) -> np.ndarray:
    noise = np.random.default_rng(int(sigma)).normal(0, sigma, plane.shape)
    return np.clip(plane + np.rint(noise), 0, 4095)


def test_identical_planes_score_perfectly(ct: np.ndarray) -> None:
    assert psnr(ct, ct, 12) == math.inf
    assert ssim(ct, ct, 12) == pytest.approx(1.0)
    assert fsim(ct, ct, 12) == pytest.approx(1.0)


def test_every_metric_falls_as_noise_grows(ct: np.ndarray) -> None:
    scores = [
        (psnr(ct, n, 12), ssim(ct, n, 12), fsim(ct, n, 12)) for n in (_noisy(ct, s) for s in (3, 30, 300))
    ]
    for metric in range(3):
        values = [score[metric] for score in scores]
        assert values == sorted(values, reverse=True) and values[0] > values[-1], (metric, values)


def test_psnr_uses_the_bit_depth_range() -> None:
    reference = np.zeros((8, 8), np.int64)
    assert psnr(reference, reference + 1, 8) == pytest.approx(20 * math.log10(255))
    assert psnr(reference, reference + 1, 16) == pytest.approx(20 * math.log10(65535))

"""Seed B's multi-scale model: shapes through the scales and a loss that training lowers."""

from __future__ import annotations

import torch
from pydicom import dcmread

from scp_node.imaging.codecs.learned.model import AUX_LEVELS, ModelConfig, MultiScaleModel
from tests.support import pydicom_test_file

TINY = ModelConfig(channels=8, aux_channels=2, components=2)


def _ct_patch() -> tuple[torch.Tensor, int]:
    """A 64 x 64 patch of a real 16-bit CT slice, as unsigned samples."""
    pixels = dcmread(pydicom_test_file("CT_small.dcm")).pixel_array.astype("int64")
    patch = torch.from_numpy(pixels[32:96, 32:96] - pixels.min()).float()
    return patch[None, None], int(patch.max()).bit_length()


def test_scales_halve_and_symbols_are_bounded_integers() -> None:
    model = MultiScaleModel(TINY)
    z1, z2, z3 = model.analyse(torch.randint(0, 4096, (2, 1, 64, 40)).float(), 12)
    assert [z.shape[-2:] for z in (z1, z2, z3)] == [(32, 20), (16, 10), (8, 5)]
    assert all(torch.equal(z, z.round()) and z.min() >= 0 and z.max() <= AUX_LEVELS - 1 for z in (z1, z2, z3))


def test_training_lowers_the_bits_of_a_real_image() -> None:
    torch.manual_seed(0)
    patch, bit_depth = _ct_patch()
    model = MultiScaleModel(TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(model.bits(patch, bit_depth)[0]) / patch.numel()
    for _ in range(100):
        optimizer.zero_grad()
        total, _ = model.bits(patch, bit_depth)
        (total / patch.numel()).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(model.bits(patch, bit_depth)[0]) / patch.numel()
    assert after < 0.8 * before, (before, after)

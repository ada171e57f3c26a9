"""The pyramid model: an exact integer pyramid, deterministic baselines and content scales, an
untrained model that already codes like an interpolator, a loss with a gradient at every
pixel, and training that lowers the bits of a real image (alone and given its neighbour)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import torch
from pydicom import dcmread

from scp_node.imaging.codecs.learned import pyramid
from scp_node.imaging.codecs.learned.likelihood import mixture_log_probability
from scp_node.imaging.codecs.learned.model import (
    LEVEL_INPUTS,
    REFERENCE_INPUTS,
    SCALES,
    ModelConfig,
    PyramidModel,
    float_parameters,
    stage_context,
)
from tests.support import pydicom_data_dir, pydicom_test_file

TINY = ModelConfig(channels=8, blocks=2, components=2)


def _ct_patch(size: int = 64) -> tuple[torch.Tensor, int]:
    """A patch of a real 16-bit CT slice, as unsigned samples."""
    pixels = dcmread(pydicom_test_file("CT_small.dcm")).pixel_array.astype("int64")
    patch = torch.from_numpy(pixels[16 : 16 + size, 16 : 16 + size] - pixels.min())
    return patch[None, None], int(patch.max()).bit_length()


def test_pyramid_levels_are_floor_averages_and_the_last_sub_pixel_has_four_candidates() -> None:
    image = torch.randint(0, 65536, (2, 1, 32, 24))
    levels = pyramid.build(image, SCALES)
    assert [level.shape[-2:] for level in levels] == [(32, 24), (16, 12), (8, 6), (4, 3)]
    for finer, coarser in itertools.pairwise(levels):
        sub = pyramid.sub_pixels(finer)
        assert torch.equal(coarser, sub.sum(dim=1, keepdim=True) // 4)
        assert torch.equal(pyramid.merge(sub), finer)
        remainder = sub[:, 3:] - pyramid.last_sub_pixel_base(coarser, sub[:, :3])
        assert remainder.min() >= 0 and remainder.max() <= 3


def test_baseline_interpolates_and_the_content_scale_follows_activity() -> None:
    ramp = (torch.arange(16) * 8).repeat(16, 1)[None, None]  # 8 per coarse column
    context = stage_context(ramp)
    inner = context.baseline[0, :, 4:-4, 4:-4]
    assert torch.equal(inner[0], ramp[0, 0, 4:-4, 4:-4] - 2) and torch.equal(
        inner[1], ramp[0, 0, 4:-4, 4:-4] + 2
    )
    flat = stage_context(torch.full((1, 1, 16, 16), 500))
    assert int(context.scale_index[0, 0, 8, 8]) > int(flat.scale_index[0, 0, 8, 8])
    assert context.inputs.dtype == torch.float32 and torch.equal(context.inputs, context.inputs.round())


def test_an_untrained_model_predicts_the_baseline_at_the_content_scale() -> None:
    """Output layers start at zero: offsets are zero, so coding starts from interpolation."""
    patch, _ = _ct_patch()
    model = PyramidModel(TINY)
    levels = pyramid.build(patch, SCALES)
    context = stage_context(levels[1])
    with torch.no_grad():
        raw = model.pass_parameters(0, 0, model.features(0, context), context, pyramid.sub_pixels(levels[0]))
    assert not raw.any()
    mean, _, _ = float_parameters(raw, context, 0)
    assert torch.equal(mean[..., 0], context.baseline[:, 0].float())


def test_the_loss_has_a_gradient_at_every_pixel_at_initialisation() -> None:
    """The first model's loss gave 78 % of a real CT crop no gradient at initialisation."""
    ct = dcmread(pydicom_data_dir() / "693_UNCR.dcm").pixel_array.astype(np.int64)
    crop = torch.from_numpy(ct[200:264, 150:214] - ct.min())[None, None]
    max_value = 2 ** int(crop.max()).bit_length() - 1
    model = PyramidModel(TINY)
    levels = pyramid.build(crop, SCALES)
    context = stage_context(levels[1])
    sub = pyramid.sub_pixels(levels[0])
    raw = model.pass_parameters(0, 1, model.features(0, context), context, sub).detach().requires_grad_()
    mean, log_scale, log_weight = float_parameters(raw, context, 1)
    log_p = mixture_log_probability(sub[:, 1].float(), mean, log_scale, log_weight, max_value)
    (gradient,) = torch.autograd.grad(-log_p.sum(), raw)
    per_pixel = gradient[..., :2].abs().sum(dim=(-1, -2))
    assert bool((per_pixel > 0).all()), (
        f"{int((per_pixel == 0).sum())} of {per_pixel.numel()} without gradient"
    )


def _train(
    model: PyramidModel, patch: torch.Tensor, bit_depth: int, reference: torch.Tensor | None
) -> tuple[float, float]:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    with torch.no_grad():
        before = float(model.bits(patch, bit_depth, reference)[0]) / patch.numel()
    for _ in range(25):
        optimizer.zero_grad()
        total, _ = model.bits(patch, bit_depth, reference)
        (total / patch.numel()).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(model.bits(patch, bit_depth, reference)[0]) / patch.numel()
    return before, after


def test_training_lowers_the_bits_of_a_real_image() -> None:
    torch.manual_seed(0)
    patch, bit_depth = _ct_patch(32)
    before, after = _train(PyramidModel(TINY), patch, bit_depth, None)
    assert after < 0.97 * before, (before, after)


def test_a_reference_slice_reaches_the_predictors_and_the_loss_still_falls() -> None:
    """Series mode: the reference's levels enter the feature extractor and every pass head, and
    training on a pair lowers its bits (using it well takes the long background run)."""
    torch.manual_seed(0)
    patch, bit_depth = _ct_patch(32)
    reference = (patch + torch.randint(-1, 2, patch.shape)).clamp(0, 2**bit_depth - 1)
    model = PyramidModel(TINY)
    before, after = _train(model, patch, bit_depth, reference)
    assert after < before
    model.zero_grad()
    model.bits(patch, bit_depth, reference)[0].backward()
    reference_columns = slice(LEVEL_INPUTS, LEVEL_INPUTS + REFERENCE_INPUTS)
    for stage in model.stages:
        assert stage.features.head.weight.grad[:, reference_columns].abs().sum() > 0
        for head in stage.heads:
            assert head.merge.weight.grad[:, -1].abs().sum() > 0  # the reference's own sub-pixel


def test_skips_start_at_zero_so_a_warm_start_codes_as_its_weights() -> None:
    """A model with `residual_skip` loaded from weights without it gives the same bits."""
    torch.manual_seed(0)
    patch, bit_depth = _ct_patch(32)
    plain = PyramidModel(TINY)
    for stage in plain.stages:
        for head in stage.heads:
            torch.nn.init.normal_(head.project.pointwise.weight, std=0.3)
    skipped = PyramidModel(dataclasses.replace(TINY, residual_skip=True))
    missing, unexpected = skipped.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and missing and all(".skip." in name for name in missing)
    with torch.no_grad():
        assert float(skipped.bits(patch, bit_depth)[0]) == float(plain.bits(patch, bit_depth)[0])


def test_the_skip_learns_from_the_earlier_sub_pixels_where_the_head_is_deaf() -> None:
    """Heads whose non-linear layers pass nothing (all-zero, frozen merge weights, as a head
    that went deaf) still get a gradient from the earlier sub-pixels through the skip."""
    torch.manual_seed(0)
    patch, bit_depth = _ct_patch(32)
    model = PyramidModel(dataclasses.replace(TINY, residual_skip=True))
    for stage in model.stages:
        for head in stage.heads:
            torch.nn.init.zeros_(head.merge.weight)
            head.merge.weight.requires_grad_(False)
    model.zero_grad()
    model.bits(patch, bit_depth)[0].backward()
    for stage in model.stages:
        for head in stage.heads[1:]:  # pass 0 has no earlier sub-pixel (and no reference here)
            assert head.skip.weight.grad[:, :-1].abs().sum() > 0
    before, after = _train(model, patch, bit_depth, None)
    assert after < before

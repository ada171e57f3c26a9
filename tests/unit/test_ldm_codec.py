"""The `ldm` codec (Seed A) with a tiny random StableDiffusionLatentUpscalePipeline saved and
loaded through the real loading code: shapes and bit depths, the error bound in bounded mode,
reproducible decodes, and refusals where a decode could not repeat the encoder's prediction."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydicom import dcmread

from scp_node.config import CompressionConfig, LdmConfig
from scp_node.imaging.blob import extract_samples
from scp_node.imaging.codecs import (
    CodecUnavailable,
    ImageDescription,
    SiteCodecs,
    create_codec,
)
from scp_node.imaging.codecs.upscale.ldm import LdmCodec
from scp_node.imaging.codecs.upscale.scheme import PredictionMismatch
from scp_node.research.tiny_pipeline import save_tiny_pipeline
from tests.support import pydicom_data_dir, pydicom_test_file
from workers.policy import validate_policy

FAST = {"steps": 2}  # the tiny model's output is noise at any step count; 2 keeps tests quick


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach a model hub fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _site(**ldm: Any) -> SiteCodecs:
    """The codecs of a site whose compression.ldm has these settings."""
    return SiteCodecs(CompressionConfig(ldm=LdmConfig(**ldm)))


def _ct(bit_depth: int, rows: int, columns: int, frames: int = 1) -> tuple[np.ndarray, ImageDescription]:
    ct = dcmread(pydicom_data_dir() / "693_UNCR.dcm").pixel_array.astype(np.int64)
    ct = ct - ct.min()
    shift = int(ct.max()).bit_length() - bit_depth
    values = ct >> shift if shift >= 0 else ct << -shift
    desc = ImageDescription(frames, rows, columns, 1, bit_depth)
    planes = [values[100 + 7 * f : 100 + 7 * f + rows, 80 : 80 + columns] for f in range(frames)]
    return np.stack(planes).reshape(desc.shape).astype(desc.dtype), desc


def _round_trip(codec: LdmCodec, samples: np.ndarray, desc: ImageDescription) -> np.ndarray:
    return codec.decode(codec.encode(samples, desc), desc)


@pytest.mark.parametrize("bit_depth", [8, 10, 12, 14, 16])
@pytest.mark.parametrize("scale", [2, 4])
def test_plain_mode_gives_an_image_of_the_stored_depth(ldm_codecs, bit_depth: int, scale: int) -> None:
    samples, desc = _ct(bit_depth, 45, 71)
    codec = ldm_codecs.create("ldm", scale=scale, **FAST)
    payload = codec.encode(samples, desc)
    decoded = codec.decode(payload, desc)
    assert decoded.shape == desc.shape and decoded.dtype == desc.dtype
    assert int(decoded.max()) < 1 << bit_depth and not codec.lossless
    assert np.array_equal(codec.decode(payload, desc), decoded)  # the stored seed repeats it
    again, reconstruction = codec.encode_and_reconstruct(samples, desc)
    assert again == payload and np.array_equal(reconstruction, decoded)  # seed from the pixels


@pytest.mark.parametrize("bit_depth", [8, 10, 12, 14, 16])
@pytest.mark.parametrize(("scale", "delta"), [(2, 0), (2, 1), (4, 2), (4, 4)])
def test_bounded_mode_keeps_every_sample_within_delta(ldm_codecs, bit_depth, scale, delta) -> None:
    samples, desc = _ct(bit_depth, 37, 53)
    codec = ldm_codecs.create("ldm", scale=scale, delta=delta, **FAST)
    decoded = _round_trip(codec, samples, desc)
    assert int(np.abs(decoded.astype(np.int64) - samples.astype(np.int64)).max()) <= delta
    assert codec.lossless == (delta == 0)
    if delta == 0:
        assert np.array_equal(decoded, samples)


def test_multi_frame_colour_and_tiny_images(ldm_codecs) -> None:
    samples, desc = _ct(12, 33, 40, frames=3)
    decoded = _round_trip(ldm_codecs.create("ldm", delta=1, **FAST), samples, desc)
    assert int(np.abs(decoded.astype(np.int64) - samples.astype(np.int64)).max()) <= 1
    for name in ("SC_rgb_small_odd.dcm", "emri_small.dcm"):
        samples, desc = extract_samples(pydicom_test_file(name).read_bytes())
        decoded = _round_trip(ldm_codecs.create("ldm", scale=4, delta=2, **FAST), samples, desc)
        assert int(np.abs(decoded.astype(np.int64) - samples.astype(np.int64)).max()) <= 2


def test_default_steps_and_guidance_come_from_config(tiny_ldm_dir: Path) -> None:
    codecs = _site(weights_dir=tiny_ldm_dir, steps=3, guidance=1.5)
    codec = codecs.create("ldm")
    assert (codec.steps, codec.guidance) == (3, 1.5)
    overridden = codecs.create("ldm", steps=5, guidance=0)
    assert (overridden.steps, overridden.guidance) == (5, 0.0)
    samples, desc = _ct(10, 40, 40)
    decoded = _round_trip(codecs.create("ldm", delta=1), samples, desc)  # 3 steps, guided
    assert int(np.abs(decoded.astype(np.int64) - samples.astype(np.int64)).max()) <= 1


def test_decode_with_another_thread_count_repeats_the_prediction(ldm_codecs) -> None:
    """The encode's CPU thread count is in the recipe and the decode runs with it, so the
    float sums (whose order depends on it) come out the same."""
    samples, desc = _ct(16, 40, 48)
    codec = ldm_codecs.create("ldm", delta=0, **FAST)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        payload = codec.encode(samples, desc)
        torch.set_num_threads(1)
        assert np.array_equal(codec.decode(payload, desc), samples)
    finally:
        torch.set_num_threads(previous)


def test_decode_with_other_arithmetic_is_refused_not_wrong(ldm_codecs) -> None:
    """oneDNN off changes the convolution kernels, as another CPU or a GPU would: the prediction
    differs in the last bits, and the codec refuses instead of returning other pixels."""
    samples, desc = _ct(16, 40, 48)
    for options in ({"delta": 1}, {}):
        codec = ldm_codecs.create("ldm", **options, **FAST)
        payload = codec.encode(samples, desc)
        with torch.backends.mkldnn.flags(enabled=False), pytest.raises(PredictionMismatch):
            codec.decode(payload, desc)


def test_decode_with_other_weights_is_refused(ldm_codecs, tmp_path: Path) -> None:
    samples, desc = _ct(12, 40, 40)
    payload = ldm_codecs.create("ldm", delta=2, **FAST).encode(samples, desc)
    other = _site(weights_dir=save_tiny_pipeline(tmp_path / "other", seed=1))
    with pytest.raises(PredictionMismatch, match="weights"):
        other.create("ldm", delta=2, **FAST).decode(payload, desc)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU to encode on")
def test_gpu_encode_is_refused_by_a_cpu_only_decode(
    tiny_ldm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples, desc = _ct(12, 40, 40)
    gpu_codec = _site(weights_dir=tiny_ldm_dir, device="cuda").create("ldm", delta=1, **FAST)
    payload = gpu_codec.encode(samples, desc)
    cpu_codec = _site(weights_dir=tiny_ldm_dir, device="cpu").create("ldm", delta=1, **FAST)
    decoded = cpu_codec.decode(payload, desc)  # a GPU is present: the decode goes back to it
    assert int(np.abs(decoded.astype(np.int64) - samples.astype(np.int64)).max()) <= 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only retrieval node
    with pytest.raises(PredictionMismatch, match="GPU"):
        cpu_codec.decode(payload, desc)


def test_without_weights_ldm_is_unavailable_and_policies_naming_it_are_refused(tmp_path: Path) -> None:
    assert "weights_dir" in SiteCodecs().unavailable()["ldm"]
    with pytest.raises(CodecUnavailable, match=r"compression\.ldm\.weights_dir"):
        create_codec("ldm")
    with pytest.raises(CodecUnavailable, match=r"compression\.ldm\.weights_dir"):
        config = CompressionConfig(rules=[{"modality": "CR", "codec": "ldm"}])
        validate_policy(config, SiteCodecs(config))
    missing = CompressionConfig(ldm=LdmConfig(weights_dir=tmp_path / "nowhere"), default_codec="ldm")
    with pytest.raises(CodecUnavailable, match="does not exist"):
        validate_policy(missing, SiteCodecs(missing))


def test_weights_are_read_from_the_directory_only(tiny_ldm_dir: Path, tmp_path: Path) -> None:
    """A copy of the directory is the same model (same digest); a damaged one is refused at load."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_ldm_dir, copy)
    samples, desc = _ct(8, 40, 40)
    payload = _site(weights_dir=copy).create("ldm", delta=1, **FAST).encode(samples, desc)
    decoded = _site(weights_dir=tiny_ldm_dir).create("ldm", delta=1, **FAST).decode(payload, desc)
    assert int(np.abs(decoded.astype(np.int64) - samples.astype(np.int64)).max()) <= 1
    damaged = shutil.copytree(tiny_ldm_dir, tmp_path / "damaged")
    (damaged / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(CodecUnavailable, match="cannot be loaded"):
        _site(weights_dir=damaged).create("ldm", delta=1, **FAST)

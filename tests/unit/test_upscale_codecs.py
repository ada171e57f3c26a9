"""The downscale / upscale scheme with the exact integer bicubic upscaler (issue 5 groundwork):
the error bound holds for every bit depth, scale, odd size, colour and frames; delta 0 is
lossless; plain mode is the paper's lossy scheme; lossy storage must be asked for by rule."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom import dcmread

from scp_node.config import CompressionConfig
from scp_node.imaging.blob import extract_samples
from scp_node.imaging.codecs import (
    CodecUnavailable,
    ImageDescription,
    InvalidCodecOption,
    SiteCodecs,
    create_codec,
    lossless_codecs,
)
from scp_node.imaging.codecs.upscale.resample import upscale
from tests.support import pydicom_data_dir, pydicom_test_file
from workers.policy import validate_policy


def _ct(bit_depth: int, rows: int = 157, columns: int = 203) -> tuple[np.ndarray, ImageDescription]:
    ct = dcmread(pydicom_data_dir() / "693_UNCR.dcm").pixel_array.astype(np.int64)
    ct = ct - ct.min()
    shift = int(ct.max()).bit_length() - bit_depth
    values = (ct >> shift if shift >= 0 else ct << -shift)[100 : 100 + rows, 80 : 80 + columns]
    desc = ImageDescription(1, rows, columns, 1, bit_depth)
    return values.reshape(desc.shape).astype(desc.dtype), desc


def test_integer_upscaling_keeps_constants_and_linear_ramps() -> None:
    assert np.array_equal(upscale(np.full((5, 7), 1234), 2, 4095), np.full((10, 14), 1234))
    ramp = np.arange(0, 64 * 16, 16)[None, :].repeat(6, axis=0)  # 16 per input pixel
    up = upscale(ramp, 2, 4095)
    # Away from the replicated edges, cubic interpolation reproduces a line: 8 per output pixel.
    assert np.array_equal(np.diff(up[:, 4:-4], axis=1), np.full((12, 119), 8))


def test_upscaling_twice_is_scale_four() -> None:
    small = np.random.default_rng(0).integers(0, 4096, (9, 11))
    assert np.array_equal(upscale(small, 4, 4095), upscale(upscale(small, 2, 4095), 2, 4095))


@pytest.mark.parametrize("bit_depth", [8, 10, 12, 14, 16])
@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("delta", [0, 1, 2, 4])
def test_bounded_mode_keeps_every_sample_within_delta(bit_depth: int, scale: int, delta: int) -> None:
    samples, desc = _ct(bit_depth)
    codec = create_codec("bicubic", scale=scale, delta=delta)
    decoded = codec.decode(codec.encode(samples, desc), desc)
    error = np.abs(decoded.astype(np.int64) - samples.astype(np.int64))
    assert decoded.dtype == samples.dtype and int(error.max()) <= delta
    if delta == 0:
        assert np.array_equal(decoded, samples)


@pytest.mark.parametrize("name", ["SC_rgb.dcm", "emri_small.dcm", "SC_rgb_small_odd.dcm"])
def test_bounded_mode_on_colour_frames_and_tiny_images(name: str) -> None:
    samples, desc = extract_samples(pydicom_test_file(name).read_bytes())
    codec = create_codec("bicubic", scale=4, delta=2)
    decoded = codec.decode(codec.encode(samples, desc), desc)
    assert int(np.abs(decoded.astype(np.int64) - samples.astype(np.int64)).max()) <= 2


def test_plain_mode_is_lossy_smaller_and_close() -> None:
    samples, desc = _ct(12, 256, 256)
    codec = create_codec("bicubic", scale=2)
    payload = codec.encode(samples, desc)
    decoded = codec.decode(payload, desc).astype(np.float64)
    mse = float(np.mean((decoded - samples) ** 2))
    psnr = 10 * np.log10(4095**2 / mse)
    lossless_size = len(create_codec("jpegxl").encode(samples, desc))
    assert not codec.lossless and len(payload) < lossless_size / 2 and psnr > 35, (len(payload), psnr)


def test_larger_delta_stores_fewer_bytes() -> None:
    samples, desc = _ct(12, 256, 256)
    sizes = [len(create_codec("bicubic", delta=d).encode(samples, desc)) for d in (0, 1, 2, 4)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0] / 2


def test_options_are_checked() -> None:
    with pytest.raises(InvalidCodecOption, match="scale"):
        create_codec("bicubic", scale=3)
    with pytest.raises(InvalidCodecOption, match="delta"):
        create_codec("bicubic", delta=-1)


def test_lossy_codecs_only_in_rules_for_a_modality_or_sender() -> None:
    assert "bicubic" not in lossless_codecs()
    with pytest.raises(CodecUnavailable, match="lossy"):
        validate_policy(
            CompressionConfig(default_codec="bicubic", default_options={"scale": 2}), SiteCodecs()
        )
    with pytest.raises(CodecUnavailable, match="rule without modality"):
        validate_policy(
            CompressionConfig(rules=[{"codec": "bicubic", "options": {"delta": 1}}]), SiteCodecs()
        )
    validate_policy(CompressionConfig(default_codec="bicubic", default_options={"delta": 0}), SiteCodecs())
    rule = {"modality": "CR", "codec": "bicubic", "options": {"delta": 2}}
    validate_policy(CompressionConfig(rules=[rule]), SiteCodecs())
    validate_policy(CompressionConfig(rules=[{"calling_ae": "LAB", "codec": "bicubic"}]), SiteCodecs())


@pytest.mark.parametrize("options", [{"scale": 2}, {"scale": 4, "delta": 2}, {"delta": 0}])
def test_the_encoders_reconstruction_is_what_decode_gives(options: dict) -> None:
    """Lossy copies take their pixels from the encoder instead of decoding a second time."""
    samples, desc = _ct(12, 61, 90)
    codec = create_codec("bicubic", **options)
    payload, reconstruction = codec.encode_and_reconstruct(samples, desc)
    assert payload == codec.encode(samples, desc)
    assert reconstruction.dtype == desc.dtype and np.array_equal(reconstruction, codec.decode(payload, desc))

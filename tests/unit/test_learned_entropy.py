"""The learned codec's entropy coding: exact round trips under integer-built CDFs, escapes for
values far from the prediction, a cost near the model's entropy, and the same bytes on any
thread count (the CDFs never depend on float arithmetic after quantisation)."""

from __future__ import annotations

import math

import pytest
import torch

from scp_node.imaging.codecs.learned.entropy import (
    CDF_TOTAL,
    HALF_WINDOW,
    WEIGHT_BITS,
    Mixture,
    _cdf,
    _centre_and_low_bits,
    decode,
    decode_remainder,
    encode,
    encode_remainder,
    half_window,
    mixture_from_indices,
)
from scp_node.imaging.codecs.learned.fixed_point import (
    INVERSE_SHIFT,
    MEAN_FRAC_BITS,
    PHI_BITS,
    Z_MAX,
    Z_STEPS,
    inverse_scale_table,
    phi_table,
)
from scp_node.imaging.codecs.learned.likelihood import mixture_bits
from tests.support import mixture_from_floats as quantize


def _mixture(n: int, k: int, *, centre: float, log_scale: float, seed: int) -> Mixture:
    generator = torch.Generator().manual_seed(seed)
    mean = centre + torch.randn(n, k, generator=generator) * math.exp(log_scale)
    log_scales = log_scale + 0.5 * torch.randn(n, k, generator=generator)
    logits = torch.randn(n, k, generator=generator)
    return quantize(mean, log_scales, logits)


@pytest.mark.parametrize(
    ("bits", "centre", "log_scale", "k"),
    [
        (8, 100.0, 0.5, 1),  # 8-bit, narrow
        (12, 2000.0, 2.0, 3),
        (16, 30000.0, 6.0, 5),  # 16-bit, wide: bins of several values, low bits raw
        (16, 100.0, -3.0, 2),  # scale below the table's smallest: clamped
        (4, 7.0, 0.5, 3),  # auxiliary symbols: a 16-bin window
        (4, 30.0, 3.0, 2),  # centre outside 0..15: values escape
    ],
)
def test_round_trip_is_exact(bits: int, centre: float, log_scale: float, k: int) -> None:
    n = 5000
    mixture = _mixture(n, k, centre=centre, log_scale=log_scale, seed=bits + k)
    generator = torch.Generator().manual_seed(7)
    spread = max(1.0, math.exp(log_scale)) * 1.5
    values = (centre + torch.randn(n, generator=generator) * spread).round().long().clamp(0, 2**bits - 1)
    values[:25] = torch.randint(0, 2**bits, (25,), generator=generator)  # outliers: escapes
    coded, raw = encode(values, mixture, bits)
    assert torch.equal(decode(coded, raw, mixture, bits), values)


def test_values_far_outside_the_window_escape_and_come_back() -> None:
    mixture = quantize(torch.zeros(64, 1), torch.zeros(64, 1), torch.zeros(64, 1))  # N(0, 1)
    values = torch.arange(64) * 1000  # all but the first are far outside +-HALF_WINDOW
    coded, raw = encode(values, mixture, 16)
    assert torch.equal(decode(coded, raw, mixture, 16), values)
    assert len(raw) >= (63 * 16) // 8  # escaped values are stored raw


def test_cost_is_close_to_the_model_entropy() -> None:
    n, sigma = 20000, 4.0
    mixture = quantize(torch.full((n, 1), 500.0), torch.full((n, 1), math.log(sigma)), torch.zeros(n, 1))
    values = (500 + torch.randn(n, generator=torch.Generator().manual_seed(3)) * sigma).round().long()
    coded, raw = encode(values, mixture, 12)
    bits_per_value = 8 * (len(coded) + len(raw)) / n
    entropy = 0.5 * math.log2(2 * math.pi * math.e * sigma**2)  # of the discretised Gaussian, ~4.05
    assert bits_per_value < entropy + 0.1


def test_same_bytes_and_values_on_other_thread_counts() -> None:
    mixture = _mixture(3000, 3, centre=1000.0, log_scale=3.0, seed=1)
    values = (1000 + torch.randn(3000, generator=torch.Generator().manual_seed(2)) * 30).round().long()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        encoded_one = encode(values, mixture, 12)
        torch.set_num_threads(max(2, threads))
        assert encode(values, mixture, 12) == encoded_one
        assert torch.equal(decode(*encoded_one, mixture, 12), values)
    finally:
        torch.set_num_threads(threads)


def test_phi_table_is_monotone_and_spans_the_cdf() -> None:
    table = phi_table()
    assert table[0] == 0 and table[-1] == 2**16 and bool((table[1:] >= table[:-1]).all())
    assert HALF_WINDOW * 2 + 1 < 2**12  # torchac's alphabet stays far below its precision limit


def _cdf_in_torch(
    mixture: Mixture, centre: torch.Tensor, low_bits: torch.Tensor, half: int, max_value: int
) -> torch.Tensor:
    """The CDF arithmetic spelled out with torch tensor ops: the oracle for the C++ loop."""
    phi = phi_table()
    inverse = inverse_scale_table()[mixture.scale_index]
    steps = torch.arange(-half, half + 1)
    first_value = centre[:, None] + steps[None, :] * (1 << low_bits)[:, None]
    edge = (first_value << MEAN_FRAC_BITS) - (1 << (MEAN_FRAC_BITS - 1))
    offset = edge[:, None, :] - mixture.mean[:, :, None]
    z = torch.div(offset * inverse[:, :, None], 1 << INVERSE_SHIFT, rounding_mode="floor")
    z_index = (z + Z_MAX * Z_STEPS).clamp(0, 2 * Z_MAX * Z_STEPS)
    total = 1 << (PHI_BITS + WEIGHT_BITS)
    below = (phi[z_index] * mixture.weight[:, :, None]).sum(dim=1)
    below = torch.where(first_value <= 0, 0, torch.where(first_value > max_value, total, below))
    masses = torch.cat([below[:, 1:] - below[:, :-1], below[:, :1] + (total - below[:, -1:])], dim=-1)
    frequencies = 1 + torch.div(masses * (CDF_TOTAL - (2 * half + 1)), total, rounding_mode="floor")
    cdf = torch.zeros(masses.shape[0], 2 * half + 2, dtype=torch.int64)
    cdf[:, 1:] = torch.cumsum(frequencies, dim=-1)
    return cdf.clamp(max=CDF_TOTAL - 1).to(torch.int32).to(torch.int16)


@pytest.mark.parametrize(
    ("centre", "log_scale", "k", "value_bits"),
    [(100.0, 0.5, 1, 8), (30000.0, 6.0, 3, 16), (900.0, 4.0, 5, 12), (7.0, 0.0, 3, 4), (250.0, 2.0, 2, 8)],
)
def test_compiled_cdfs_equal_the_torch_arithmetic(
    centre: float, log_scale: float, k: int, value_bits: int
) -> None:
    mixture = _mixture(3000, k, centre=centre, log_scale=log_scale, seed=k)
    half, max_value = half_window(value_bits), 2**value_bits - 1
    centre_values, low_bits = _centre_and_low_bits(mixture, half, max_value)
    expected = _cdf_in_torch(mixture, centre_values, low_bits, half, max_value)
    assert torch.equal(_cdf(mixture, centre_values, low_bits, half, max_value), expected)


@pytest.mark.parametrize(("value", "mean"), [(0, -3.0), (15, 19.0), (0, -40.0)])
def test_mass_beyond_the_range_belongs_to_the_end_values(value: int, mean: float) -> None:
    """As in the training loss: a prediction past either end makes that end value nearly free."""
    n = 4000
    mixture = quantize(torch.full((n, 1), mean), torch.zeros(n, 1), torch.zeros(n, 1))
    values = torch.full((n,), value)
    coded, raw = encode(values, mixture, 4)
    model_bits = float(
        mixture_bits(
            values.double(), torch.full((n, 1), mean), torch.zeros(n, 1), torch.zeros(n, 1), 15
        ).mean()
    )
    assert 8 * (len(coded) + len(raw)) / n < model_bits + 0.05
    assert torch.equal(decode(coded, raw, mixture, 4), values)


def test_weights_are_integers_summing_to_the_total_and_never_zero() -> None:
    logits = torch.tensor([[0, 0, 0], [64, -64, 0], [5, 5, -3], [200, -200, 0]])
    mixture = mixture_from_indices(
        torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, 3, dtype=torch.long), logits
    )
    assert mixture.weight.sum(dim=-1).tolist() == [2**WEIGHT_BITS] * 4
    assert int(mixture.weight.min()) >= 1
    assert mixture.weight[0].tolist() == [86, 85, 85]  # remainders go to the first components
    assert mixture.weight[3].tolist() == mixture.weight[1].tolist()  # logits clamp to the table


def test_remainders_of_the_last_sub_pixel_round_trip_and_cost_what_the_mixture_says() -> None:
    """The fourth sub-pixel of a block is one of four values; under a sharp prediction it costs
    far less than the two bits a uniform choice would."""
    n = 4000
    generator = torch.Generator().manual_seed(4)
    base = torch.randint(0, 4093, (n,), generator=generator)
    base[:5] = torch.tensor([-3, -1, 0, 4092, 4094])  # candidates beyond either end of 12 bits
    values = (base + torch.randint(0, 4, (n,), generator=generator)).clamp(0, 4095)
    values = torch.maximum(values, base)
    mixture = quantize(values.double()[:, None] + 0.2, torch.full((n, 1), -0.5), torch.zeros(n, 1))
    coded = encode_remainder(values, base, mixture, 12)
    assert torch.equal(decode_remainder(coded, base, mixture, 12), values)
    assert 8 * len(coded) / n < 1.0


def test_remainders_share_all_the_mass_however_wide_the_prediction() -> None:
    """The mixture's mass outside the four candidates is impossible there: a wide prediction
    costs about the two bits of a uniform choice, not the escape's price."""
    n = 4000
    base = torch.full((n,), 2000)
    values = base + torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(5))
    mixture = quantize(torch.full((n, 1), 2001.5), torch.full((n, 1), math.log(40.0)), torch.zeros(n, 1))
    coded = encode_remainder(values, base, mixture, 12)
    assert torch.equal(decode_remainder(coded, base, mixture, 12), values)
    assert 8 * len(coded) / n < 2.02

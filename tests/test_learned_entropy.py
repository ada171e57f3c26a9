"""The learned codec's entropy coding: exact round trips under integer-built CDFs, escapes for
values far from the prediction, a cost near the model's entropy, and the same bytes on any
thread count (the CDFs never depend on float arithmetic after quantisation)."""

from __future__ import annotations

import math

import pytest
import torch

from workers.codecs.learned.entropy import HALF_WINDOW, Mixture, decode, encode, quantize
from workers.codecs.learned.fixed_point import phi_table


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

"""Images that use few of their values (digitised film, padded CT) are coded as ranks."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from scp_node.imaging.codecs.learned import value_map


def test_ranks_restore_exactly_and_the_table_survives_its_bytes() -> None:
    generator = np.random.default_rng(0)
    pixels = (generator.integers(0, 2500, (3, 40, 30)) * 21.8).astype(np.uint16)  # film-like steps
    values = value_map.build(pixels, 16)
    assert values is not None and value_map.rank_bits(values) <= 12
    table = value_map.from_bytes(value_map.to_bytes(values), 16)
    assert np.array_equal(table, values)
    assert np.array_equal(value_map.restore(value_map.ranks(pixels, table), table, pixels.dtype), pixels)


def test_images_that_use_their_range_are_left_alone() -> None:
    assert value_map.build(np.arange(256, dtype=np.uint8), 8) is None
    assert value_map.build(np.arange(200, dtype=np.uint8), 8) is None  # 8 bits of ranks: no gain


def test_values_missing_from_the_table_take_the_next_rank() -> None:
    """A reference slice's values need not be in the image's table; both coder sides agree."""
    table = np.array([0, 22, 44, 66])
    assert value_map.ranks(np.array([0, 1, 22, 50, 100]), table).tolist() == [0, 1, 1, 3, 3]


@pytest.mark.parametrize("table", [[5, 3], [0, 0], [300], []])
def test_a_damaged_table_is_refused(table: list[int]) -> None:
    differences = np.diff(np.array(table, dtype=np.int64), prepend=0)
    data = zlib.compress(differences.astype("<u2").tobytes())
    with pytest.raises(ValueError):
        value_map.from_bytes(data, 8)
    with pytest.raises(ValueError):
        value_map.from_bytes(b"not deflate", 8)

"""One timed round trip through a codec: what every codec benchmark measures, timed one way."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from scp_node.imaging.codecs import Codec, ImageDescription


@dataclass(frozen=True)
class RoundTrip:
    """The stream a codec made of an image, the image decoded from it, and each step's seconds."""

    payload: bytes
    decoded: np.ndarray
    encode_seconds: float
    decode_seconds: float


def time_round_trip(codec: Codec, samples: np.ndarray, desc: ImageDescription) -> RoundTrip:
    """Encode, then decode that very stream, each timed apart in wall-clock seconds (so the time
    a codec spends in its own threads counts, as it does for the node)."""
    start = time.perf_counter()
    payload = codec.encode(samples, desc)
    encoded = time.perf_counter()
    decoded = codec.decode(payload, desc)
    return RoundTrip(payload, decoded, encoded - start, time.perf_counter() - encoded)


def mpix_per_second(pixels: int, seconds: float) -> float:
    return pixels / seconds / 1e6

"""A codec on an admin's own image before it is enabled (`scp-node codec try`, the console's
codec try page): encode, decode, and what it cost in bytes, error and time. Nothing is stored."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from scp_node.imaging.blob import extract_samples
from scp_node.imaging.codecs import Codec


@dataclass(frozen=True)
class TrialResult:
    file: str
    original_bytes: int  # the uncompressed pixel samples the codec was given
    bytes: int  # the codec's payload
    ratio: float  # original_bytes / bytes
    bpsp: float
    max_abs_error: int
    psnr: float | None  # None: identical pixels (infinite PSNR)
    encode_s: float
    decode_s: float

    def to_json(self) -> dict:
        return asdict(self)


def try_codec(codec: Codec, data: bytes, file: str) -> TrialResult:
    """`data`: a Part-10 file (named `file` in the result); ImagingError when it has no pixels
    the codec can take."""
    samples, desc = extract_samples(data)
    start = time.perf_counter()
    payload = codec.encode(samples, desc)
    encoded = time.perf_counter()
    decoded = codec.decode(payload, desc)
    done = time.perf_counter()
    error = decoded.astype(np.int64) - samples.astype(np.int64)
    max_abs = int(np.abs(error).max()) if error.size else 0
    return TrialResult(
        file=file,
        original_bytes=samples.nbytes,
        bytes=len(payload),
        ratio=samples.nbytes / len(payload) if payload else 0.0,
        bpsp=8 * len(payload) / samples.size,
        max_abs_error=max_abs,
        psnr=_psnr(error, desc.bit_depth) if max_abs else None,
        encode_s=encoded - start,
        decode_s=done - encoded,
    )


def _psnr(error: np.ndarray, bit_depth: int) -> float:
    peak = (1 << bit_depth) - 1
    return 10 * math.log10(peak * peak / float(np.mean(error.astype(np.float64) ** 2)))

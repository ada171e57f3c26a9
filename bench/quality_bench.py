"""Quality benchmark of the lossy and near-lossless codecs (issue 5), per modality.

Configurations, per upscaler (`bicubic`, and `ldm` when weights are given):
- x2 and x4 (Seed A's plain scheme), and x2 bounded, delta 1, 2, 4.
- Against JPEG 2000 lossy at the matched ratio: per image, the largest quality target whose
  stream is no larger than the upscaler's payload.
- Against JPEG-LS near-lossless (CharLS) at the same delta.
For each: bits per sub-pixel, ratio, PSNR, SSIM, FSIM (scp_node/research/image_quality.py), maximum
absolute error, and encode / decode seconds per image.

`--ldm-weights DIR` measures a real StableDiffusionLatentUpscalePipeline (rows "ldm");
`--tiny-ldm` builds the tiny random one the tests use (rows "ldm-tiny": timings and the error
bound mean something, picture quality does not). `--crop N` keeps each image's centre N x N,
for CPU runs of the diffusion model.

    python -m bench.quality_bench FOLDER [FOLDER ...] [--held-out] [--crop N]
        [--ldm-weights DIR | --tiny-ldm] [--ldm-steps 20] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import imagecodecs
import jpeg_ls
import numpy as np

from bench.arguments import add_folders, benchmark_parser
from bench.modality_groups import group_title, groups_present, in_group
from bench.tables import markdown_table, text_table
from bench.timing import time_round_trip
from scp_node.config import CompressionConfig, LdmConfig
from scp_node.imaging.codecs import ImageDescription, SiteCodecs
from scp_node.research.image_corpus import Image, load_corpus, split_by_patient
from scp_node.research.image_quality import fsim, psnr, ssim
from scp_node.research.tiny_pipeline import save_tiny_pipeline

PROGRAM = "bench.quality_bench"  # run as `python -m PROGRAM`
HEADER = ("configuration", "images", "bpsp", "ratio", "PSNR", "SSIM", "FSIM", "max err", "enc s", "dec s")
DELTAS = (1, 2, 4)
Coder = Callable[[np.ndarray, ImageDescription], tuple[int, np.ndarray]]  # -> (bytes, decoded)


@dataclass(frozen=True)
class Measure:
    path: str
    configuration: str
    modality: str
    payload_bytes: int
    samples: int
    native_bytes: int
    psnr: float
    ssim: float
    fsim: float
    max_error: int
    encode_s: float
    decode_s: float


def jpegls_near_lossless(delta: int) -> Coder:
    def run(samples: np.ndarray, desc: ImageDescription) -> tuple[int, np.ndarray]:
        size, frames = 0, []
        for frame in samples:
            plane = frame[..., 0] if desc.samples == 1 else frame
            stream = bytes(jpeg_ls.encode_array(np.ascontiguousarray(plane), lossy_error=delta))
            size += len(stream)
            frames.append(jpeg_ls.decode(np.frombuffer(stream, np.uint8)).reshape(frame.shape))
        return size, np.stack(frames)

    return run


def jpeg2000_at_most(target_bytes: int) -> Coder:
    """The best JPEG 2000 quality (PSNR target, bisected) whose streams fit in target_bytes."""

    def run(samples: np.ndarray, desc: ImageDescription) -> tuple[int, np.ndarray]:
        def encode(level: float) -> list[bytes]:
            return [
                bytes(
                    imagecodecs.jpeg2k_encode(
                        np.ascontiguousarray(f[..., 0] if desc.samples == 1 else f),
                        level=level,
                        reversible=False,
                        bitspersample=desc.bit_depth,
                    )
                )
                for f in samples
            ]

        low, high = 10.0, 140.0
        best = encode(low)
        for _ in range(9):
            middle = (low + high) / 2
            streams = encode(middle)
            if sum(map(len, streams)) <= target_bytes:
                best, low = streams, middle
            else:
                high = middle
        decoded = np.stack([imagecodecs.jpeg2k_decode(s).reshape(samples.shape[1:]) for s in best])
        return sum(map(len, best)), decoded

    return run


def measure(configuration: str, coder: Coder, image: Image) -> Measure:
    start = time.perf_counter()
    size, decoded = coder(image.samples, image.desc)
    elapsed = time.perf_counter() - start
    planes = [(f, s) for f in range(image.desc.frames) for s in range(image.desc.samples)]
    reference = [image.samples[f, :, :, s] for f, s in planes]
    test = [decoded[f, :, :, s] for f, s in planes]
    depth = image.desc.bit_depth
    error = np.abs(decoded.astype(np.int64) - image.samples.astype(np.int64))
    return Measure(
        path=str(image.path),
        configuration=configuration,
        modality=image.modality,
        payload_bytes=size,
        samples=image.sample_count,
        native_bytes=image.native_bytes,
        psnr=statistics.mean(psnr(r, t, depth) for r, t in zip(reference, test, strict=True)),
        ssim=statistics.mean(ssim(r, t, depth) for r, t in zip(reference, test, strict=True)),
        fsim=statistics.mean(fsim(r, t, depth) for r, t in zip(reference, test, strict=True)),
        max_error=int(error.max(initial=0)),
        encode_s=elapsed,  # encode and decode together for the coders that cannot split them
        decode_s=math.nan,
    )


def measure_codec(configuration: str, codecs: SiteCodecs, name: str, options: dict, image: Image) -> Measure:
    """As `measure`, with encode and decode timed apart (the node's codecs can be)."""
    trip = time_round_trip(codecs.create(name, **options), image.samples, image.desc)
    result = measure(configuration, lambda *_: (len(trip.payload), trip.decoded), image)
    return replace(result, encode_s=trip.encode_seconds, decode_s=trip.decode_seconds)


def run(
    images: Sequence[Image], codecs: SiteCodecs, upscalers: dict[str, str]
) -> tuple[list[Measure], list[str]]:
    """All configurations on every image; a configuration that raises is reported, not fatal.
    `upscalers`: row label -> codec name."""
    results: list[Measure] = []
    failures: list[str] = []

    def attempt(image: Image, configuration: str, coder: Coder | None, codec: str = "", **options: int):
        try:
            if coder is None:
                result = measure_codec(configuration, codecs, codec, options, image)
            else:
                result = measure(configuration, coder, image)
        except Exception as exc:  # a reference codec refusing an image must not end the run
            failures.append(f"{configuration} on {image.path}: {type(exc).__name__}: {exc}")
            return None
        results.append(result)
        return result

    for image in images:
        for label, codec in upscalers.items():
            for scale in (2, 4):
                plain = attempt(image, f"{label} x{scale}", None, codec, scale=scale)
                if plain is not None:
                    coder = jpeg2000_at_most(plain.payload_bytes)
                    attempt(image, f"jpeg2000 at {label} x{scale} size", coder)
            for delta in DELTAS:
                attempt(image, f"{label} x2 delta {delta}", None, codec, scale=2, delta=delta)
        for delta in DELTAS:
            attempt(image, f"jpegls near-lossless {delta}", jpegls_near_lossless(delta))
    return results, failures


def centre_crop(image: Image, side: int) -> Image:
    rows, columns = min(side, image.desc.rows), min(side, image.desc.columns)
    top, left = (image.desc.rows - rows) // 2, (image.desc.columns - columns) // 2
    samples = np.ascontiguousarray(image.samples[:, top : top + rows, left : left + columns])
    return replace(image, samples=samples, desc=replace(image.desc, rows=rows, columns=columns))


def upscalers_for(args: argparse.Namespace, scratch: Path) -> tuple[SiteCodecs, dict[str, str]]:
    """The codecs, with `ldm` on the real or the tiny pipeline if asked, and row label -> codec."""
    weights = args.ldm_weights or (save_tiny_pipeline(scratch / "tiny-ldm") if args.tiny_ldm else None)
    if weights is None:
        return SiteCodecs(), {"bicubic": "bicubic"}
    codecs = SiteCodecs(CompressionConfig(ldm=LdmConfig(weights_dir=weights, steps=args.ldm_steps)))
    return codecs, {"bicubic": "bicubic", "ldm" if args.ldm_weights else "ldm-tiny": "ldm"}


def summary_rows(results: Sequence[Measure], group: str) -> list[tuple[str, ...]]:
    rows = []
    chosen = [r for r in results if in_group(group, r.modality)]
    for configuration in dict.fromkeys(r.configuration for r in chosen):
        mine = [r for r in chosen if r.configuration == configuration]
        payload = sum(r.payload_bytes for r in mine)
        finite_psnr = [r.psnr for r in mine if math.isfinite(r.psnr)]
        decode = [r.decode_s for r in mine if math.isfinite(r.decode_s)]
        rows.append(
            (
                configuration,
                str(len(mine)),
                f"{8 * payload / sum(r.samples for r in mine):.3f}",
                f"{sum(r.native_bytes for r in mine) / payload:.2f}",
                f"{statistics.mean(finite_psnr):.2f}" if finite_psnr else "inf",
                f"{statistics.mean(r.ssim for r in mine):.4f}",
                f"{statistics.mean(r.fsim for r in mine):.4f}",
                str(max(r.max_error for r in mine)),
                f"{statistics.median(r.encode_s for r in mine):.3f}",
                f"{statistics.median(decode):.3f}" if decode else "-",
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = benchmark_parser(PROGRAM, __doc__)
    add_folders(parser)
    parser.add_argument("--held-out", action="store_true", help="only the held-out patients")
    parser.add_argument("--crop", type=int, help="keep each image's centre N x N")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--ldm-weights", type=Path, help="a StableDiffusionLatentUpscalePipeline directory")
    model.add_argument("--tiny-ldm", action="store_true", help="the tests' tiny random pipeline")
    parser.add_argument("--ldm-steps", type=int, default=20)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    images = load_corpus(args.folders).images
    images = split_by_patient(images).held_out if args.held_out else images
    images = [centre_crop(image, args.crop) for image in images] if args.crop else images
    with tempfile.TemporaryDirectory() as scratch:
        results, failures = run(images, *upscalers_for(args, Path(scratch)))
    groups = groups_present(r.modality for r in results)
    titles = {g: group_title(g, results) for g in groups}
    notes = [
        "PSNR, SSIM, FSIM: means over images (PSNR over its finite values).",
        "enc s of the JPEG-LS and JPEG 2000 rows is encode and decode together.",
        *(f"FAILED {failure}" for failure in failures),
    ]
    text = [f"{titles[g]}\n{text_table(HEADER, summary_rows(results, g))}" for g in groups]
    print("\n\n".join([*text, "\n".join(notes)]))
    if args.markdown:
        parts = [f"#### {titles[g]}\n\n{markdown_table(HEADER, summary_rows(results, g))}" for g in groups]
        args.markdown.write_text("\n\n".join([*parts, "\n".join(f"- {n}" for n in notes)]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Peak memory and speed of each codec on one large image, each codec in a fresh process.

The image is a real 16-bit mammogram brought to exactly 4096 x 3328 pixels (cropped, and
mirrored where the film is narrower), the size the learned codec must code in bounded memory.
The parent prepares the image once (.npy); each child only loads that array and builds its
codec; then the kernel's high-water mark is reset (/proc/self/clear_refs, Linux) and the
resident set at that point is the base. The peak while encoding and decoding, minus the base,
is the codec's own working memory.

    python -m bench.peak_memory MAMMOGRAM.dcm [--codecs learned,jpegxl,jpegls] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.arguments import benchmark_parser
from bench.tables import markdown_table, text_table
from bench.timing import mpix_per_second, time_round_trip
from scp_node.imaging.blob import extract_samples
from scp_node.imaging.codecs import ImageDescription, create_codec

PROGRAM = "bench.peak_memory"  # run as `python -m PROGRAM`, and so is each child
ROWS, COLUMNS = 4096, 3328
HEADER = ("codec", "MPix", "bpsp", "enc MPix/s", "dec MPix/s", "peak MB over base", "base MB")


def mammogram(path: Path) -> tuple[np.ndarray, ImageDescription]:
    samples, desc = extract_samples(path.read_bytes())
    plane = samples[0, :ROWS, :COLUMNS, 0]
    plane = np.pad(plane, ((0, ROWS - plane.shape[0]), (0, COLUMNS - plane.shape[1])), mode="symmetric")
    sized = ImageDescription(1, ROWS, COLUMNS, 1, desc.bit_depth)
    return np.ascontiguousarray(plane).reshape(sized.shape), sized


def _reset_peak() -> float:
    """Reset the high-water mark; returns the current resident set in MB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mb("VmRSS")


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_in_this_process(array: Path, codec_name: str) -> dict[str, float | str]:
    samples = np.load(array)
    desc = ImageDescription(*samples.shape, bit_depth=int(samples.max()).bit_length())
    codec = create_codec(codec_name)
    base = _reset_peak()
    trip = time_round_trip(codec, samples, desc)
    if not np.array_equal(trip.decoded, samples):
        raise SystemExit(f"{codec_name}: decoded pixels differ")
    return {
        "codec": codec_name,
        "mpix": samples.size / 1e6,
        "bpsp": 8 * len(trip.payload) / samples.size,
        "encode_mpix_s": mpix_per_second(samples.size, trip.encode_seconds),
        "decode_mpix_s": mpix_per_second(samples.size, trip.decode_seconds),
        "peak_mb": _status_mb("VmHWM") - base,
        "base_mb": base,
    }


def rows(results: Sequence[dict]) -> list[tuple[str, ...]]:
    return [
        (
            r["codec"],
            f"{r['mpix']:.1f}",
            f"{r['bpsp']:.3f}",
            f"{r['encode_mpix_s']:.2f}",
            f"{r['decode_mpix_s']:.2f}",
            f"{r['peak_mb']:.0f}",
            f"{r['base_mb']:.0f}",
        )
        for r in results
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = benchmark_parser(PROGRAM, __doc__)
    parser.add_argument("image", type=Path, help="a DICOM mammogram (with --child: the .npy)")
    parser.add_argument("--codecs", default="learned,jpegxl,jpegls")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one codec, in this process
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_in_this_process(args.image, args.child)))
        return 0
    results = []
    with tempfile.TemporaryDirectory() as folder:
        array = Path(folder) / "image.npy"
        np.save(array, mammogram(args.image)[0])
        for name in args.codecs.split(","):
            results.append(_run_child(array, name))
    title = f"{args.image.name} at {ROWS} x {COLUMNS}, 16-bit container"
    print(f"{title}\n{text_table(HEADER, rows(results))}")
    if args.markdown:
        args.markdown.write_text(f"{title}\n\n{markdown_table(HEADER, rows(results))}\n")
    return 0


def _run_child(array: Path, codec_name: str) -> dict:
    child = subprocess.run(
        [sys.executable, "-m", PROGRAM, str(array), "--child", codec_name],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    sys.exit(main())

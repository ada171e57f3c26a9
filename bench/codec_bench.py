"""Benchmark the node's lossless codecs on folders of DICOM files (issue 2).

Pixels take the same path as when the node stores a file (`scp_node.imaging.dicom_layout`,
`scp_node.imaging.blob`, `scp_node.imaging.pixels`), so the numbers describe what the node
would store, not what
a codec does on idealised arrays. Every round trip is checked bit for bit: a codec that loses
anything on an image is counted as failed there and left out of its sizes and speeds, never
averaged away, and the run exits with status 1.

    python -m bench.codec_bench FOLDER [FOLDER ...] [--codecs jpegls,jpegxl] [--out bench/out]
        [--markdown FILE] [--held-out]

--held-out keeps only the patients `image_corpus.split_by_patient` holds out of training (and
drops noise images), which is where the learned codec's compression must be judged. When the
codecs include `learned` and the standard codecs it competes with, a row "node" shows what the
node stores: per image the smallest of them (its encode time is all of their encodes, as the
node runs them all), and a line gives the mix of codecs chosen.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.arguments import add_folders, benchmark_parser
from bench.modality_groups import GROUP_ORDER, group_title, groups_present, in_group
from bench.run_header import run_lines
from bench.tables import markdown_table, text_table
from bench.timing import mpix_per_second, time_round_trip
from scp_node.imaging.codecs import (
    Codec,
    CodecUnavailable,
    create_codec,
    lossless_codecs,
)
from scp_node.imaging.codecs.learned.codec import STANDARD_RIVALS
from scp_node.research.image_corpus import Corpus, Image, load_corpus, split_by_patient

PROGRAM = "bench.codec_bench"  # run as `python -m PROGRAM`
TABLE_HEADER = ("codec", "images", "failed", "bpsp", "ratio", "enc MPix/s", "dec MPix/s")


@dataclass(frozen=True)
class Result:
    """One codec on one image; the measures are None when the codec raised."""

    path: str
    modality: str
    codec: str
    shape: tuple[int, int, int, int]
    bit_depth: int
    pixels: int
    samples: int
    native_bytes: int
    exact: bool
    error: str | None
    payload_bytes: int | None = None
    bpsp: float | None = None
    ratio: float | None = None
    encode_mpix_s: float | None = None
    decode_mpix_s: float | None = None
    kept: str | None = None  # for NODE_CHOICE rows: the codec whose blob the node keeps


@dataclass(frozen=True)
class Summary:
    """Totals over the bit-exact results of one codec in one modality group."""

    codec: str
    images: int
    failed: int
    bpsp: float
    ratio: float
    encode_mpix_s: float
    decode_mpix_s: float


def measure(codec: Codec, image: Image) -> Result:
    """Encode, decode and compare once; a crash is a failed round trip, not an abort."""
    base = {
        "path": str(image.path),
        "modality": image.modality,
        "codec": codec.name,
        "shape": image.desc.shape,
        "bit_depth": image.desc.bit_depth,
        "pixels": image.pixel_count,
        "samples": image.sample_count,
        "native_bytes": image.native_bytes,
    }
    try:
        trip = time_round_trip(codec, image.samples, image.desc)
    except Exception as exc:  # any codec error must end up in the report
        return Result(**base, exact=False, error=f"{type(exc).__name__}: {exc}")
    exact = trip.decoded.shape == image.samples.shape and np.array_equal(trip.decoded, image.samples)
    return Result(
        **base,
        exact=exact,
        error=None if exact else "decoded pixels differ from the input",
        payload_bytes=len(trip.payload),
        bpsp=8 * len(trip.payload) / image.sample_count,
        ratio=image.native_bytes / len(trip.payload),
        encode_mpix_s=mpix_per_second(image.pixel_count, trip.encode_seconds),
        decode_mpix_s=mpix_per_second(image.pixel_count, trip.decode_seconds),
    )


def run_codecs(codecs: Sequence[Codec], images: Sequence[Image]) -> list[Result]:
    return [measure(codec, image) for codec in codecs for image in images]


NODE_CHOICE = "node"
COMPETITORS = ("learned", *STANDARD_RIVALS)


def node_choice(results: Sequence[Result]) -> list[Result]:
    """Per image, the smallest exact result among COMPETITORS, renamed NODE_CHOICE; its encode
    speed counts every competitor's encode. Empty unless all competitors were run."""
    by_image: dict[str, dict[str, Result]] = {}
    for r in results:
        if r.codec in COMPETITORS:
            by_image.setdefault(r.path, {})[r.codec] = r
    chosen = []
    for candidates in by_image.values():
        exact = [r for r in candidates.values() if r.exact]
        if len(candidates) < len(COMPETITORS) or not exact:
            continue
        best = min(exact, key=lambda r: r.payload_bytes or 0)
        encode_seconds = sum(r.pixels / (r.encode_mpix_s or math.inf) / 1e6 for r in exact)
        fields = {**asdict(best), "codec": NODE_CHOICE, "kept": best.codec}
        fields["encode_mpix_s"] = best.pixels / encode_seconds / 1e6
        chosen.append(Result(**fields))
    return chosen


def mix_lines(chosen: Sequence[Result]) -> list[str]:
    """Which codec the node keeps, per modality group."""
    lines = []
    for group in groups_present(r.modality for r in chosen):
        counts = Counter(r.kept for r in chosen if in_group(group, r.modality))
        lines.append(f"node keeps ({group}): " + ", ".join(f"{c} {n}" for c, n in counts.most_common()))
    return lines


def summarise(codec: str, results: Sequence[Result]) -> Summary:
    """Size totals (not means of per-image ratios), so large images weigh as much as they cost."""
    exact = [r for r in results if r.exact]
    failed = len(results) - len(exact)
    if not exact:
        return Summary(codec, 0, failed, math.nan, math.nan, math.nan, math.nan)
    payload = sum(r.payload_bytes or 0 for r in exact)
    return Summary(
        codec=codec,
        images=len(exact),
        failed=failed,
        bpsp=8 * payload / sum(r.samples for r in exact),
        ratio=sum(r.native_bytes for r in exact) / payload,
        encode_mpix_s=statistics.median(r.encode_mpix_s or math.nan for r in exact),
        decode_mpix_s=statistics.median(r.decode_mpix_s or math.nan for r in exact),
    )


def summaries_by_group(codecs: Sequence[str], results: Sequence[Result]) -> dict[str, list[Summary]]:
    """Per modality group with images, then all images together."""
    return {
        group: [
            summarise(codec, [r for r in results if r.codec == codec and in_group(group, r.modality)])
            for codec in codecs
        ]
        for group in groups_present(r.modality for r in results)
    }


def table_rows(summaries: Sequence[Summary]) -> list[tuple[str, ...]]:
    """Formatted once, so the text and Markdown tables show the very same numbers."""

    def number(value: float, digits: int) -> str:
        return "-" if math.isnan(value) else f"{value:.{digits}f}"

    return [
        (
            s.codec,
            str(s.images),
            str(s.failed),
            number(s.bpsp, 3),
            number(s.ratio, 2),
            number(s.encode_mpix_s, 2),
            number(s.decode_mpix_s, 2),
        )
        for s in summaries
    ]


def corpus_lines(corpus: Corpus) -> list[str]:
    """What went in: files read, skipped by reason, duplicates dropped, images kept per group."""
    per_group = Counter(image.modality for image in corpus.images)
    lines = [
        f"files: {corpus.files}, skipped: {len(corpus.skipped)}, "
        f"duplicate pixels: {len(corpus.duplicates)}, distinct images: {len(corpus.images)} "
        f"({', '.join(f'{g} {per_group[g]}' for g in GROUP_ORDER if per_group[g])})"
    ]
    reasons = Counter(skip.reason for skip in corpus.skipped)
    lines += [f"skipped {count}: {reason}" for reason, count in reasons.most_common()]
    return lines


def failure_lines(results: Sequence[Result]) -> list[str]:
    return [f"FAILED {r.codec} on {r.path}: {r.error}" for r in results if not r.exact]


def report_text(
    header: list[str], corpus: Corpus, results: Sequence[Result], groups: dict[str, list[Summary]]
) -> str:
    parts = ["\n".join(header + corpus_lines(corpus))]
    parts += [
        f"{group_title(g, results)}\n{text_table(TABLE_HEADER, table_rows(s))}" for g, s in groups.items()
    ]
    parts.append("\n".join(failure_lines(results)) or "all round trips bit-exact")
    return "\n\n".join(parts) + "\n"


def report_markdown(
    header: list[str], corpus: Corpus, results: Sequence[Result], groups: dict[str, list[Summary]]
) -> str:
    parts = ["\n".join(f"- {line}" for line in header + corpus_lines(corpus))]
    parts += [
        f"#### {group_title(g, results)}\n\n{markdown_table(TABLE_HEADER, table_rows(s))}"
        for g, s in groups.items()
    ]
    failures = failure_lines(results)
    parts.append("\n".join(f"- {line}" for line in failures) or "All round trips bit-exact.")
    return "\n\n".join(parts) + "\n"


def plot_bpsp(groups: dict[str, list[Summary]], path: Path) -> None:
    """Grouped bars: one group per modality, one bar per codec (lower is better)."""
    figure = Figure(figsize=(max(6.0, 1.6 * len(groups)), 4.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    codecs = [s.codec for s in next(iter(groups.values()))]
    width = 0.8 / len(codecs)
    for index, codec in enumerate(codecs):
        positions = [g + (index - (len(codecs) - 1) / 2) * width for g in range(len(groups))]
        values = [summaries[index].bpsp for summaries in groups.values()]
        axes.bar(positions, values, width, label=codec)
    axes.set_xticks(range(len(groups)), list(groups))
    axes.set_ylabel("bits per sub-pixel (lower is better)")
    axes.set_title("Lossless codecs: bits per sub-pixel by modality")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def write_json(
    path: Path,
    header: list[str],
    corpus: Corpus,
    results: Sequence[Result],
    groups: dict[str, list[Summary]],
) -> None:
    document = {
        "run": header,
        "files": corpus.files,
        "skipped": [{"path": str(s.path), "reason": s.reason, "detail": s.detail} for s in corpus.skipped],
        "duplicates": corpus.duplicates,
        "summary": {g: [asdict(s) for s in summaries] for g, summaries in groups.items()},
        "results": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(document, indent=1) + "\n")


def codec_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one codec")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = benchmark_parser(PROGRAM, __doc__)
    add_folders(parser)
    parser.add_argument(
        "--codecs",
        type=codec_list,
        default=",".join(lossless_codecs()),  # argparse runs `type` on a string default
        help="comma-separated codec names (default: every lossless codec: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="plot and JSON folder")
    parser.add_argument("--markdown", type=Path, help="also write the tables as Markdown here")
    parser.add_argument("--held-out", action="store_true", help="only the held-out patients")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    header = run_lines(PROGRAM, datetime.now(UTC))
    try:  # an unknown or unusable codec fails here, before minutes of work
        codecs = [create_codec(name) for name in args.codecs]
    except CodecUnavailable as exc:
        sys.exit(f"codec_bench: {exc}")
    corpus = load_corpus(args.folders)
    images = corpus.images
    if args.held_out:
        images = split_by_patient(images).held_out
        header.append(f"held-out patients only: {len(images)} images")
    results = run_codecs(codecs, images)
    chosen = node_choice(results)
    header += mix_lines(chosen) if chosen else []
    groups = summaries_by_group(args.codecs + ([NODE_CHOICE] if chosen else []), [*results, *chosen])
    print(report_text(header, corpus, results, groups), end="")
    args.out.mkdir(parents=True, exist_ok=True)
    plot_bpsp(groups, args.out / "bpsp_by_modality.png")
    write_json(args.out / "results.json", header, corpus, results, groups)
    if args.markdown:
        args.markdown.write_text(report_markdown(header, corpus, results, groups))
    return 1 if any(not r.exact for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

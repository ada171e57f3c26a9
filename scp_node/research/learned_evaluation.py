"""Bits per sub-pixel of a learned-codec checkpoint on the held-out patients, per modality,
against JPEG XL (effort 7) and JPEG-LS, in single-image and series mode.

Sizes are the real payloads the codec writes (tiles, coarsest level, escapes and headers
included), not the training loss. Series mode codes each held-out slice of a stack against its
neighbour (`image_corpus.slice_pairs`), as the node would with the previous slice stored; the
first slice of a stack has no pair and is not in that row. "node" is the per-image choice of
the smallest of learned, JPEG XL and JPEG-LS. Round trips are the tests' job; this measures
sizes only, so a checkpoint is judged in minutes.

    python -m scp_node.research.learned_evaluation CHECKPOINT_OR_WEIGHTS FOLDER... [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

from scp_node.imaging.codecs import ImageDescription
from scp_node.imaging.codecs.learned import zoo
from scp_node.imaging.codecs.learned.codec import LearnedCodec
from scp_node.imaging.codecs.standard import JpegLsCodec, JpegXlCodec
from scp_node.research.image_corpus import Image, load_corpus, slice_pairs, split_by_patient

CODECS = ("learned", "jpegxl", "jpegls", "node")


def _weights(path: Path, directory: Path) -> Path:
    """A weight file for the codec: `path` itself, or the weights of a training checkpoint."""
    if "optimizer" not in torch.load(path, map_location="cpu", weights_only=False):
        return path
    weights = directory / "weights.pt"
    zoo.export_checkpoint(path, weights)
    return weights


def _standard_sizes(image: Image) -> dict[str, int]:
    return {
        "jpegxl": len(JpegXlCodec(effort=7).encode(image.samples, image.desc)),
        "jpegls": len(JpegLsCodec().encode(image.samples, image.desc)),
    }


def evaluate(weights: Path, folders: list[Path], tile: int) -> dict:
    codec = LearnedCodec(weights=str(weights), tile=tile)
    held_out = split_by_patient(load_corpus(folders).images).held_out
    bytes_by = defaultdict(lambda: dict.fromkeys(CODECS, 0))
    samples_by: dict[str, int] = defaultdict(int)
    single: dict[str, dict[str, int]] = {}
    started = time.monotonic()
    for image in held_out:
        sizes = {"learned": len(codec.encode(image.samples, image.desc)), **_standard_sizes(image)}
        sizes["node"] = min(sizes.values())
        single[str(image.path)] = sizes
        for group in (image.modality, "all"):
            samples_by[group] += image.sample_count
            for name, size in sizes.items():
                bytes_by[group][name] += size
    for pair in slice_pairs(held_out):
        if pair.target is not pair.reference:  # frames of one image are coded together above
            target = pair.target
            desc = ImageDescription(*target.desc.shape, pair.bit_depth)
            reference = pair.reference.samples[pair.reference_frame]
            series = len(codec.encode(target.samples.astype(desc.dtype), desc, reference=reference))
            alone = single[str(target.path)]
            sizes = {"learned": series, "jpegxl": alone["jpegxl"], "jpegls": alone["jpegls"]}
            sizes["node"] = min(sizes.values())
            sizes["learned_alone"] = alone["learned"]
            group = f"{target.modality} series"
            samples_by[group] += target.sample_count
            for name, size in sizes.items():
                bytes_by[group].setdefault(name, 0)
                bytes_by[group][name] += size
    bpsp = {
        group: {name: round(8 * size / samples_by[group], 3) for name, size in sizes.items()}
        for group, sizes in bytes_by.items()
    }
    counts = defaultdict(int)
    for image in held_out:
        counts[image.modality] += 1
    return {
        "weights": str(weights),
        "card": codec.card,
        "tile": tile,
        "images": dict(counts),
        "bpsp": bpsp,
        "seconds": round(time.monotonic() - started, 1),
    }


def markdown(result: dict) -> str:
    lines = [
        "| group | learned | learned alone | JPEG XL e7 | JPEG-LS | node choice | learned vs JPEG XL |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for group, row in sorted(result["bpsp"].items()):
        alone = "" if "learned_alone" not in row else f"{row['learned_alone']:.3f}"
        gain = 100 * (row["learned"] / row["jpegxl"] - 1)
        lines.append(
            f"| {group} | {row['learned']:.3f} | {alone} | {row['jpegxl']:.3f} "
            f"| {row['jpegls']:.3f} | {row['node']:.3f} | {gain:+.1f} % |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("weights", type=Path, help="a training checkpoint or a weight file")
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the JSON result here (and a .md beside it)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as directory:
        result = evaluate(_weights(args.weights, Path(directory)), args.folders, args.tile)
    table = markdown(result)
    print(table)
    print(json.dumps({key: value for key, value in result.items() if key != "bpsp"}))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
        args.out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()

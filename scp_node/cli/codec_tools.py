"""`codec try/train/export`: a codec on sample files (sizes, ratio, error, time), training the
learned lossless codec, and writing a checkpoint's weights where the codec loads them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from scp_node.cli.errors import UsageError
from scp_node.cli.stats import human_bytes
from scp_node.config import NodeConfig
from scp_node.imaging.codecs.registry import InvalidCodecOption, check_options


def codec_try(config: NodeConfig, args: argparse.Namespace) -> int:
    options = dict(args.option)
    try:
        check_options(args.codec, options)
    except InvalidCodecOption as exc:
        raise UsageError(f"codec try --option: {exc}") from None

    from scp_node.imaging.codec_trial import try_codec
    from scp_node.imaging.codecs import SiteCodecs
    from scp_node.imaging.errors import ImagingError

    codec = SiteCodecs(config.compression).create(args.codec, **options)  # ldm.weights_dir, ...
    failures = 0
    if not args.json:
        print(
            f"{'file':<32} {'original':>9} {'coded':>9} {'ratio':>9} {'bpsp':>7} {'maxerr':>6} "
            f"{'psnr':>7} {'enc s':>7} {'dec s':>7}"
        )
    for path in args.files:
        try:
            result = try_codec(codec, path.read_bytes(), str(path))
        except (ImagingError, OSError) as exc:
            failures += 1
            print(f"{path}: skipped: {exc}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(result.to_json()), flush=True)
        else:
            psnr = "inf" if result.psnr is None else f"{result.psnr:.2f}"
            print(
                f"{Path(result.file).name[-32:]:<32} {human_bytes(result.original_bytes):>9} "
                f"{human_bytes(result.bytes):>9} {result.ratio:>7.2f}:1 {result.bpsp:>7.3f} "
                f"{result.max_abs_error:>6} {psnr:>7} {result.encode_s:>7.3f} {result.decode_s:>7.3f}",
                flush=True,
            )
    return 1 if failures == len(args.files) else 0


def codec_train(_config: NodeConfig, args: argparse.Namespace) -> int:
    from scp_node.imaging.codecs.learned.model import ModelConfig
    from scp_node.research.learned_training import TrainingRefused, train, training_config

    training = training_config(args)
    model = ModelConfig(channels=args.channels, blocks=args.blocks)
    try:
        result = train(args.folders, args.checkpoint, training, model, args.device)
    except TrainingRefused as exc:
        raise UsageError(f"codec train: {exc}") from None
    print(json.dumps(result))
    return 0


def codec_export(_config: NodeConfig, args: argparse.Namespace) -> int:
    from scp_node.imaging.codecs.learned.zoo import SHIPPED_WEIGHTS, export_checkpoint

    out = args.out or SHIPPED_WEIGHTS
    card = export_checkpoint(args.checkpoint, out)
    print(json.dumps({"weights": str(out), **card}))
    return 0

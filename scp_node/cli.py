"""The `scp-node` command: serve, worker, db, ae, stats, verify, originals purge, codec try/train/export."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from scp_node.config import PERMISSIONS, NodeConfig, load_config
from scp_node.context import NodeContext
from scp_node.index.database import upgrade
from scp_node.index.models import Instance, Peer, StorageState
from scp_node.index.repository import find_peer, list_peers, stats
from scp_node.retrieve import RetrieveError, load_stored_file
from workers.codecs import CodecUnavailable


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = load_config(
        args.config,
        **{
            "network.port": getattr(args, "port", None),
            "network.ae_title": getattr(args, "ae_title", None),
            "storage.data_dir": getattr(args, "data_dir", None),
        },
    )
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(config, args) or 0
    except CodecUnavailable as exc:  # a policy this machine cannot run: say why, not a traceback
        print(f"scp-node: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scp-node", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="config.yaml (default: embedded defaults)")
    common.add_argument("--data-dir", type=Path, help="override storage.data_dir")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run the DICOM SCP")
    serve.add_argument("--port", type=int)
    serve.add_argument("--ae-title")
    serve.set_defaults(run=_serve)

    worker = commands.add_parser("worker", parents=[common], help="run an RQ compress worker")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(run=_worker)

    db = commands.add_parser("db", help="database schema").add_subparsers(required=True)
    db.add_parser("upgrade", parents=[common], help="apply migrations").set_defaults(
        run=lambda config, _args: upgrade(config.database_url)
    )

    ae = commands.add_parser("ae", help="peer AE titles").add_subparsers(required=True)
    ae.add_parser("list", parents=[common]).set_defaults(run=_ae_list)
    add = ae.add_parser("add", parents=[common], help="add or update a peer")
    add.add_argument("ae_title")
    add.add_argument("--host", default="")
    add.add_argument("--port", type=int, default=104, dest="peer_port")
    add.add_argument("--permissions", default="echo,store,get", help=f"comma list of {','.join(PERMISSIONS)}")
    add.add_argument(
        "--check-host", action="store_true", help="refuse this AE title unless it connects from --host"
    )
    add.set_defaults(run=_ae_add)
    remove = ae.add_parser("remove", parents=[common])
    remove.add_argument("ae_title")
    remove.set_defaults(run=_ae_remove)

    stats_ = commands.add_parser("stats", parents=[common], help="counts, bytes, ratio, queue")
    stats_.add_argument("--json", action="store_true")
    stats_.set_defaults(run=_stats)

    verify = commands.add_parser("verify", parents=[common], help="check stored files")
    verify.add_argument("--sample", type=float, help="fraction fully decoded (default: config)")
    verify.set_defaults(run=_verify)

    originals = commands.add_parser("originals", help="originals replaced by lossy copies")
    purge = originals.add_subparsers(required=True).add_parser(
        "purge", parents=[common], help="drop kept originals past compression.lossy.keep_original_days now"
    )
    purge.set_defaults(run=_originals_purge)

    codec = commands.add_parser("codec", help="codec tools").add_subparsers(required=True)
    trial = codec.add_parser("try", parents=[common], help="encode/decode files with a codec")
    trial.add_argument("--codec", required=True)
    trial.add_argument("--option", action="append", default=[], metavar="KEY=VALUE")
    trial.add_argument("--json", action="store_true")
    trial.add_argument("files", nargs="+", type=Path)
    trial.set_defaults(run=_codec_try)
    learn = codec.add_parser("train", parents=[common], help="train the learned lossless codec")
    learn.add_argument("folders", nargs="+", type=Path, help="folders of DICOM files")
    learn.add_argument("--checkpoint", type=Path, required=True, help="resumed when it exists")
    learn.add_argument("--steps", type=int, default=1000)
    learn.add_argument("--batch", type=int, default=8)
    learn.add_argument("--patch", type=int, default=128)
    learn.add_argument("--learning-rate", type=float, default=1e-3, help="at step 0")
    learn.add_argument("--final-learning-rate", type=float, default=1e-5, help="cosine decay to this")
    learn.add_argument("--channels", type=int, default=32, help="model width (new checkpoints only)")
    learn.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    learn.set_defaults(run=_codec_train)
    export = codec.add_parser("export", parents=[common], help="write a checkpoint's weights for the codec")
    export.add_argument("checkpoint", type=Path)
    export.add_argument("--out", type=Path, help="weight file (default: the one the codec ships)")
    export.set_defaults(run=_codec_export)
    return parser


def _serve(config: NodeConfig, _args: argparse.Namespace) -> int:
    from scp_node.server import StartRefused, start
    from workers.queue import open_queue

    context = NodeContext.open(config)
    queue = open_queue(config.queue)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        start(context, queue, block=True)
    except StartRefused as exc:
        print(f"scp-node: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        queue.close()
        context.close()
    return 0


def _worker(config: NodeConfig, args: argparse.Namespace) -> int:
    from rq import SimpleWorker

    from workers import jobs
    from workers.policy import validate_policy
    from workers.queue import RedisQueue

    if not config.queue.redis_url:
        print(
            "queue.redis_url is empty: the node runs jobs itself (in-process queue)",
            file=sys.stderr,
        )
        return 2
    context = NodeContext.open(config, migrate=False)
    validate_policy(config.compression)
    jobs.bind(context)
    queue = RedisQueue(config.queue)
    # SimpleWorker runs jobs in this process: codecs (and a GPU) are loaded once and kept.
    worker = SimpleWorker([queue.rq_queue], connection=queue.rq_queue.connection)
    worker.work(burst=args.burst, with_scheduler=False)
    return 0


def _ae_list(config: NodeConfig, _args: argparse.Namespace) -> int:
    context = NodeContext.open(config)
    with context.sessions() as session:
        for peer in list_peers(session):
            host = f"{peer.host or '*'}{' (checked)' if peer.check_host else ''}"
            print(f"{peer.ae_title:<16} {host:<30} {peer.port:<6} {peer.permissions}")
    return 0


def _ae_add(config: NodeConfig, args: argparse.Namespace) -> int:
    permissions = [p.strip() for p in args.permissions.split(",") if p.strip()]
    unknown = sorted(set(permissions) - set(PERMISSIONS))
    if unknown:
        print(f"unknown permissions: {', '.join(unknown)}", file=sys.stderr)
        return 2
    if args.check_host and not args.host:
        print("--check-host needs --host", file=sys.stderr)
        return 2
    context = NodeContext.open(config)
    with context.sessions() as session:
        peer = find_peer(session, args.ae_title) or Peer(ae_title=args.ae_title)
        peer.host, peer.port, peer.permissions = args.host, args.peer_port, ",".join(permissions)
        peer.check_host = args.check_host
        session.add(peer)
        session.commit()
    return 0


def _ae_remove(config: NodeConfig, args: argparse.Namespace) -> int:
    context = NodeContext.open(config)
    with context.sessions() as session:
        peer = find_peer(session, args.ae_title)
        if peer is None:
            print(f"no peer {args.ae_title}", file=sys.stderr)
            return 1
        session.delete(peer)
        session.commit()
    return 0


def _stats(config: NodeConfig, args: argparse.Namespace) -> int:
    from workers.queue import RedisQueue

    context = NodeContext.open(config)
    with context.sessions() as session:
        result = stats(session)
    # The in-process queue lives in the serving process; its backlog is the received/queued count.
    pending = result.by_state.get("received", 0) + result.by_state.get("queued", 0)
    queue_depth = RedisQueue(config.queue).depth() if config.queue.redis_url else pending
    report = {
        **result.__dict__,
        "compression_ratio": round(result.compression_ratio, 4),
        "queue_depth": queue_depth,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key, value in report.items():
        print(f"{key:<18} {value}")
    return 0


def _verify(config: NodeConfig, args: argparse.Namespace) -> int:
    """Digest every blob and spool file; fully rebuild a sample and check the ingest SHA-256."""
    context = NodeContext.open(config)
    fraction = config.compression.verify_sample if args.sample is None else args.sample
    checked = decoded = 0
    problems: list[str] = []
    with context.sessions() as session:
        # A dropped original has no data left by design (its lossy copy is checked instead).
        kept = session.query(Instance).where(Instance.state != StorageState.DROPPED)
        for instance in kept.yield_per(500):
            checked += 1
            problem = _digest_problem(instance)
            if problem is None and random.random() < fraction:
                decoded += 1
                try:
                    load_stored_file(instance)
                except (RetrieveError, OSError, ValueError) as exc:
                    problem = str(exc)
            if problem:
                problems.append(f"{instance.sop_instance_uid}: {problem}")
    for line in problems:
        print(line)
    print(f"checked {checked} instances, fully decoded {decoded}, problems {len(problems)}")
    return 1 if problems else 0


def _digest_problem(instance: Instance) -> str | None:
    path = instance.blob_path or instance.spool_path
    if not path or not Path(path).exists():
        return f"missing file {path}"
    if instance.blob_path and hashlib.sha256(Path(path).read_bytes()).hexdigest() != instance.blob_sha256:
        return "blob digest mismatch"
    return None


def _originals_purge(config: NodeConfig, _args: argparse.Namespace) -> int:
    from workers.retention import purge_expired_originals

    context = NodeContext.open(config)
    try:
        print(f"dropped {purge_expired_originals(context)} originals")
    finally:
        context.close()
    return 0


def _codec_try(config: NodeConfig, args: argparse.Namespace) -> int:
    from workers.codec_trial import try_codec
    from workers.codecs import configure, create_codec
    from workers.pixels import UnsupportedPixels

    options = dict(_parse_option(text) for text in args.option)
    configure(config.compression)  # compression.ldm.weights_dir and the like
    codec = create_codec(args.codec, **options)
    failures = 0
    if not args.json:
        print(f"{'file':<40} {'bytes':>10} {'bpsp':>7} {'maxerr':>6} {'psnr':>7} {'enc s':>7} {'dec s':>7}")
    for path in args.files:
        try:
            result = try_codec(codec, path)
        except (UnsupportedPixels, ValueError, OSError) as exc:
            failures += 1
            print(f"{path}: skipped: {exc}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(result.to_json()))
        else:
            psnr = "inf" if result.psnr is None else f"{result.psnr:.2f}"
            print(
                f"{Path(result.file).name[-40:]:<40} {result.bytes:>10} {result.bpsp:>7.3f} "
                f"{result.max_abs_error:>6} {psnr:>7} {result.encode_s:>7.3f} {result.decode_s:>7.3f}"
            )
    return 1 if failures == len(args.files) else 0


def _codec_train(_config: NodeConfig, args: argparse.Namespace) -> int:
    from workers.codecs.learned.model import ModelConfig
    from workers.codecs.learned.train import TrainingConfig, train

    training = TrainingConfig(
        steps=args.steps,
        patch=args.patch,
        batch=args.batch,
        learning_rate=args.learning_rate,
        final_learning_rate=args.final_learning_rate,
    )
    result = train(args.folders, args.checkpoint, training, ModelConfig(channels=args.channels), args.device)
    print(json.dumps(result))
    return 0


def _codec_export(_config: NodeConfig, args: argparse.Namespace) -> int:
    from workers.codecs.learned.zoo import SHIPPED_WEIGHTS, export_checkpoint

    out = args.out or SHIPPED_WEIGHTS
    card = export_checkpoint(args.checkpoint, out)
    print(json.dumps({"weights": str(out), **card}))
    return 0


def _parse_option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


if __name__ == "__main__":
    sys.exit(main())

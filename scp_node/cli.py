"""The `scp-node` command: serve, worker, db, ae, stats, verify, originals purge, codec try/train/export.

Start-up is kept light: only the config and the codec names are imported here; each command
imports what it needs (the index, the server, torch for the learned codec) when it runs.
Only `serve`, `worker` and `db upgrade` migrate the index; the other commands refuse an index
whose schema is behind. Errors an admin can fix are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scp_node.config import PERMISSIONS, NetworkConfig, NodeConfig, StorageConfig, load_config
from workers.codecs.registry import CODECS, InvalidCodecOption, check_options

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from scp_node.index.repository import IndexStats

log = logging.getLogger("scp_node.cli")

PENDING_STATES = ("received", "queued")  # acknowledged, not yet compressed
WATCH_WINDOW_S = 30.0  # rates in `stats --watch` are over about this long


class UsageError(Exception):
    """Bad input an admin can correct; main prints it as one line and exits 2."""


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = _load_config(args)
    except UsageError as exc:
        print(f"scp-node: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(config, args) or 0
    except KeyboardInterrupt:  # Ctrl-C in a long command (codec train, verify): no traceback
        print("scp-node: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = _admin_error(exc, config)
        if message is None:
            raise
        print(f"scp-node: {message}", file=sys.stderr)
        return 2


def _load_config(args: argparse.Namespace) -> NodeConfig:
    import yaml
    from pydantic import ValidationError

    where = f"config {args.config}" if args.config else "settings"
    try:
        return load_config(
            args.config,
            **{
                "network.port": getattr(args, "port", None),
                "network.ae_title": getattr(args, "ae_title", None),
                "storage.data_dir": getattr(args, "data_dir", None),
            },
        )
    except OSError as exc:
        raise UsageError(f"cannot read {where}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{where} is not valid YAML: {' '.join(str(exc).split())}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'top level'}: {error['msg']}"
            for error in exc.errors()
        )
        raise UsageError(f"{where}: {problems}") from None


def _admin_error(exc: Exception, config: NodeConfig) -> str | None:
    """The one-line message for an error the admin can act on, or None for a bug (traceback).

    Exception classes of modules that were never imported cannot have been raised, so they are
    looked up in sys.modules instead of being imported here.
    """
    if isinstance(exc, UsageError | InvalidCodecOption):
        return str(exc)
    known = {
        "workers.codecs.base": "CodecUnavailable",  # a codec this machine cannot run
        "scp_node.index.database": "SchemaNotCurrent",
    }
    for module, name in known.items():
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return str(exc)
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.OperationalError):
        from scp_node.index.database import display_url

        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        return f"cannot use the index at {display_url(config.database_url)}: {reason}"
    redis_exc = sys.modules.get("redis.exceptions")
    if redis_exc is not None and isinstance(exc, redis_exc.ConnectionError):
        return f"cannot reach queue.redis_url {config.queue.redis_url}: {exc}"
    return None


# -- the parser ------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line: the command, the argument and what is allowed."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _Help(argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default (unless it is none or the text says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or default == []:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="scp-node", description=__doc__.split("\n\n")[0], formatter_class=_Help)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="config.yaml (default: the embedded defaults)")
    common.add_argument(
        "--data-dir",
        type=Path,
        help=f"override storage.data_dir (default: the config's, {_shown(StorageConfig().data_dir)})",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND", title="commands")

    def command(group: Any, name: str, text: str, **kwargs: Any) -> argparse.ArgumentParser:
        return group.add_parser(name, help=text, description=text, formatter_class=_Help, **kwargs)

    network = NetworkConfig()
    serve = command(commands, "serve", "run the DICOM SCP (migrates the index first)", parents=[common])
    serve.add_argument(
        "--port",
        type=_listen_port,
        help=f"listening port, 0: any free one (default: network.port, {network.port})",
    )
    serve.add_argument(
        "--ae-title",
        type=_ae_title,
        help=f"the node's AE title (default: network.ae_title, {network.ae_title})",
    )
    serve.set_defaults(run=_serve)

    worker = command(
        commands, "worker", "run an RQ compress worker (needs queue.redis_url; migrates)", parents=[common]
    )
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(run=_worker)

    db = command(commands, "db", "the index's database schema").add_subparsers(
        required=True, metavar="ACTION", title="actions"
    )
    command(
        db, "upgrade", "apply the Alembic migrations up to this version's schema", parents=[common]
    ).set_defaults(run=_db_upgrade)

    ae = command(commands, "ae", "peer AE titles: who may do what, where C-MOVE sends").add_subparsers(
        required=True, metavar="ACTION", title="actions"
    )
    command(ae, "list", "list the peer table", parents=[common]).set_defaults(run=_ae_list)
    add = command(
        ae,
        "add",
        "add a peer, or replace an existing peer's settings",
        parents=[common],
        epilog="A peer without --host/--port (a modality that only sends) is never a C-MOVE destination.",
    )
    add.add_argument("ae_title", type=_ae_title, help="1-16 characters, no backslash")
    add.add_argument("--host", help="host or address C-MOVE sends to; give it with --port")
    add.add_argument(
        "--port",
        type=_port,
        dest="peer_port",
        metavar="PORT",
        help="the peer's DICOM port; give it with --host",
    )
    add.add_argument(
        "--permissions",
        type=_permissions,
        required=True,
        help=f"comma list of {','.join(PERMISSIONS)} (required)",
    )
    add.add_argument(
        "--check-host", action="store_true", help="refuse this AE title unless it connects from --host"
    )
    add.set_defaults(run=_ae_add)
    remove = command(ae, "remove", "remove a peer", parents=[common])
    remove.add_argument("ae_title", type=_ae_title)
    remove.set_defaults(run=_ae_remove)

    stats_ = command(
        commands, "stats", "counts, bytes, ratio, queue; --watch for a live view", parents=[common]
    )
    view = stats_.add_mutually_exclusive_group()
    view.add_argument("--json", action="store_true", help="machine-readable output")
    view.add_argument(
        "--watch", action="store_true", help="live view of background work until Ctrl-C: queue, rates, ETA"
    )
    stats_.add_argument(
        "--interval", type=_positive_float, default=2.0, help="seconds between --watch samples"
    )
    stats_.add_argument(
        "--count", type=_positive_int, help="stop --watch after this many samples (default: Ctrl-C)"
    )
    stats_.set_defaults(run=_stats)

    verify = command(
        commands, "verify", "check stored files (exit 1 when a problem is found)", parents=[common]
    )
    verify.add_argument(
        "--sample", type=_fraction, help="fraction fully decoded, 0-1 (default: compression.verify_sample)"
    )
    verify.set_defaults(run=_verify)

    originals = command(commands, "originals", "originals replaced by lossy copies").add_subparsers(
        required=True, metavar="ACTION", title="actions"
    )
    command(
        originals,
        "purge",
        "drop kept originals past compression.lossy.keep_original_days now",
        parents=[common],
    ).set_defaults(run=_originals_purge)

    codec = command(commands, "codec", "codec tools: try, train, export").add_subparsers(
        required=True, metavar="ACTION", title="actions"
    )
    trial = command(
        codec,
        "try",
        "encode and decode files with a codec; sizes, ratio, error",
        parents=[common],
        epilog=_codec_help(),
    )
    trial.add_argument(
        "--codec", required=True, choices=list(CODECS), metavar="NAME", help="codec (see below)"
    )
    trial.add_argument(
        "--option",
        action="append",
        default=[],
        type=_option,
        metavar="KEY=VALUE",
        help="codec option (see below)",
    )
    trial.add_argument("--json", action="store_true", help="one JSON line per file")
    trial.add_argument("files", nargs="+", type=Path, metavar="FILE", help="DICOM files")
    trial.set_defaults(run=_codec_try)
    learn = command(codec, "train", "train the learned lossless codec", parents=[common])
    learn.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="folders of DICOM files")
    learn.add_argument("--checkpoint", type=Path, required=True, help="resumed when it exists")
    learn.add_argument("--steps", type=_positive_int, default=1000, help="training steps")
    learn.add_argument("--batch", type=_positive_int, default=8, help="patches per step")
    learn.add_argument("--patch", type=_positive_int, default=128, help="patch side in pixels")
    learn.add_argument("--learning-rate", type=_positive_float, default=1e-3, help="at step 0")
    learn.add_argument(
        "--final-learning-rate", type=_positive_float, default=1e-5, help="cosine decay to this"
    )
    learn.add_argument(
        "--channels", type=_positive_int, default=32, help="model width (new checkpoints only)"
    )
    learn.add_argument(
        "--device", choices=("cpu", "cuda"), help="where to train (default: cuda when present)"
    )
    learn.set_defaults(run=_codec_train)
    export = command(codec, "export", "write a checkpoint's weights for the learned codec", parents=[common])
    export.add_argument("checkpoint", type=Path)
    export.add_argument("--out", type=Path, help="weight file (default: the one the codec ships)")
    export.set_defaults(run=_codec_export)
    return parser


def _shown(path: Path) -> str:
    return str(path) if path.is_absolute() else f"./{path}"


def _codec_help() -> str:
    lines = ["codecs (--codec) and their options (--option KEY=VALUE, VALUE as JSON or text):"]
    for entry in CODECS.values():
        lines.append(f"  {entry.name:<10} {entry.summary}" + ("" if entry.options else "; no options"))
        for option in entry.options:
            lines.append(
                f"      {option.name:<9} {option.help}: {option.allowed} (default: {option.default})"
            )
    return "\n".join(lines)


# argparse `type=` checks: a bad value is one line naming the argument and what is allowed.


def _ae_title(text: str) -> str:
    """An AE title (PS3.5 6.2, AE): 1-16 characters of the default repertoire, no backslash or
    control characters; leading and trailing spaces are not significant."""
    title = text.strip(" ")
    allowed = "an AE title is 1-16 characters of printable ASCII, without backslash, not all spaces"
    if not title:
        raise argparse.ArgumentTypeError(f"{text!r} is empty: {allowed}")
    if len(title) > 16:
        raise argparse.ArgumentTypeError(f"{text!r} has {len(title)} characters: {allowed}")
    bad = sorted({char for char in title if not " " <= char <= "~" or char == "\\"})
    if bad:
        raise argparse.ArgumentTypeError(f"{text!r} contains {', '.join(map(repr, bad))}: {allowed}")
    return title


def _port(text: str, lowest: int = 1) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not lowest <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: allowed {lowest}-65535")
    return port


def _listen_port(text: str) -> int:
    return _port(text, lowest=0)


def _permissions(text: str) -> str:
    given = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in given if part not in PERMISSIONS]
    if unknown or not given:
        what = f"unknown {', '.join(map(repr, unknown))}" if unknown else "none given"
        raise argparse.ArgumentTypeError(f"{what}: allowed a comma list of {', '.join(PERMISSIONS)}")
    return ",".join(dict.fromkeys(given))


def _option(text: str) -> tuple[str, Any]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. effort=9)")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction: allowed 0 to 1")
    return value


# -- serve, worker, db -----------------------------------------------------------------------


def _serve(config: NodeConfig, _args: argparse.Namespace) -> int:
    from scp_node.context import NodeContext
    from scp_node.server import StartRefused, start
    from workers.queue import open_queue

    context = NodeContext.open(config)
    queue = open_queue(config.queue)
    try:
        server = start(context, queue, block=False)
        _serve_until_stopped(server, config.network)
    except StartRefused as exc:
        print(f"scp-node: {exc}", file=sys.stderr)
        return 2
    finally:
        queue.close()
        context.close()
    log.info("shut down cleanly")
    return 0


def _serve_until_stopped(server: Any, network: NetworkConfig) -> None:
    """Serve until SIGTERM or Ctrl-C; then let the associations in flight finish (at most the
    longest network timeout; a second signal cuts the wait short) and close."""
    stop, hurry = threading.Event(), threading.Event()
    received = ["a signal"]

    def on_signal(number: int, _frame: Any) -> None:
        if not stop.is_set():
            received[0] = signal.Signals(number).name
        (hurry if stop.is_set() else stop).set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(1.0):
            pass
        log.info("%s: shutting down", received[0])
        server.stop_accepting()
        server.drain(max(network.acse_timeout_s, network.dimse_timeout_s, network.network_timeout_s), hurry)
    finally:
        server.shutdown()  # closes the socket, releases the data-dir lock
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopping compress workers (unfinished jobs resume at the next start)")


def _worker(config: NodeConfig, args: argparse.Namespace) -> int:
    if not config.queue.redis_url:
        print(
            "scp-node: queue.redis_url is empty: the node runs jobs itself (in-process queue)",
            file=sys.stderr,
        )
        return 2
    from rq import SimpleWorker

    from scp_node.context import NodeContext
    from workers import jobs
    from workers.policy import validate_policy
    from workers.queue import RedisQueue

    context = NodeContext.open(config)
    validate_policy(config.compression)
    jobs.bind(context)
    queue = RedisQueue(config.queue)
    # SimpleWorker runs jobs in this process: codecs (and a GPU) are loaded once and kept.
    worker = SimpleWorker([queue.rq_queue], connection=queue.rq_queue.connection)
    worker.work(burst=args.burst, with_scheduler=False)
    return 0


def _db_upgrade(config: NodeConfig, _args: argparse.Namespace) -> int:
    from scp_node.index.database import display_url, schema_revisions, upgrade

    config.storage.data_dir.mkdir(parents=True, exist_ok=True)
    before, head = schema_revisions(config.database_url)
    upgrade(config.database_url)
    where = f"the index at {display_url(config.database_url)}"
    if before == head:
        print(f"{where} is already at revision {head}")
    else:
        print(f"{where} is now at revision {head} (was {before or 'empty'})")
    return 0


@contextmanager
def _index(config: NodeConfig) -> Iterator[sessionmaker[Session]]:
    """Sessions on the index for a short admin command: the schema must be current."""
    from scp_node.index.database import check_schema, create_index_engine, session_factory

    check_schema(config.database_url)
    engine = create_index_engine(config.database_url)
    try:
        yield session_factory(engine)
    finally:
        engine.dispose()


# -- ae --------------------------------------------------------------------------------------


def _destination(host: str, port: int) -> str:
    return f"host {host} port {port}" if host and port else "no host/port (not a C-MOVE destination)"


def _ae_list(config: NodeConfig, _args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from scp_node.index.models import Peer

    with _index(config) as sessions, sessions() as session:
        peers = session.scalars(select(Peer).order_by(Peer.ae_title)).all()
    if not peers:
        print("no peers (add one with `scp-node ae add`)")
        return 0
    print(f"{'AE title':<16} {'host':<30} {'port':<6} {'host check':<10} permissions")
    for peer in peers:
        has_address = bool(peer.host and peer.port)
        host = peer.host or "-"
        port = str(peer.port) if has_address else "-"
        check = "yes" if peer.check_host else "no"
        print(f"{peer.ae_title:<16} {host:<30} {port:<6} {check:<10} {peer.permissions}")
    return 0


def _ae_add(config: NodeConfig, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from scp_node.index.models import Peer

    if (args.host is None) != (args.peer_port is None):
        raise UsageError(
            "ae add: --host and --port go together (both: a C-MOVE destination; "
            "neither: a peer that only connects to the node)"
        )
    if args.check_host and not args.host:
        raise UsageError("ae add: --check-host needs --host (and --port)")
    host, port = (args.host or "").strip(), args.peer_port or 0  # port 0: none
    if args.host is not None and not host:
        raise UsageError("ae add: --host is empty")
    with _index(config) as sessions, sessions() as session:
        peer = session.scalar(select(Peer).where(Peer.ae_title == args.ae_title))
        verb = "updated" if peer is not None else "added"
        peer = peer or Peer(ae_title=args.ae_title)
        peer.host, peer.port, peer.permissions = host, port, args.permissions
        peer.check_host = args.check_host
        session.add(peer)
        session.commit()
    checked = ", connections checked against the host" if args.check_host else ""
    print(f"{verb} peer {args.ae_title}: {_destination(host, port)}, permissions {args.permissions}{checked}")
    return 0


def _ae_remove(config: NodeConfig, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from scp_node.index.models import Peer

    with _index(config) as sessions, sessions() as session:
        peer = session.scalar(select(Peer).where(Peer.ae_title == args.ae_title))
        if peer is None:
            known = ", ".join(session.scalars(select(Peer.ae_title).order_by(Peer.ae_title))) or "none"
            print(f"scp-node: no peer {args.ae_title} (peers: {known})", file=sys.stderr)
            return 1
        session.delete(peer)
        session.commit()
    print(f"removed peer {args.ae_title}")
    if any(entry.ae_title == args.ae_title for entry in config.access.peers):
        print(f"note: {args.ae_title} is in access.peers of the config; `serve` adds it again at start")
    return 0


# -- stats -----------------------------------------------------------------------------------


class _QueueDepth:
    """Compress jobs waiting: RQ's queue length with Redis; else the index's received and
    queued instances (the in-process queue lives in the serving process)."""

    def __init__(self, config: NodeConfig) -> None:
        self._queue = None
        if config.queue.redis_url:
            from redis import Redis
            from rq import Queue

            self._queue = Queue(config.queue.name, connection=Redis.from_url(config.queue.redis_url))

    def __call__(self, by_state: dict[str, int]) -> int:
        if self._queue is not None:
            return self._queue.count
        return sum(by_state.get(state, 0) for state in PENDING_STATES)

    def close(self) -> None:
        if self._queue is not None:
            self._queue.connection.close()


def _stats(config: NodeConfig, args: argparse.Namespace) -> int:
    depth = _QueueDepth(config)
    try:
        with _index(config) as sessions:
            if args.watch:
                return _watch(lambda: _sample(sessions, depth), args.interval, args.count)
            from scp_node.index.repository import stats

            with sessions() as session:
                result = stats(session)
            queue_depth = depth(result.by_state)
    finally:
        depth.close()
    report = {
        **result.__dict__,
        "compression_ratio": round(result.compression_ratio, 4),
        "queue_depth": queue_depth,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from scp_node.index.database import display_url

    _print_stats(result, queue_depth, display_url(config.database_url))
    return 0


def _print_stats(result: IndexStats, queue_depth: int, where: str) -> None:
    ratio = result.compression_ratio
    rows = [
        ("index", where),
        ("patients", result.patients),
        ("studies", result.studies),
        ("series", result.series),
        ("instances", result.instances),
        ("received", human_bytes(result.received_bytes)),
        ("stored", human_bytes(result.stored_bytes)),
        ("ratio", f"{ratio:.2f} : 1" if ratio else "-"),
        ("pixel data in", human_bytes(result.pixel_bytes_in)),
        ("pixel data out", human_bytes(result.pixel_bytes_out)),
        ("codec fallbacks", result.codec_fallbacks),
        ("queue depth", queue_depth),
    ]
    for label, value in rows:
        print(f"{label:<16} {value}")
    for title, counts in (("state", result.by_state), ("codec", result.by_codec)):
        print()
        print(f"{title:<16} {'instances':>10}")
        for key, value in sorted(counts.items(), key=lambda item: (-item[1], item[0])) or [("(none)", 0)]:
            print(f"{key:<16} {value:>10}")


def human_bytes(count: float) -> str:
    """Decimal units as disks are sold: 999 B, 12.3 kB, 4.56 MB, 1.20 GB."""
    if count < 1000:
        return f"{int(count)} B"
    for unit in ("kB", "MB", "GB", "TB", "PB"):
        count /= 1000
        if count < 1000 or unit == "PB":
            return f"{count:.3g} {unit}" if count < 100 else f"{count:.0f} {unit}"
    raise AssertionError("unreachable")


def _sample(sessions: sessionmaker[Session], depth: _QueueDepth) -> dict:
    """One `--watch` sample from aggregate queries (the full `stats` also checks every file on
    disk, too slow to repeat every few seconds on a large index). "settled": instances that
    left the queue (compressed, failed, replaced by a copy...)."""
    from sqlalchemy import func, select

    from scp_node.index.models import Instance

    with sessions() as session:
        by_state = {
            str(state): count
            for state, count in session.execute(select(Instance.state, func.count()).group_by(Instance.state))
        }
        pixel_bytes_in = session.scalar(select(func.coalesce(func.sum(Instance.pixel_bytes_in), 0))) or 0
        # A lossy copy is a row of its own that was never queued: not work done on the queue.
        copies = session.scalar(select(func.count()).where(Instance.derived_from_uid.is_not(None))) or 0
    return {
        "time": time.monotonic(),
        "pending": depth(by_state),
        "compressed": by_state.get("compressed", 0),
        "settled": sum(by_state.values()) - sum(by_state.get(state, 0) for state in PENDING_STATES) - copies,
        "pixel_bytes_in": int(pixel_bytes_in),
        "by_state": by_state,
    }


class _Rates:
    """Instances/s and MB/s compressed, and the ETA of the queue, over a sliding window."""

    def __init__(self) -> None:
        self.samples: deque[dict] = deque()
        self.first: dict | None = None

    def add(self, sample: dict) -> dict[str, Any]:
        self.first = self.first or sample
        self.samples.append(sample)
        while len(self.samples) > 2 and sample["time"] - self.samples[0]["time"] > WATCH_WINDOW_S:
            self.samples.popleft()
        oldest = self.samples[0]
        elapsed = sample["time"] - oldest["time"]

        def rate(key: str) -> float:
            return max(0.0, (sample[key] - oldest[key]) / elapsed) if elapsed > 0 else 0.0

        settle_rate = rate("settled")
        eta = sample["pending"] / settle_rate if settle_rate > 0 else None
        done = max(0, sample["settled"] - self.first["settled"])
        return {
            "pending": sample["pending"],
            "done": done,
            "instances_per_s": rate("compressed"),
            "mb_per_s": rate("pixel_bytes_in") / 1e6,
            "eta": "-" if eta is None else _clock(eta) if sample["pending"] else "0:00:00",
        }


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _watch(sample: Callable[[], dict], interval: float, count: int | None) -> int:
    """`stats --watch`: on a terminal a live progress bar (rich), else one line per sample."""
    from rich.console import Console

    console = Console()
    rates = _Rates()
    samples = 0
    try:
        if console.is_terminal:
            _watch_live(console, sample, rates, interval, count)
        else:
            while count is None or samples < count:
                if samples:
                    time.sleep(interval)
                view = rates.add(sample())
                samples += 1
                print(
                    f"{time.strftime('%H:%M:%S')} queue {view['pending']} done {view['done']} "
                    f"{view['instances_per_s']:.2f} instances/s {view['mb_per_s']:.2f} MB/s "
                    f"ETA {view['eta']}",
                    flush=True,
                )
    except KeyboardInterrupt:
        pass
    return 0


def _watch_live(
    console: Any, sample: Callable[[], dict], rates: _Rates, interval: float, count: int | None
) -> None:
    """A table of states over a progress bar: the instances compressed since the watch began
    against those plus the queue, with rates and the ETA."""
    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn
    from rich.table import Table

    progress = Progress(
        TextColumn("[bold]{task.description:<12}"),
        BarColumn(),
        TextColumn("{task.fields[counts]}"),
        TextColumn("{task.fields[rates]}"),
        TextColumn("ETA {task.fields[eta]}"),
        console=console,
    )
    task = progress.add_task("sampling", total=1, completed=0, counts="", rates="", eta="-")
    samples = 0
    with Live(progress, console=console, refresh_per_second=4) as live:
        while count is None or samples < count:
            if samples:
                time.sleep(interval)
            current = sample()
            view = rates.add(current)
            samples += 1
            total = view["done"] + view["pending"]
            progress.update(
                task,
                total=max(total, 1),
                completed=view["done"] if total else 1,
                description=f"queue {view['pending']}" if view["pending"] else "idle",
                counts=f"{view['done']}/{total} done",
                rates=f"{view['instances_per_s']:.2f} instances/s  {view['mb_per_s']:.2f} MB/s",
                eta=view["eta"],
            )
            states = Table(box=None, pad_edge=False)
            states.add_column("state")
            states.add_column("instances", justify="right")
            for state, number in sorted(current["by_state"].items(), key=lambda item: (-item[1], item[0])):
                states.add_row(state, str(number))
            live.update(Group(states, progress))


# -- verify, originals -----------------------------------------------------------------------


def _verify(config: NodeConfig, args: argparse.Namespace) -> int:
    """Digest every blob and spool file; fully rebuild a sample and check the ingest SHA-256."""
    import random

    from scp_node.context import NodeContext
    from scp_node.index.models import Instance, StorageState
    from scp_node.retrieve import RetrieveError, load_stored_file

    context = NodeContext.open(config, migrate=False)
    fraction = config.compression.verify_sample if args.sample is None else args.sample
    checked = decoded = 0
    problems: list[str] = []
    try:
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
    finally:
        context.close()
    for line in problems:
        print(line)
    print(f"checked {checked} instances, fully decoded {decoded}, problems {len(problems)}")
    return 1 if problems else 0


def _digest_problem(instance: Any) -> str | None:
    import hashlib

    path = instance.blob_path or instance.spool_path
    if not path or not Path(path).exists():
        return f"missing file {path}"
    if instance.blob_path and hashlib.sha256(Path(path).read_bytes()).hexdigest() != instance.blob_sha256:
        return "blob digest mismatch"
    return None


def _originals_purge(config: NodeConfig, _args: argparse.Namespace) -> int:
    from scp_node.context import NodeContext
    from workers.retention import purge_expired_originals

    context = NodeContext.open(config, migrate=False)
    try:
        print(f"dropped {purge_expired_originals(context)} originals")
    finally:
        context.close()
    return 0


# -- codec -----------------------------------------------------------------------------------


def _codec_try(config: NodeConfig, args: argparse.Namespace) -> int:
    options = dict(args.option)
    try:
        check_options(args.codec, options)
    except InvalidCodecOption as exc:
        raise UsageError(f"codec try --option: {exc}") from None

    from workers.codec_trial import try_codec
    from workers.codecs import configure, create_codec
    from workers.pixels import UnsupportedPixels

    configure(config.compression)  # compression.ldm.weights_dir and the like
    codec = create_codec(args.codec, **options)
    failures = 0
    if not args.json:
        print(
            f"{'file':<32} {'original':>9} {'coded':>9} {'ratio':>9} {'bpsp':>7} {'maxerr':>6} "
            f"{'psnr':>7} {'enc s':>7} {'dec s':>7}"
        )
    for path in args.files:
        try:
            result = try_codec(codec, path)
        except (UnsupportedPixels, ValueError, OSError) as exc:
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


if __name__ == "__main__":
    sys.exit(main())

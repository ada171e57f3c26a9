"""The command line: each command, its options with their defaults in the help, and the checks of
their values, so that a bad value is one line naming the argument and what is allowed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from scp_node.cli import checks, codec_tools, http_users, peers, serving, stats
from scp_node.config import PERMISSIONS, HttpConfig, NetworkConfig, StorageConfig
from scp_node.imaging.codecs.registry import CODECS
from scp_node.index.peer_rules import InvalidPeer, ae_title, permission_list

Commands = argparse._SubParsersAction  # what add_subparsers returns: add_parser adds a command
_Number = TypeVar("_Number", int, float)


class _OneLineErrors(argparse.ArgumentParser):
    """argparse whose errors are one line: the command, the argument and what is allowed."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _HelpWithDefaults(argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default (unless it is none or the text says it)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or default == []:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


def build_parser(description: str) -> argparse.ArgumentParser:
    """The `scp-node` parser; each command sets `run`, the function main calls with the config."""
    parser = _OneLineErrors(prog="scp-node", description=description, formatter_class=_HelpWithDefaults)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="config.yaml (default: the embedded defaults)")
    common.add_argument(
        "--data-dir",
        type=Path,
        help=f"override storage.data_dir (default: the config's, {_shown(StorageConfig().data_dir)})",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND", title="commands")
    _add_serving_commands(commands, common)
    _add_peer_commands(commands, common)
    _add_http_commands(commands, common)
    _add_stats_command(commands, common)
    _add_check_commands(commands, common)
    _add_codec_commands(commands, common)
    return parser


def _command(group: Commands, name: str, text: str, **kwargs: Any) -> argparse.ArgumentParser:
    return group.add_parser(name, help=text, description=text, formatter_class=_HelpWithDefaults, **kwargs)


def _actions(commands: Commands, name: str, text: str) -> Commands:
    """A command whose actions are commands of their own (`db upgrade`, `ae list`...)."""
    return _command(commands, name, text).add_subparsers(required=True, metavar="ACTION", title="actions")


def _add_serving_commands(commands: Commands, common: argparse.ArgumentParser) -> None:
    network = NetworkConfig()
    serve = _command(commands, "serve", "run the DICOM SCP (migrates the index first)", parents=[common])
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
    http = serve.add_mutually_exclusive_group()
    http.add_argument(
        "--http-port",
        type=_listen_port,
        help=f"DICOMweb / health / metrics port, 0: any free one (default: http.port, {HttpConfig().port})",
    )
    http.add_argument("--no-http", action="store_true", help="serve DICOM only (as http.enabled: false)")
    serve.set_defaults(run=serving.serve)

    worker = _command(
        commands, "worker", "run an RQ compress worker (needs queue.redis_url; migrates)", parents=[common]
    )
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.set_defaults(run=serving.worker)

    db = _actions(commands, "db", "the index's database schema")
    _command(
        db, "upgrade", "apply the Alembic migrations up to this version's schema", parents=[common]
    ).set_defaults(run=serving.db_upgrade)


def _add_peer_commands(commands: Commands, common: argparse.ArgumentParser) -> None:
    ae = _actions(commands, "ae", "peer AE titles: who may do what, where C-MOVE sends")
    _command(ae, "list", "list the peer table", parents=[common]).set_defaults(run=peers.ae_list)
    add = _command(
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
    add.add_argument(
        "--tls", action="store_true", help="associations the node opens to this peer use DICOM TLS"
    )
    add.add_argument(
        "--commitment-report",
        choices=["same_association", "new_association"],
        default="same_association",
        help="where storage commitment results go (same_association falls back to a new one "
        "when the peer has released; that needs --host/--port)",
    )
    add.set_defaults(run=peers.ae_add)
    remove = _command(ae, "remove", "remove a peer", parents=[common])
    remove.add_argument("ae_title", type=_ae_title)
    remove.set_defaults(run=peers.ae_remove)


def _add_http_commands(commands: Commands, common: argparse.ArgumentParser) -> None:
    http = _actions(commands, "http", "credentials of HTTP users (config http.users)")
    _command(
        http,
        "hash-password",
        "read a password (stdin or prompt), print its password_hash for http.users",
        parents=[common],
    ).set_defaults(run=http_users.hash_password)
    _command(
        http, "new-token", "print a new bearer token and the token_sha256 for http.users", parents=[common]
    ).set_defaults(run=http_users.new_token)


def _add_stats_command(commands: Commands, common: argparse.ArgumentParser) -> None:
    stats_ = _command(
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
    stats_.set_defaults(run=stats.show_stats)


def _add_check_commands(commands: Commands, common: argparse.ArgumentParser) -> None:
    verify = _command(
        commands, "verify", "check stored files (exit 1 when a problem is found)", parents=[common]
    )
    verify.add_argument(
        "--sample", type=_fraction, help="fraction fully decoded, 0-1 (default: compression.verify_sample)"
    )
    verify.set_defaults(run=checks.verify)

    originals = _actions(commands, "originals", "originals replaced by lossy copies")
    _command(
        originals,
        "purge",
        "drop kept originals past compression.lossy.keep_original_days now",
        parents=[common],
    ).set_defaults(run=checks.originals_purge)


def _add_codec_commands(commands: Commands, common: argparse.ArgumentParser) -> None:
    codec = _actions(commands, "codec", "codec tools: try, train, export")
    trial = _command(
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
    trial.set_defaults(run=codec_tools.codec_try)
    learn = _command(codec, "train", "train the learned lossless codec", parents=[common])
    learn.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="folders of DICOM files")
    learn.add_argument("--checkpoint", type=Path, required=True, help="resumed when it exists")
    learn.add_argument("--steps", type=_positive_int, default=1000, help="training steps")
    learn.add_argument("--batch", type=_positive_int, default=4, help="patches per step")
    learn.add_argument("--patch", type=_positive_int, default=128, help="patch side in pixels")
    learn.add_argument("--learning-rate", type=_positive_float, default=1e-3, help="at step 0")
    learn.add_argument(
        "--final-learning-rate", type=_positive_float, default=1e-5, help="cosine decay to this"
    )
    learn.add_argument(
        "--channels", type=_positive_int, default=16, help="model width (new checkpoints only)"
    )
    learn.add_argument(
        "--blocks", type=_positive_int, default=4, help="residual blocks per stage (new checkpoints only)"
    )
    learn.add_argument(
        "--series-fraction", type=_fraction, default=0.3, help="steps on neighbouring-slice pairs"
    )
    learn.add_argument(
        "--checkpoint-seconds", type=_positive_float, default=180.0, help="checkpoint at least this often"
    )
    learn.add_argument(
        "--device", choices=("cpu", "cuda"), help="where to train (default: cuda when present)"
    )
    learn.set_defaults(run=codec_tools.codec_train)
    export = _command(codec, "export", "write a checkpoint's weights for the learned codec", parents=[common])
    export.add_argument("checkpoint", type=Path)
    export.add_argument("--out", type=Path, help="weight file (default: the one the codec ships)")
    export.set_defaults(run=codec_tools.codec_export)


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
    try:
        return ae_title(text)
    except InvalidPeer as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _port(text: str, lowest: int = 1) -> int:
    return _number(text, int, lambda port: lowest <= port <= 65535, f"a port: allowed {lowest}-65535")


def _listen_port(text: str) -> int:
    return _port(text, lowest=0)


def _permissions(text: str) -> str:
    try:
        return ",".join(permission_list(text))
    except InvalidPeer as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _option(text: str) -> tuple[str, Any]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (e.g. effort=9)")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def _positive_float(text: str) -> float:
    return _number(text, float, lambda value: value > 0, "a positive number")


def _positive_int(text: str) -> int:
    return _number(text, int, lambda value: value >= 1, "a positive integer")


def _fraction(text: str) -> float:
    return _number(text, float, lambda value: 0.0 <= value <= 1.0, "a fraction: allowed 0 to 1")


def _number(
    text: str, parse: Callable[[str], _Number], allowed: Callable[[_Number], bool], what: str
) -> _Number:
    """`text` as a number that `allowed` accepts; anything else is one line: 'text' is not `what`."""
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not allowed(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value

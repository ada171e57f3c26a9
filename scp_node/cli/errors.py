"""What the admin sees when a command cannot run: the config's problems and errors they can fix,
each as one line (main prints it after `scp-node: ` and exits 2)."""

from __future__ import annotations

import argparse
import sys

from scp_node.config import NodeConfig, load_config
from scp_node.imaging.codecs.registry import InvalidCodecOption


class UsageError(Exception):
    """Bad input an admin can correct; main prints it as one line and exits 2."""


def load_node_config(args: argparse.Namespace) -> NodeConfig:
    """The config file (or the defaults) with the command's overrides; a file that cannot be read,
    is not YAML or has invalid settings is a UsageError naming the file and each problem."""
    import yaml
    from pydantic import ValidationError

    where = f"config {args.config}" if args.config else "settings"
    try:
        return load_config(
            args.config,
            **{
                "network.port": getattr(args, "port", None),
                "network.ae_title": getattr(args, "ae_title", None),
                "http.port": getattr(args, "http_port", None),
                "http.enabled": False if getattr(args, "no_http", False) else None,
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


def admin_error(exc: Exception, config: NodeConfig) -> str | None:
    """The one-line message for an error the admin can act on, or None for a bug (traceback).

    Exception classes of modules that were never imported cannot have been raised, so they are
    looked up in sys.modules instead of being imported here.
    """
    if isinstance(exc, UsageError | InvalidCodecOption):
        return str(exc)
    known = {
        "scp_node.imaging.codecs.base": "CodecUnavailable",  # a codec this machine cannot run
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

"""The `scp-node` command: serve, worker, db, ae, http, stats, verify, originals purge, codec tools.

Start-up is kept light: only the config and the codec names are imported here; each command
imports what it needs (the index, the server, torch for the learned codec) when it runs.
Only `serve`, `worker` and `db upgrade` migrate the index; the other commands refuse an index
whose schema is behind. Errors an admin can fix are one line on stderr and exit status 2.

The parser and its argument checks are in `arguments`, the one-line errors and the config in
`errors`; each command group has a module: `serving`, `peers`, `http_users`, `stats`, `checks`,
`codec_tools`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from scp_node.cli.arguments import build_parser
from scp_node.cli.errors import UsageError, admin_error, load_node_config


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; an error the admin can fix is one line on stderr (exit 2), not a traceback."""
    args = build_parser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    try:
        config = load_node_config(args)
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
        message = admin_error(exc, config)
        if message is None:
            raise
        print(f"scp-node: {message}", file=sys.stderr)
        return 2

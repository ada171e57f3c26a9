"""The long-running commands and the schema: `serve`, `worker` and `db upgrade`, the only ones
that migrate the index. `serve` turns SIGTERM and Ctrl-C into a clean shutdown."""

from __future__ import annotations

import argparse
import logging
import sys

from scp_node.cli.shutdown import ShutdownSignals, longest_timeout, serve_until_stopped
from scp_node.config import NodeConfig

log = logging.getLogger("scp_node.cli")  # the name the log lines have always shown


def serve(config: NodeConfig, _args: argparse.Namespace) -> int:
    """DICOM, and HTTP (DICOMweb, /healthz, /metrics) unless http.enabled is false; HTTP starts
    after the DICOM server holds the data-dir lock and stops before the runtime closes."""
    from scp_node.cli.association_processes import AssociationProcesses
    from scp_node.server import StartRefused, start
    from scp_node.web.server import HttpServer, HttpStartFailed
    from workers.runtime import open_runtime

    runtime = open_runtime(config)
    _freeze_startup_objects()
    http = None
    helpers = AssociationProcesses([])
    # Signals are taken before anything listens: a SIGTERM while HTTP starts is a clean stop too.
    with ShutdownSignals() as signals:
        try:
            server = start(runtime.context, runtime.queue, block=False)
            helpers = AssociationProcesses.start(config, server.socket, config.network.serve_processes - 1)
            if config.http.enabled:
                http = HttpServer(runtime.context, runtime.queue)
                try:
                    http.start()
                except HttpStartFailed:
                    server.shutdown()
                    raise
            serve_until_stopped(server, config.network, signals, also_stop=helpers.terminate)
        except (StartRefused, HttpStartFailed) as exc:
            print(f"scp-node: {exc}", file=sys.stderr)
            return 2
        finally:
            helpers.terminate()
            helpers.wait(longest_timeout(config.network))
            if http is not None:
                http.stop()
            runtime.close()
    log.info("shut down cleanly")
    return 0


def _freeze_startup_objects() -> None:
    """The modules, codecs and models loaded at start (torch's among them) are a few hundred
    thousand objects that live as long as the node; every full garbage collection scanned them,
    holding the GIL for about 0.25 s, stalling every association. Frozen, they are no longer
    scanned."""
    import gc

    gc.collect()
    gc.freeze()


def worker(config: NodeConfig, args: argparse.Namespace) -> int:
    if not config.queue.redis_url:
        print(
            "scp-node: queue.redis_url is empty: the node runs jobs itself (in-process queue)",
            file=sys.stderr,
        )
        return 2
    from workers.queue import RedisQueue, run_at_lower_priority
    from workers.rq_worker import NodeWorker
    from workers.runtime import open_runtime

    runtime = open_runtime(config)
    try:
        assert isinstance(runtime.queue, RedisQueue)  # queue.redis_url is set
        run_at_lower_priority(config.queue.worker_nice)  # SimpleWorker runs jobs on this thread
        worker = NodeWorker(runtime.queue.rq_queue, runtime.context)
        worker.work(burst=args.burst, with_scheduler=False)
    finally:
        runtime.close()
    return 0


def db_upgrade(config: NodeConfig, _args: argparse.Namespace) -> int:
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

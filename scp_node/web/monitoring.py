"""/healthz and /metrics: whether the node can do its job now (database, storage, queue), and
the figures a Prometheus server scrapes.

The metrics use two grouped queries of their own rather than `index.repository.stats`, which
checks every instance's file on disk: fine for `scp-node stats`, too slow for a scrape every
15 seconds on a large archive.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from redis.exceptions import RedisError
from sqlalchemy import case, func, select, text
from sqlalchemy.exc import SQLAlchemyError

from scp_node.context import NodeContext
from scp_node.index.models import Instance, StorageState
from workers.queue import JobQueue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    checks: dict[str, str]  # component -> "ok" or what is wrong

    @property
    def healthy(self) -> bool:
        return all(value == "ok" for value in self.checks.values())


def health(context: NodeContext, queue: JobQueue) -> Health:
    """Reach the database, write to the data dir, ask the queue its depth."""
    checks = {}
    try:
        with context.sessions() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    root = context.spool.root
    checks["storage"] = "ok" if root.is_dir() and os.access(root, os.W_OK) else f"{root} is not writable"
    try:
        queue.depth()
        checks["queue"] = "ok"
    except (RedisError, OSError) as exc:
        checks["queue"] = f"unreachable: {type(exc).__name__}"
    if not all(value == "ok" for value in checks.values()):
        log.warning("health check failed: %s", checks)
    return Health(checks)


def metrics(context: NodeContext, queue: JobQueue) -> str:
    """Prometheus text exposition format 0.0.4."""
    stored_size = case(
        (Instance.state == StorageState.DROPPED, 0),
        else_=func.coalesce(Instance.stored_size, Instance.received_size),
    )
    received_size = case((Instance.derived_from_uid.is_not(None), 0), else_=Instance.received_size)
    with context.sessions() as session:
        by_state = session.execute(select(Instance.state, func.count()).group_by(Instance.state)).all()
        received, stored, fallbacks = session.execute(
            select(
                func.coalesce(func.sum(received_size), 0),
                func.coalesce(func.sum(stored_size), 0),
                func.coalesce(func.sum(case((Instance.codec_fallback, 1), else_=0)), 0),
            )
        ).one()
        by_codec = session.execute(
            select(Instance.codec, func.count()).where(Instance.codec.is_not(None)).group_by(Instance.codec)
        ).all()
    lines = [
        "# HELP scp_node_instances Instances in the index by storage state.",
        "# TYPE scp_node_instances gauge",
        *(f'scp_node_instances{{state="{state}"}} {count}' for state, count in sorted(by_state)),
        "# HELP scp_node_instances_by_codec Instances whose pixels a codec holds.",
        "# TYPE scp_node_instances_by_codec gauge",
        *(f'scp_node_instances_by_codec{{codec="{codec}"}} {count}' for codec, count in sorted(by_codec)),
        "# HELP scp_node_received_bytes Bytes of the files received (lossy copies excluded).",
        "# TYPE scp_node_received_bytes gauge",
        f"scp_node_received_bytes {int(received)}",
        "# HELP scp_node_stored_bytes Bytes the stored blobs and spool files take.",
        "# TYPE scp_node_stored_bytes gauge",
        f"scp_node_stored_bytes {int(stored)}",
        "# HELP scp_node_codec_fallbacks Instances stored with a fallback codec.",
        "# TYPE scp_node_codec_fallbacks gauge",
        f"scp_node_codec_fallbacks {int(fallbacks)}",
        "# HELP scp_node_queue_depth Compress jobs waiting.",
        "# TYPE scp_node_queue_depth gauge",
        f"scp_node_queue_depth {queue.depth()}",
    ]
    return "\n".join(lines) + "\n"

"""/healthz and /metrics: whether the node can do its job now (database, storage, queue), and
the figures a Prometheus server scrapes.

The metrics use grouped queries of their own rather than `index.repository.stats`, which
checks every instance's file on disk: fine for `scp-node stats`, too slow for a scrape every
15 seconds on a large archive. Associations and compress-job durations are the serving
process's own counts (NodeContext.activity).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from redis.exceptions import RedisError
from sqlalchemy import case, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

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


@dataclass(frozen=True)
class StorageTotals:
    """The index's figures a scrape (and the console's storage page) shows."""

    by_state: dict[str, int]
    by_codec: dict[str, int]
    received_bytes: int  # lossy copies excluded: they were made here, not received
    stored_bytes: int  # blobs, and spool files of instances not compressed yet
    codec_fallbacks: int

    @property
    def ratio(self) -> float:
        return self.received_bytes / self.stored_bytes if self.stored_bytes else 0.0


# Bytes an instance takes now (a dropped original: none), and bytes it was received as.
STORED_SIZE = case(
    (Instance.state == StorageState.DROPPED, 0),
    else_=func.coalesce(Instance.stored_size, Instance.received_size),
)
RECEIVED_SIZE = case((Instance.derived_from_uid.is_not(None), 0), else_=Instance.received_size)


def storage_totals(session: Session) -> StorageTotals:
    by_state = session.execute(select(Instance.state, func.count()).group_by(Instance.state)).all()
    received, stored, fallbacks = session.execute(
        select(
            func.coalesce(func.sum(RECEIVED_SIZE), 0),
            func.coalesce(func.sum(STORED_SIZE), 0),
            func.coalesce(func.sum(case((Instance.codec_fallback, 1), else_=0)), 0),
        )
    ).one()
    by_codec = session.execute(
        select(Instance.codec, func.count()).where(Instance.codec.is_not(None)).group_by(Instance.codec)
    ).all()
    return StorageTotals(
        dict(sorted(by_state)), dict(sorted(by_codec)), int(received), int(stored), int(fallbacks)
    )


def metrics(context: NodeContext, queue: JobQueue) -> str:
    """Prometheus text exposition format 0.0.4."""
    with context.sessions() as session:
        totals = storage_totals(session)
    open_now, accepted = context.activity.associations()
    durations = context.activity.job_durations()
    lines = [
        "# HELP scp_node_instances Instances in the index by storage state.",
        "# TYPE scp_node_instances gauge",
        *(f'scp_node_instances{{state="{state}"}} {count}' for state, count in totals.by_state.items()),
        "# HELP scp_node_instances_by_codec Instances whose pixels a codec holds.",
        "# TYPE scp_node_instances_by_codec gauge",
        *(
            f'scp_node_instances_by_codec{{codec="{codec}"}} {count}'
            for codec, count in totals.by_codec.items()
        ),
        "# HELP scp_node_received_bytes Bytes of the files received (lossy copies excluded).",
        "# TYPE scp_node_received_bytes gauge",
        f"scp_node_received_bytes {totals.received_bytes}",
        "# HELP scp_node_stored_bytes Bytes the stored blobs and spool files take.",
        "# TYPE scp_node_stored_bytes gauge",
        f"scp_node_stored_bytes {totals.stored_bytes}",
        "# HELP scp_node_compression_ratio Received bytes per stored byte (0 with nothing stored).",
        "# TYPE scp_node_compression_ratio gauge",
        f"scp_node_compression_ratio {totals.ratio:.4f}",
        "# HELP scp_node_codec_fallbacks Instances stored with a fallback codec.",
        "# TYPE scp_node_codec_fallbacks gauge",
        f"scp_node_codec_fallbacks {totals.codec_fallbacks}",
        "# HELP scp_node_queue_depth Compress jobs waiting.",
        "# TYPE scp_node_queue_depth gauge",
        f"scp_node_queue_depth {queue.depth()}",
        "# HELP scp_node_associations_open DICOM associations open now.",
        "# TYPE scp_node_associations_open gauge",
        f"scp_node_associations_open {open_now}",
        "# HELP scp_node_associations_total DICOM associations accepted since the node started.",
        "# TYPE scp_node_associations_total counter",
        f"scp_node_associations_total {accepted}",
        "# HELP scp_node_compress_job_seconds Compress jobs this process ran, by duration.",
        "# TYPE scp_node_compress_job_seconds histogram",
        *(f'scp_node_compress_job_seconds_bucket{{le="{bound:g}"}} {n}' for bound, n in durations.buckets),
        f'scp_node_compress_job_seconds_bucket{{le="+Inf"}} {durations.count}',
        f"scp_node_compress_job_seconds_sum {durations.total_s:.6f}",
        f"scp_node_compress_job_seconds_count {durations.count}",
    ]
    return "\n".join(lines) + "\n"

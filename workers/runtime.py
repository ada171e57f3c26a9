"""The one place the node's runtime is opened and closed: the context (config, index,
storage, the site's codecs), the compression policy checked against this machine, and the
queue whose workers run the jobs with that context. `serve`, the RQ worker and the tests'
nodes open the runtime; the admin commands that touch stored files (verify, purge) open the
context alone, here too, without migrating the index or starting workers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from scp_node.config import NodeConfig
from scp_node.context import NodeContext
from workers.policy import validate_policy
from workers.queue import JobQueue, open_queue


@dataclass
class Runtime:
    context: NodeContext
    queue: JobQueue

    def close(self) -> None:
        """Finish the job in hand (queued ones resume at the next start), then the index."""
        self.queue.close()
        self.context.close()


def open_runtime(config: NodeConfig) -> Runtime:
    """Migrates the index first. Raises CodecUnavailable for a policy this machine cannot run
    (a rule naming ldm without weights, a lossy default), before any job can start."""
    context = NodeContext.open(config)
    try:
        validate_policy(config.compression, context.codecs)
    except BaseException:
        context.close()
        raise
    return Runtime(context, open_queue(context))


@contextmanager
def admin_context(config: NodeConfig) -> Iterator[NodeContext]:
    """The context for an admin command: the index must be current (SchemaNotCurrent
    otherwise: migrating is `scp-node db upgrade`'s job); no policy check, no workers."""
    context = NodeContext.open(config, migrate=False)
    try:
        yield context
    finally:
        context.close()

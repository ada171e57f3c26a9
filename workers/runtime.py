"""The one place the node's runtime is opened and closed: the context (config, index,
storage, codec settings), the compression policy checked against this machine, the job
functions bound to the context, and the queue. `serve`, the RQ worker and the tests' nodes
open it here; admin commands that run no jobs open only a NodeContext."""

from __future__ import annotations

from dataclasses import dataclass

from scp_node.config import NodeConfig
from scp_node.context import NodeContext
from workers import jobs
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
        validate_policy(config.compression)
    except BaseException:
        context.close()
        raise
    jobs.bind(context)
    return Runtime(context, open_queue(config.queue))

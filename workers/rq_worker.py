"""The RQ worker of `scp-node worker`: RQ's SimpleWorker, whose jobs get the worker's
NodeContext before the arguments the queue carried.

A queued job holds only a SOP Instance UID (the index, the storage and loaded models cannot
travel through Redis). Each job is handed the context of the worker that took it, so the job
module holds no process state that someone must remember to set.
"""

from __future__ import annotations

from typing import Any

from rq import SimpleWorker
from rq.job import Job
from rq.queue import Queue

from scp_node.context import NodeContext


class ContextJob(Job):
    """A job whose function is called as func(context, *args, **kwargs)."""

    context: NodeContext | None = None

    def _execute(self) -> Any:
        # RQ's one seam for calling the job function (Job.perform calls it); pinned by
        # tests/integration/test_queue_rq.py with a real worker process.
        if self.context is None:
            raise RuntimeError("a ContextJob runs only in a NodeWorker")
        return self.func(self.context, *self.args, **self.kwargs)


class NodeWorker(SimpleWorker):
    """Runs jobs in this process (codecs, and a GPU, are loaded once and kept)."""

    job_class = ContextJob

    def __init__(self, queue: Queue, context: NodeContext) -> None:
        # By name, so that RQ builds the queue with the job class: dequeued jobs are ContextJobs.
        super().__init__([queue.name], connection=queue.connection, job_class=ContextJob)
        self._context = context

    def perform_job(self, job: Job, queue: Queue) -> bool:
        assert isinstance(job, ContextJob), "NodeWorker dequeues ContextJobs only"
        job.context = self._context
        return super().perform_job(job, queue)

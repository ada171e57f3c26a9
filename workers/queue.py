"""Where compress jobs go: RQ on Redis when configured, else worker threads in the node.

Both run the same job function (workers.jobs.compress_instance) with the context of the
process that runs it, so behaviour does not depend on the deployment; only durability of the
queue itself does, which is why the node re-enqueues unfinished instances from the index at
every start.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Protocol

from redis import Redis
from rq import Queue

from scp_node.config import QueueConfig
from scp_node.context import NodeContext
from workers import jobs

log = logging.getLogger(__name__)

# Traffic counts as over once no DIMSE message has come in for this long (seconds).
QUIET_S = 0.25


class JobQueue(Protocol):
    def enqueue_compress(self, sop_instance_uid: str) -> None: ...

    def depth(self) -> int: ...

    def close(self) -> None: ...


class InProcessQueue:
    """Daemon threads draining a FIFO; `close()` finishes the job in hand, then stops.

    They share the interpreter lock with the threads that receive and send instances, which a
    lower niceness does not touch: a job's Python work (reading the file, building and checking
    the blob, the index) holds it for about 20 ms a CT slice, and stalled every association.
    While DIMSE messages are coming in, a worker therefore waits before its next job, at most
    as long as its last job took: compression gets half the time during traffic (the queue
    still drains), all of it once the node is quiet.
    """

    _STOP = object()

    def __init__(self, context: NodeContext, workers: int, nice: int) -> None:
        self._context = context
        self._nice = nice
        self._jobs: queue.Queue = queue.Queue()
        self._threads = [
            threading.Thread(target=self._run, name=f"compress-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def enqueue_compress(self, sop_instance_uid: str) -> None:
        self._jobs.put(sop_instance_uid)

    def depth(self) -> int:
        return self._jobs.qsize()

    def join(self) -> None:
        """Wait until every enqueued job has run (tests and `scp-node` shutdown use it)."""
        self._jobs.join()

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(self._STOP)
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        run_at_lower_priority(self._nice)
        last_job_s = 0.0
        while True:
            uid = self._jobs.get()
            if uid is self._STOP:
                self._jobs.task_done()
                return
            self._context.activity.wait_for_quiet(QUIET_S, at_most_s=last_job_s)
            started = time.monotonic()
            try:
                jobs.compress_instance(self._context, uid)
            except Exception:  # already logged and recorded by the job; keep the thread alive
                pass
            finally:
                last_job_s = time.monotonic() - started
                self._jobs.task_done()


class RedisQueue:
    def __init__(self, config: QueueConfig) -> None:
        self._redis = Redis.from_url(config.redis_url)
        self._queue = Queue(config.name, connection=self._redis, default_timeout=config.job_timeout_s)

    @property
    def rq_queue(self) -> Queue:
        return self._queue

    def enqueue_compress(self, sop_instance_uid: str) -> None:
        """Only the UID travels; the worker that takes the job supplies its own context."""
        self._queue.enqueue(jobs.compress_instance, sop_instance_uid, failure_ttl=7 * 24 * 3600)

    def depth(self) -> int:
        return self._queue.count

    def close(self) -> None:
        self._redis.close()


def open_queue(context: NodeContext) -> JobQueue:
    config = context.config.queue
    if config.redis_url:
        return RedisQueue(config)
    return InProcessQueue(context, config.in_process_workers, config.worker_nice)


def run_at_lower_priority(nice: int) -> None:
    """Raise the calling thread's niceness to `nice` (Linux schedules threads one by one): a
    compress job then yields the CPU to the threads that receive and send instances."""
    thread = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, thread, max(nice, os.getpriority(os.PRIO_PROCESS, thread)))

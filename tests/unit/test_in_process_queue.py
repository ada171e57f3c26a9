"""The in-process queue's compress threads run at queue.worker_nice, so that receiving and
retrieval, on the node's other threads, take the CPU first; and while DIMSE messages come in
they leave the interpreter lock to those threads for as long as their last job took."""

from __future__ import annotations

import itertools
import os
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from scp_node.context import Activity
from workers import jobs
from workers.queue import InProcessQueue


def _priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_compress_threads_yield_the_cpu_and_the_caller_keeps_its_priority(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[tuple[Any, str, int]] = []
    monkeypatch.setattr(jobs, "compress_instance", lambda ctx, uid: ran.append((ctx, uid, _priority())))
    before = _priority()
    context = SimpleNamespace(activity=Activity())
    queue = InProcessQueue(context, workers=2, nice=19)  # type: ignore[arg-type]
    try:
        for uid in ("1.2.3", "1.2.4"):
            queue.enqueue_compress(uid)
        queue.join()
    finally:
        queue.close()
    assert sorted(ran, key=lambda item: item[1]) == [(context, "1.2.3", 19), (context, "1.2.4", 19)]
    assert _priority() == before


def test_jobs_wait_for_traffic_at_most_as_long_as_the_last_job_took(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[float] = []

    def job(_context: object, _uid: str) -> None:
        started.append(time.monotonic())
        time.sleep(0.3)

    monkeypatch.setattr(jobs, "compress_instance", job)
    activity = Activity()
    traffic = threading.Event()

    def messages() -> None:  # an association busy all along
        while not traffic.is_set():
            activity.message_received(None)  # type: ignore[arg-type]
            time.sleep(0.01)

    sender = threading.Thread(target=messages)
    sender.start()
    queue = InProcessQueue(SimpleNamespace(activity=activity), workers=1, nice=0)  # type: ignore[arg-type]
    try:
        for uid in ("1.2.3", "1.2.4", "1.2.5"):
            queue.enqueue_compress(uid)
        queue.join()
        traffic.set()
        sender.join()
        time.sleep(0.3)  # quiet now: the next job starts at once
        queue.enqueue_compress("1.2.6")
        enqueued = time.monotonic()
        queue.join()
    finally:
        traffic.set()
        queue.close()
    gaps = [later - earlier for earlier, later in itertools.pairwise(started[:3])]
    # each job took 0.3 s: the next waited about as long again (0.6 s apart), not for the end
    # of the traffic, which never came while they ran
    assert all(0.55 <= gap < 1.0 for gap in gaps), gaps
    assert started[3] - enqueued < 0.1


def test_waiting_for_quiet_ends_once_messages_stop() -> None:
    activity = Activity()
    before = time.monotonic()
    activity.wait_for_quiet(0.2, at_most_s=5.0)
    assert time.monotonic() - before < 0.05  # nothing ever came in
    activity.message_received(None)  # type: ignore[arg-type]
    before = time.monotonic()
    activity.wait_for_quiet(0.2, at_most_s=5.0)
    assert 0.18 <= time.monotonic() - before < 1.0

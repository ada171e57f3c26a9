"""The in-process queue's compress threads run at queue.worker_nice, so that receiving and
retrieval, on the node's other threads, take the CPU first."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

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
    context = object()
    queue = InProcessQueue(context, workers=2, nice=19)  # type: ignore[arg-type]
    try:
        for uid in ("1.2.3", "1.2.4"):
            queue.enqueue_compress(uid)
        queue.join()
    finally:
        queue.close()
    assert sorted(ran, key=lambda item: item[1]) == [(context, "1.2.3", 19), (context, "1.2.4", 19)]
    assert _priority() == before

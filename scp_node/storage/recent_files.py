"""A small in-memory cache of rebuilt files, for the reference slices of series-mode blobs.

Retrieving a series rebuilds each slice once for itself and again as the reference of its
neighbour; decoding a learned blob costs about a second on a CPU, so the last few rebuilt
files are kept (bounded by bytes). Keys name the exact stored version (SOP Instance UID and
blob digest), so a replaced instance is never served from here.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024


class RecentFiles:
    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> None:
        self.budget_bytes = budget_bytes
        self._files: OrderedDict[Hashable, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], bytes]) -> bytes:
        """The cached file, else `build()` (outside the lock: two threads may build the same
        file once each, which costs time, never correctness)."""
        with self._lock:
            if key in self._files:
                self._files.move_to_end(key)
                return self._files[key]
        data = build()
        self.put(key, data)
        return data

    def put(self, key: Hashable, data: bytes) -> None:
        """Keep `data` (a file whose pixels are the stored instance's) as the newest entry."""
        with self._lock:
            if key not in self._files and len(data) <= self.budget_bytes:
                self._files[key] = data
                self._bytes += len(data)
                while self._bytes > self.budget_bytes:
                    _, evicted = self._files.popitem(last=False)
                    self._bytes -= len(evicted)

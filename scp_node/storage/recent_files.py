"""The most recently stored or rebuilt files, in memory and bounded by bytes.

Decoding a blob costs 25-30 ms for a JPEG XL CT slice and about a second for a learned one;
a study is usually read soon after it arrives (priors fetched by a viewer, a C-MOVE to the
PACS), and a series-mode blob needs its reference slice rebuilt too. Orthanc keeps such a cache
of its storage for the same reason (MaximumStorageCacheSize, 128 MB by default).

Two kinds of entry, both naming the exact stored version so that a replaced instance is never
served from here: files received uncompressed, by SOP Instance UID and data set digest (kept by
the process that received them, which serves them byte for byte as a rebuilt blob would), and
files rebuilt from a blob, by SOP Instance UID and blob digest.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from scp_node.imaging.blob import RebuiltInstance


class RecentFiles:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._files: OrderedDict[Hashable, RebuiltInstance] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def keep_received(self, sop_instance_uid: str, received: RebuiltInstance) -> None:
        self.put(("received", sop_instance_uid, received.dataset_sha256), received)

    def received(self, sop_instance_uid: str, dataset_sha256: str) -> RebuiltInstance | None:
        key = ("received", sop_instance_uid, dataset_sha256)
        with self._lock:
            if key in self._files:
                self._files.move_to_end(key)
            return self._files.get(key)

    def keep_rebuilt(self, sop_instance_uid: str, blob_sha256: str, rebuilt: RebuiltInstance) -> None:
        self.put(("rebuilt", sop_instance_uid, blob_sha256), rebuilt)

    def rebuilt(
        self, sop_instance_uid: str, blob_sha256: str, build: Callable[[], RebuiltInstance]
    ) -> RebuiltInstance:
        """The file the blob rebuilds to, kept or else built now and kept."""
        return self.get(("rebuilt", sop_instance_uid, blob_sha256), build)

    def get(self, key: Hashable, build: Callable[[], RebuiltInstance]) -> RebuiltInstance:
        """The cached file, else `build()` (outside the lock: two threads may build the same
        file once each, which costs time, never correctness)."""
        with self._lock:
            if key in self._files:
                self._files.move_to_end(key)
                return self._files[key]
        rebuilt = build()
        self.put(key, rebuilt)
        return rebuilt

    def put(self, key: Hashable, rebuilt: RebuiltInstance) -> None:
        """Keep `rebuilt` as the newest entry; the oldest go once the budget is exceeded."""
        with self._lock:
            if key in self._files or len(rebuilt.data) > self.budget_bytes:
                return
            self._files[key] = rebuilt
            self._bytes += len(rebuilt.data)
            while self._bytes > self.budget_bytes:
                _, evicted = self._files.popitem(last=False)
                self._bytes -= len(evicted.data)

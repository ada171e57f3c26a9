"""One serving node per data directory.

Start-up recovery empties incoming/ and re-enqueues unfinished instances, and in-process
workers compress the spool: a second `scp-node serve` on the same directory would delete the
first node's live transfers and run its jobs twice. RQ workers and admin commands do not take
the lock: they only work through the index, which arbitrates between any number of them.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from scp_node.storage.errors import StorageError


class DataDirInUse(StorageError):
    """Another process serves this data directory."""


class DataDirLock:
    """An exclusive flock on `<data_dir>/node.lock`, held for the life of the serving process.

    The kernel drops the lock when the process dies (kill -9 included), so a crashed node never
    leaves a stale lock behind; the file's text only tells the admin who holds it.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "node.lock"
        self._fd: int | None = None

    def acquire(self, holder: str) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DataDirInUse(f"data dir {self.path.parent} is in use by {current}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"scp-node serve pid {os.getpid()} ({holder})\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

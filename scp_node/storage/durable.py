"""fsync-then-rename, so a crash leaves either the old state or the complete new file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temp: Path, final: Path) -> None:
    """Make the complete file `temp` durable under the name `final`."""
    with open(temp, "rb+") as handle:
        os.fsync(handle.fileno())
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(temp, final)
    fsync_dir(final.parent)


def atomic_write(final: Path, data: bytes) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    temp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    temp.write_bytes(data)
    publish(temp, final)


def shard_path(root: Path, uid: str, digest: str, suffix: str) -> Path:
    """Two-level fan-out keeps directories small; the digest makes each version's name unique."""
    bucket = hashlib.sha1(uid.encode()).hexdigest()[:2]
    return root / bucket / f"{uid}.{digest[:16]}{suffix}"

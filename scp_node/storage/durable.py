"""fsync-then-rename, so a crash leaves either the old state or the complete new file."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable
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


def remove(paths: Iterable[str | Path]) -> None:
    """Delete files (already gone is fine: two cleaners may race for the same stray file)."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


def unique_path(root: Path, uid: str, digest: str, suffix: str) -> Path:
    """A name no other write ever gets, under a two-level fan-out that keeps directories small.

    Names are never shared between writes, even of identical bytes: a file then belongs to the
    one writer that made it until a committed index row names it, and once no committed row
    names it, none ever will again. That is what makes deleting it safe with any number of
    workers (`scp_node.index.repository.unreferenced`). The digest prefix is for people.
    """
    bucket = hashlib.sha1(uid.encode()).hexdigest()[:2]
    return root / bucket / f"{uid}.{digest[:16]}.{secrets.token_hex(6)}{suffix}"

"""Compressed blobs on the filesystem, named by instance and content digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

from scp_node.storage.durable import atomic_write, shard_path


class BlobStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "blobs"
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, sop_instance_uid: str, blob: bytes) -> tuple[Path, str]:
        """Write durably; writing the same content twice lands on the same path (idempotent jobs)."""
        digest = hashlib.sha256(blob).hexdigest()
        path = shard_path(self.root, sop_instance_uid, digest, ".blob")
        if not (path.exists() and path.stat().st_size == len(blob)):
            atomic_write(path, blob)
        return path, digest

"""Compressed blobs on the filesystem, one file per write, named by instance and content digest."""

from __future__ import annotations

import hashlib
from pathlib import Path

from scp_node.storage.durable import atomic_write, unique_path


class BlobStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "blobs"
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, sop_instance_uid: str, blob: bytes) -> tuple[Path, str]:
        """Write durably under a new name; the file is the caller's until a committed row names it."""
        digest = hashlib.sha256(blob).hexdigest()
        path = unique_path(self.root, sop_instance_uid, digest, ".blob")
        atomic_write(path, blob)
        return path, digest

"""`verify` and `originals purge`: the stored files against their digests (a sample fully
rebuilt), and dropping the originals that lossy copies replaced once they have been kept long enough."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from scp_node.config import NodeConfig

if TYPE_CHECKING:
    from scp_node.index.models import Instance


def verify(config: NodeConfig, args: argparse.Namespace) -> int:
    """Digest every blob and spool file; fully rebuild a sample and check the ingest SHA-256."""
    import random

    from scp_node.imaging.errors import ImagingError
    from scp_node.index.models import Instance, StorageState
    from scp_node.retrieve import RetrieveError, load_stored_file
    from scp_node.storage.recent_files import RecentFiles
    from workers.runtime import admin_context

    fraction = config.compression.verify_sample if args.sample is None else args.sample
    checked = decoded = 0
    problems: list[str] = []
    with admin_context(config) as context, context.sessions() as session:
        # A dropped original has no data left by design (its lossy copy is checked instead).
        kept = session.query(Instance).where(Instance.state != StorageState.DROPPED)
        for instance in kept.yield_per(500):
            checked += 1
            problem = _digest_problem(instance)
            if problem is None and random.random() < fraction:
                decoded += 1
                try:
                    # RecentFiles(0): the blob on disk is decoded, never a copy held in memory.
                    load_stored_file(instance, context.codecs, context.instance_file, RecentFiles(0))
                except (RetrieveError, OSError, ImagingError) as exc:
                    problem = str(exc)
            if problem:
                problems.append(f"{instance.sop_instance_uid}: {problem}")
    for line in problems:
        print(line)
    print(f"checked {checked} instances, fully decoded {decoded}, problems {len(problems)}")
    return 1 if problems else 0


def _digest_problem(instance: Instance) -> str | None:
    import hashlib

    path = instance.blob_path or instance.spool_path
    if not path or not Path(path).exists():
        return f"missing file {path}"
    if instance.blob_path and hashlib.sha256(Path(path).read_bytes()).hexdigest() != instance.blob_sha256:
        return "blob digest mismatch"
    return None


def originals_purge(config: NodeConfig, _args: argparse.Namespace) -> int:
    from workers.retention import purge_expired_originals
    from workers.runtime import admin_context

    with admin_context(config) as context:
        print(f"dropped {purge_expired_originals(context)} originals")
    return 0

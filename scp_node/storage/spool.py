"""Received instances, exactly as they came off the wire, until a verified blob replaces them."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from scp_node.imaging.blob import RebuiltInstance
from scp_node.imaging.dicom_layout import FileLayout, read_layout
from scp_node.storage.durable import publish, unique_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpooledInstance:
    path: Path
    size: int
    dataset_sha256: str
    layout: FileLayout
    data: bytes  # the file as read to validate it: retrieval soon after may serve it

    def as_file(self) -> RebuiltInstance:
        layout = self.layout
        return RebuiltInstance(self.data, layout.dataset_offset, self.dataset_sha256, layout.transfer_syntax)


class Spool:
    """`incoming/` holds transfers in progress (pynetdicom writes there), `spool/` holds
    acknowledged files. Both are under the data dir so publishing is a same-disk rename."""

    def __init__(self, data_dir: Path) -> None:
        self.incoming = data_dir / "incoming"
        self.root = data_dir / "spool"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)

    def accept(self, received: Path, sop_instance_uid: str) -> SpooledInstance:
        """Validate a received file and make it durable under a name of its own (a re-sent copy
        never lands on the name of the one indexed); raises InvalidDicomFile when malformed."""
        data = received.read_bytes()
        layout = read_layout(data)
        digest = hashlib.sha256(memoryview(data)[layout.dataset_offset :]).hexdigest()
        final = unique_path(self.root, sop_instance_uid, digest, ".dcm")
        publish(received, final)
        return SpooledInstance(final, len(data), digest, layout, data)

    def clean_incoming(self, idle_for_s: float = 0.0) -> int:
        """Drop transfers that were never acknowledged: all of them at start-up, and while
        serving those idle for `idle_for_s` (pynetdicom leaves an aborted or crashed transfer's
        file behind; a live one is written to at least every network timeout)."""
        now = time.time()
        removed = 0
        for path in list(self.incoming.iterdir()):
            try:
                if idle_for_s and now - path.stat().st_mtime < idle_for_s:
                    continue
                path.unlink()
            except FileNotFoundError:  # accepted into the spool meanwhile
                continue
            removed += 1
        if removed:
            log.warning("removed %d half-received files from %s", removed, self.incoming)
        return removed

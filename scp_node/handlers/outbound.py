"""What C-GET and C-MOVE share: which instances a retrieve identifier names, and sending them as
C-STORE sub-operations over a store association (the requester's for C-GET, a new one to the
destination for C-MOVE).

pynetdicom sends a yielded data set by re-encoding it, which is not byte-exact (it drops group
lengths, for one), and it silently skips a yielded None, which would leave the sub-operation
counts and the Failed SOP Instance UID List wrong. So while a retrieve runs, the store
association's send_c_store is wrapped: a `FileToSend` goes out as the file's raw bytes
(pynetdicom's chunked send), a `CannotSend` is answered locally as a failed sub-operation,
anything else passes through unchanged.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pynetdicom.association import Association
from pynetdicom.events import Event

from scp_node.context import NodeContext
from scp_node.handlers import status
from scp_node.imaging.errors import ImagingError
from scp_node.index.query import InvalidQuery
from scp_node.index.repository import find_instance, instances_for_retrieve
from scp_node.retrieve import RetrieveError, StoredFile, converted_dataset, load_stored_file

log = logging.getLogger(__name__)

LEVEL_KEYS = {
    "PATIENT": ("PatientID",),
    "STUDY": ("StudyInstanceUID",),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}


@dataclass(frozen=True)
class Match:
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str


def matching_instances(context: NodeContext, identifier: Dataset) -> list[Match]:
    """Instances a C-GET / C-MOVE identifier names; InvalidQuery when the identifier is invalid."""
    level = str(identifier.get("QueryRetrieveLevel", "")).upper()
    if level not in LEVEL_KEYS:
        raise InvalidQuery(f"unknown QueryRetrieveLevel {level!r}")
    if not identifier.get(LEVEL_KEYS[level][-1]):
        raise InvalidQuery(f"{level} level needs {LEVEL_KEYS[level][-1]}")
    with context.sessions() as session:
        instances = instances_for_retrieve(
            session,
            patient_id=str(identifier.get("PatientID", "") or ""),
            study_uids=_uids(identifier, "StudyInstanceUID"),
            series_uids=_uids(identifier, "SeriesInstanceUID") if level in ("SERIES", "IMAGE") else [],
            sop_uids=_uids(identifier, "SOPInstanceUID") if level == "IMAGE" else [],
        )
        return [Match(i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid) for i in instances]


def _uids(identifier: Dataset, keyword: str) -> list[str]:
    """A UID key as a list: pydicom gives one str, or a MultiValue for a UID list match."""
    value = identifier.get(keyword)
    if not value:
        return []
    return [str(uid) for uid in (value if isinstance(value, MultiValue) else [value])]


class FileToSend(Dataset):
    """Stands for a stored file whose bytes must be sent unchanged."""

    def __init__(self, path: Path, sop_class_uid: str, sop_instance_uid: str) -> None:
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_instance_uid
        self.source_path = path


class CannotSend(Dataset):
    """Stands for an instance the node cannot produce; counted as a failed sub-operation."""

    def __init__(self, sop_instance_uid: str) -> None:
        super().__init__()
        self.SOPInstanceUID = sop_instance_uid


class Outbound:
    """Produces the data set for each instance of a retrieve over one store association."""

    def __init__(self, context: NodeContext, assoc: Association) -> None:
        self._context = context
        self._assoc = assoc
        self._send_c_store = assoc.send_c_store

    def install(self) -> Outbound:
        self._assoc.send_c_store = self._send
        return self

    def restore(self) -> None:
        self._assoc.send_c_store = self._send_c_store

    def dataset(self, sop_uid: str) -> Dataset:
        """The file as stored if the peer accepted its syntax, else converted; CannotSend on error."""
        with self._context.sessions() as session:
            instance = find_instance(session, sop_uid)
            if instance is None:
                log.warning("retrieve: %s vanished before it was sent", sop_uid)
                return CannotSend(sop_uid)
            try:
                stored = load_stored_file(instance, self._context.codecs)
            except (RetrieveError, OSError, ImagingError) as exc:
                log.error("retrieve: cannot produce %s: %s", sop_uid, exc)
                return CannotSend(sop_uid)
            sop_class = instance.sop_class_uid
        # The syntax the instance came in first: a C-MOVE proposes it, and compressed input
        # then goes back compressed as it came, not decoded.
        accepted = sorted(self._accepted_syntaxes(sop_class), key=lambda ts: ts != stored.received_syntax)
        if stored.as_received and stored.transfer_syntax in accepted:
            return FileToSend(self._to_temp_file(stored), sop_class, sop_uid)
        try:
            return converted_dataset(stored, accepted)
        except (RetrieveError, ImagingError) as exc:
            log.error("retrieve: %s not sent to %s: %s", sop_uid, self._assoc.remote["ae_title"], exc)
            return CannotSend(sop_uid)

    def _accepted_syntaxes(self, sop_class: str) -> list[UID]:
        # as_scu: this node's side sends C-STORE on the context (as C-GET SCP or C-MOVE SCU).
        return [
            UID(cx.transfer_syntax[0])
            for cx in self._assoc.accepted_contexts
            if cx.abstract_syntax == sop_class and cx.as_scu
        ]

    def _to_temp_file(self, stored: StoredFile) -> Path:
        outgoing = self._context.config.storage.data_dir / "outgoing"
        outgoing.mkdir(exist_ok=True)
        fd, name = tempfile.mkstemp(dir=outgoing, suffix=".dcm")
        with os.fdopen(fd, "wb") as handle:
            handle.write(stored.data)
        return Path(name)

    def _send(self, dataset: Dataset | Path | str, *args: Any, **kwargs: Any) -> Dataset:
        if isinstance(dataset, CannotSend):
            return _status_dataset(status.CANNOT_UNDERSTAND)
        if not isinstance(dataset, FileToSend):
            return self._send_c_store(dataset, *args, **kwargs)
        try:
            return self._send_c_store(dataset.source_path, *args, **kwargs)
        finally:
            dataset.source_path.unlink(missing_ok=True)


def _status_dataset(code: int) -> Dataset:
    result = Dataset()
    result.Status = code
    return result


def sub_operations(event: Event, outbound: Outbound, matches: list[Match]) -> Iterator[tuple[int, Dataset]]:
    """(Pending, data set) per instance until done or the requester sends C-CANCEL."""
    for match in matches:
        if event.is_cancelled:
            log.info("retrieve cancelled by %s", event.assoc.requestor.ae_title)
            yield status.CANCEL, None
            return
        yield status.PENDING, outbound.dataset(match.sop_instance_uid)

"""C-GET: retrieve at PATIENT / STUDY / SERIES / IMAGE level over the requester's association.

pynetdicom sends yielded data sets by re-encoding them, which is not byte-exact (it drops
group lengths, for one). While this handler runs, the association's send_c_store is wrapped
so that a `FileToSend` goes out as the file's raw bytes (pynetdicom's chunked send); anything
else passes through unchanged.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pynetdicom.events import Event

from scp_node.access import is_allowed
from scp_node.context import NodeContext
from scp_node.handlers import status
from scp_node.index.repository import find_instance, instances_for_retrieve
from scp_node.retrieve import RetrieveError, StoredFile, converted_dataset, load_stored_file

log = logging.getLogger(__name__)

LEVEL_KEYS = {
    "PATIENT": ("PatientID",),
    "STUDY": ("StudyInstanceUID",),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}


class FileToSend(Dataset):
    """Stands for a stored file whose bytes must be sent unchanged."""

    def __init__(self, path: Path, sop_class_uid: str, sop_instance_uid: str) -> None:
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_instance_uid
        self.source_path = path


def handle_get(event: Event, context: NodeContext) -> Iterator[Any]:
    requestor = event.assoc.requestor
    if not is_allowed(context, requestor.ae_title, "get"):
        log.warning("C-GET refused for %s at %s", requestor.ae_title, requestor.address)
        yield status.NOT_AUTHORIZED, None
        return
    try:
        uids = _matching_instances(context, event.identifier)
    except ValueError as exc:
        log.warning("C-GET from %s: bad identifier: %s", requestor.ae_title, exc)
        yield status.IDENTIFIER_DOES_NOT_MATCH, None
        return
    yield len(uids)
    send_original = event.assoc.send_c_store
    event.assoc.send_c_store = _raw_file_sender(send_original)
    try:
        for sop_uid in uids:
            if event.is_cancelled:
                yield status.CANCEL, None
                return
            yield status.PENDING, _outgoing(context, event, sop_uid)
    finally:
        event.assoc.send_c_store = send_original


def _matching_instances(context: NodeContext, identifier: Dataset) -> list[str]:
    level = str(identifier.get("QueryRetrieveLevel", "")).upper()
    if level not in LEVEL_KEYS:
        raise ValueError(f"unknown QueryRetrieveLevel {level!r}")
    missing = [key for key in LEVEL_KEYS[level][-1:] if not identifier.get(key)]
    if missing:
        raise ValueError(f"{level} level needs {missing[0]}")
    with context.sessions() as session:
        instances = instances_for_retrieve(
            session,
            patient_id=str(identifier.get("PatientID", "") or ""),
            study_uids=_uids(identifier, "StudyInstanceUID"),
            series_uids=_uids(identifier, "SeriesInstanceUID") if level in ("SERIES", "IMAGE") else [],
            sop_uids=_uids(identifier, "SOPInstanceUID") if level == "IMAGE" else [],
        )
        return [instance.sop_instance_uid for instance in instances]


def _uids(identifier: Dataset, keyword: str) -> list[str]:
    """A UID key as a list: pydicom gives one str, or a MultiValue for a UID list match."""
    value = identifier.get(keyword)
    if not value:
        return []
    return [str(uid) for uid in (value if isinstance(value, MultiValue) else [value])]


def _outgoing(context: NodeContext, event: Event, sop_uid: str) -> Dataset | None:
    """The file to send, or None (pynetdicom counts a failed sub-operation) with a log line."""
    with context.sessions() as session:
        instance = find_instance(session, sop_uid)
        if instance is None:
            log.warning("C-GET: %s vanished before it was sent", sop_uid)
            return None
        try:
            stored = load_stored_file(instance)
        except (RetrieveError, OSError, ValueError) as exc:
            log.error("C-GET: cannot produce %s: %s", sop_uid, exc)
            return None
        sop_class = instance.sop_class_uid
    accepted = _accepted_syntaxes(event, sop_class)
    if stored.transfer_syntax in accepted:
        return FileToSend(_to_temp_file(context, stored), sop_class, sop_uid)
    try:
        return converted_dataset(stored, accepted)
    except (RetrieveError, RuntimeError, ValueError) as exc:
        log.error("C-GET: %s not sent: %s", sop_uid, exc)
        return None


def _accepted_syntaxes(event: Event, sop_class: str) -> list[UID]:
    return [
        UID(cx.transfer_syntax[0])
        for cx in event.assoc.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.as_scu
    ]


def _to_temp_file(context: NodeContext, stored: StoredFile) -> Path:
    outgoing = context.config.storage.data_dir / "outgoing"
    outgoing.mkdir(exist_ok=True)
    fd, name = tempfile.mkstemp(dir=outgoing, suffix=".dcm")
    with os.fdopen(fd, "wb") as handle:
        handle.write(stored.data)
    return Path(name)


def _raw_file_sender(send_c_store: Callable[..., Dataset]) -> Callable[..., Dataset]:
    def send(dataset: Dataset, *args: Any, **kwargs: Any) -> Dataset:
        if not isinstance(dataset, FileToSend):
            return send_c_store(dataset, *args, **kwargs)
        try:
            return send_c_store(dataset.source_path, *args, **kwargs)
        finally:
            dataset.source_path.unlink(missing_ok=True)

    return send

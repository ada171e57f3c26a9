"""What C-GET and C-MOVE share: which instances a retrieve identifier names, and sending them as
C-STORE sub-operations over a store association (the requester's for C-GET, a new one to the
destination for C-MOVE).

pynetdicom sends a yielded data set by re-encoding it, which is not byte-exact (it drops group
lengths, for one), and it silently skips a yielded None, which would leave the sub-operation
counts and the Failed SOP Instance UID List wrong. So every instance is yielded as a file:
while a retrieve runs, the store association's send_c_store is wrapped, a `FileToSend` goes out
as the file's raw bytes (pynetdicom's chunked send; the file as stored, or converted to a
syntax the peer accepted), and a `CannotSend` is answered locally as a failed sub-operation.

The bytes of a `FileToSend` live in memory (a memfd that pynetdicom reads by its /proc path),
never in a temporary file on disk. Instances are prepared (rebuilt from their blobs, digest-
checked, converted) a few ahead of the one on the wire, on a small thread pool: decoding runs
while the network sends, and at most PREPARED_AHEAD instances wait in memory.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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
from scp_node.retrieve import RetrieveError, file_to_send

log = logging.getLogger(__name__)

PREPARING_THREADS = 2  # decodes release the GIL: both cores of a small machine help
PREPARED_AHEAD = 4  # instances prepared beyond the one being sent (bounds memory)

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
    """Stands for a stored file whose bytes must be sent unchanged: held in an anonymous
    in-memory file, which pynetdicom's chunked send opens by its /proc/self/fd path."""

    def __init__(self, data: bytes, sop_class_uid: str, sop_instance_uid: str) -> None:
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_instance_uid
        descriptor = os.memfd_create(f"scp-node-{sop_instance_uid}", os.MFD_CLOEXEC)
        # Closed when sent, or when pynetdicom drops it unsent (an aborted association).
        self._closer = weakref.finalize(self, os.close, descriptor)
        self.source_path = Path(f"/proc/self/fd/{descriptor}")
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]

    def release(self) -> None:
        self._closer()


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

    def dataset(self, sop_uid: str) -> FileToSend | CannotSend:
        """The file as stored if the peer accepted its syntax, the blob's bitstreams if they are
        the syntax it accepted, else converted; CannotSend on error."""
        try:
            prepared = self._prepare(sop_uid)
        except (RetrieveError, OSError, ImagingError) as exc:
            log.error("retrieve: %s not sent to %s: %s", sop_uid, self._assoc.remote["ae_title"], exc)
            return CannotSend(sop_uid)
        if prepared is None:
            log.warning("retrieve: %s vanished before it was sent", sop_uid)
            return CannotSend(sop_uid)
        data, sop_class = prepared
        return FileToSend(data, sop_class, sop_uid)

    def _prepare(self, sop_uid: str) -> tuple[bytes, str] | None:
        """The file to send and its class; None when the instance is gone."""
        try:
            return self._prepare_once(sop_uid)
        except FileNotFoundError:
            # The row named a spool file that its compress job (or a newer store) replaced
            # between the read and the open: the row now names the file that holds it.
            return self._prepare_once(sop_uid)

    def _prepare_once(self, sop_uid: str) -> tuple[bytes, str] | None:
        with self._context.sessions() as session:
            instance = find_instance(session, sop_uid)
            if instance is None:
                return None
            # The syntax the instance came in first: a C-MOVE proposes it, and compressed input
            # then goes back compressed as it came, not decoded.
            received = instance.transfer_syntax_uid
            accepted = sorted(self._accepted_syntaxes(instance.sop_class_uid), key=lambda ts: ts != received)
            context = self._context
            data, _ = file_to_send(
                instance, accepted, context.codecs, context.instance_file, context.recent_files
            )
            return data, instance.sop_class_uid

    def _accepted_syntaxes(self, sop_class: str) -> list[UID]:
        # as_scu: this node's side sends C-STORE on the context (as C-GET SCP or C-MOVE SCU).
        return [
            UID(cx.transfer_syntax[0])
            for cx in self._assoc.accepted_contexts
            if cx.abstract_syntax == sop_class and cx.as_scu
        ]

    def _send(self, dataset: FileToSend | CannotSend, *args: Any, **kwargs: Any) -> Dataset:
        if isinstance(dataset, CannotSend):
            return _status_dataset(status.CANNOT_UNDERSTAND)
        try:
            return self._send_c_store(dataset.source_path, *args, **kwargs)
        finally:
            dataset.release()


def _status_dataset(code: int) -> Dataset:
    result = Dataset()
    result.Status = code
    return result


def sub_operations(event: Event, outbound: Outbound, matches: list[Match]) -> Iterator[tuple[int, Dataset]]:
    """(Pending, data set) per instance until done or the requester sends C-CANCEL; the next
    instances are prepared while this one is sent."""
    ahead: deque[Future[FileToSend | CannotSend]] = deque()
    upcoming = iter(matches)
    with ThreadPoolExecutor(PREPARING_THREADS, thread_name_prefix="retrieve") as pool:
        try:
            while True:
                while len(ahead) <= PREPARED_AHEAD and (match := next(upcoming, None)) is not None:
                    ahead.append(pool.submit(outbound.dataset, match.sop_instance_uid))
                if not ahead:
                    return
                if event.is_cancelled:
                    log.info("retrieve cancelled by %s", event.assoc.requestor.ae_title)
                    yield status.CANCEL, None
                    return
                yield status.PENDING, ahead.popleft().result()
        finally:
            _discard(ahead)


def _discard(prepared: deque[Future[FileToSend | CannotSend]]) -> None:
    """Free what was prepared and will not be sent (cancelled, or the association ended)."""
    for future in prepared:
        if future.cancel():
            continue
        dataset = future.result()
        if isinstance(dataset, FileToSend):
            dataset.release()

"""Storage Commitment Push Model SCP (PS3.4 J.3): a modality asks whether the node holds a
list of instances, so that it may delete its own copies.

N-ACTION is answered at once; the result follows as an N-EVENT-REPORT once the response has
gone out (pynetdicom reports every sent message, EVT_DIMSE_SENT). It goes on the requester's
association while that is still open a moment later, as most SCUs expect, or on a new
association to the peer's
host and port (the only way every SCU must accept; a peer's `commitment_report` chooses).
An instance is committed when its row is indexed under the same SOP class and the file that
holds it exists: what C-STORE acknowledged is durable by then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from weakref import WeakKeyDictionary

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import N_ACTION_RSP
from pynetdicom.events import Event
from pynetdicom.sop_class import StorageCommitmentPushModel

from scp_node.context import NodeContext
from scp_node.index.models import Instance
from scp_node.index.repository import find_instance, find_peer
from scp_node.index.states import HELD
from scp_node.negotiation import MESSAGE_SYNTAXES
from scp_node.tls import client_context
from scp_node.transport import prepare_connection

log = logging.getLogger(__name__)

# The well-known SOP Instance of the Push Model (PS3.4 J.3.5).
PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_COMMITMENT = 1  # Action Type ID
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type IDs
# Failure Reasons (PS3.4 J.3.3.1.1)
PROCESSING_FAILURE, NO_SUCH_INSTANCE, CLASS_INSTANCE_CONFLICT = 0x0110, 0x0112, 0x0119
NO_SUCH_ACTION, MISSING_ATTRIBUTE = 0x0123, 0x0120  # N-ACTION statuses
# Some SCUs (Orthanc) ask for the report on their association and release it as soon as
# N-ACTION is answered; a report that reaches them before their release answer makes them abort
# the transfer. Those release within milliseconds, one that wants the report waits for it far
# longer than this: the report goes on the association only if it is still open after it.
RELEASE_GRACE_SECONDS = 1.0


@dataclass(frozen=True)
class CommitmentRequest:
    calling_ae: str
    transaction_uid: str
    references: list[tuple[str, str]]  # (SOP Class UID, SOP Instance UID)


class CommitmentReporter:
    """Holds each accepted request until its N-ACTION response is sent, then reports."""

    def __init__(self, context: NodeContext) -> None:
        self._context = context
        self._waiting: WeakKeyDictionary[Association, list[CommitmentRequest]] = WeakKeyDictionary()
        self._lock = threading.Lock()

    def handle_n_action(self, event: Event) -> tuple[int, Dataset | None]:
        if event.action_type != REQUEST_COMMITMENT:
            return NO_SUCH_ACTION, None
        info = event.action_information
        if "TransactionUID" not in info or "ReferencedSOPSequence" not in info:
            log.warning(
                "storage commitment from %s without transaction or references", event.assoc.requestor.ae_title
            )
            return MISSING_ATTRIBUTE, None
        request = CommitmentRequest(
            calling_ae=event.assoc.requestor.ae_title.strip(),
            transaction_uid=str(info.TransactionUID),
            references=[
                (str(item.get("ReferencedSOPClassUID", "")), str(item.get("ReferencedSOPInstanceUID", "")))
                for item in info.ReferencedSOPSequence
            ],
        )
        with self._lock:
            self._waiting.setdefault(event.assoc, []).append(request)
        log.info(
            "storage commitment %s from %s: %d instances",
            request.transaction_uid,
            request.calling_ae,
            len(request.references),
        )
        return 0x0000, None

    def on_dimse_sent(self, event: Event) -> None:
        if not isinstance(event.message, N_ACTION_RSP):
            return
        with self._lock:
            requests = self._waiting.pop(event.assoc, [])
        for request in requests:
            threading.Thread(
                target=self._report, args=(event.assoc, request), name="commitment-report", daemon=True
            ).start()

    def _report(self, assoc: Association, request: CommitmentRequest) -> None:
        try:
            report, event_type = self._result(request)
            if self._same_association_wanted(request) and _still_open_after(assoc, RELEASE_GRACE_SECONDS):
                with _reactor_paused(assoc):
                    status, _reply = assoc.send_n_event_report(
                        report, event_type, StorageCommitmentPushModel, PUSH_MODEL_INSTANCE
                    )
                if status.get("Status") == 0x0000:
                    log.info(
                        "storage commitment %s reported to %s", request.transaction_uid, request.calling_ae
                    )
                    return
                log.info(
                    "storage commitment %s: same association refused the report", request.transaction_uid
                )
            self._report_on_new_association(request, report, event_type)
        except Exception:  # a report that cannot be built or sent must not kill the thread silently
            log.exception(
                "storage commitment %s: report to %s failed", request.transaction_uid, request.calling_ae
            )

    def _same_association_wanted(self, request: CommitmentRequest) -> bool:
        with self._context.sessions() as session:
            peer = find_peer(session, request.calling_ae)
            return peer is None or peer.commitment_report == "same_association"

    def _result(self, request: CommitmentRequest) -> tuple[Dataset, int]:
        report = Dataset()
        report.TransactionUID = request.transaction_uid
        report.RetrieveAETitle = self._context.config.network.ae_title
        committed, failed = [], []
        with self._context.sessions() as session:
            for sop_class, sop_instance in request.references:
                reason = _failure_reason(find_instance(session, sop_instance), sop_class)
                item = Dataset()
                item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
                if reason is None:
                    committed.append(item)
                else:
                    item.FailureReason = reason
                    failed.append(item)
        if committed:
            report.ReferencedSOPSequence = committed
        if failed:
            report.FailedSOPSequence = failed
        log.info(
            "storage commitment %s: %d committed, %d failed",
            request.transaction_uid,
            len(committed),
            len(failed),
        )
        return report, SOME_FAILED if failed else ALL_COMMITTED

    def _report_on_new_association(
        self, request: CommitmentRequest, report: Dataset, event_type: int
    ) -> None:
        with self._context.sessions() as session:
            peer = find_peer(session, request.calling_ae)
            if peer is None or not peer.host or not peer.port:
                log.warning(
                    "storage commitment %s: %s has closed its association and has no host and port "
                    "to report to (scp-node ae add %s --host --port)",
                    request.transaction_uid,
                    request.calling_ae,
                    request.calling_ae,
                )
                return
            host, port, tls = peer.host, peer.port, peer.tls
        ae = AE(ae_title=self._context.config.network.ae_title)
        ae.add_requested_context(StorageCommitmentPushModel, MESSAGE_SYNTAXES)
        # The SCP opens this association, so it asks for the SCP role (PS3.4 J.3.3.1.2 note).
        role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        tls_args = (client_context(self._context.config.network.tls), None) if tls else None
        assoc = ae.associate(
            host,
            port,
            ae_title=request.calling_ae,
            ext_neg=[role],
            tls_args=tls_args,
            evt_handlers=[(evt.EVT_CONN_OPEN, prepare_connection)],
        )
        if not assoc.is_established:
            log.warning(
                "storage commitment %s: %s at %s:%d refused the association",
                request.transaction_uid,
                request.calling_ae,
                host,
                port,
            )
            return
        try:
            status, _reply = assoc.send_n_event_report(
                report, event_type, StorageCommitmentPushModel, PUSH_MODEL_INSTANCE
            )
        finally:
            assoc.release()
        if status.get("Status") == 0x0000:
            log.info(
                "storage commitment %s reported to %s at %s:%d",
                request.transaction_uid,
                request.calling_ae,
                host,
                port,
            )
        else:
            log.warning(
                "storage commitment %s: %s answered the report with %s",
                request.transaction_uid,
                request.calling_ae,
                status.get("Status"),
            )


def _still_open_after(assoc: Association, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while assoc.is_established:
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.01)
    return False


@contextmanager
def _reactor_paused(assoc: Association) -> Iterator[None]:
    """An acceptor's reactor thread takes every incoming DIMSE message as a request to serve;
    sending from another thread, the response must reach this thread instead. pynetdicom's
    own Association.release() pauses the reactor the same way."""
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused and assoc.is_established:
        time.sleep(0.0001)
    try:
        yield
    finally:
        assoc._reactor_checkpoint.set()


def _failure_reason(instance: Instance | None, sop_class: str) -> int | None:
    if instance is None:
        return NO_SUCH_INSTANCE
    if instance.sop_class_uid != sop_class:
        return CLASS_INSTANCE_CONFLICT
    path = instance.blob_path or instance.spool_path
    if instance.state not in HELD or path is None or not Path(path).exists():
        return PROCESSING_FAILURE
    return None

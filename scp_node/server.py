"""Assemble the pynetdicom AE: contexts, handlers, and the start-up recovery steps."""

from __future__ import annotations

import functools
import logging
import socket
import socketserver
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from pydicom.uid import (
    UID,
    UID_dictionary,
)
from pynetdicom import AE, AllStoragePresentationContexts, _config, dimse_messages, evt
from pynetdicom.events import Event
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import StorageCommitmentPushModel, Verification, register_uid, uid_to_service_class
from pynetdicom.transport import ThreadedAssociationServer

from scp_node.access import OPERATION_OF_CONTEXT, AccessControl, gated_request_handler
from scp_node.context import NodeContext
from scp_node.errors import ServiceError
from scp_node.handlers.commitment import CommitmentReporter
from scp_node.handlers.find import RelationalQueries, handle_find
from scp_node.handlers.get import handle_get
from scp_node.handlers.move import handle_move
from scp_node.handlers.store import handle_store
from scp_node.index.repository import instances_to_resume, save_peer
from scp_node.negotiation import MESSAGE_SYNTAXES, RECEIVED_SYNTAXES
from scp_node.storage.lock import DataDirInUse, DataDirLock
from scp_node.tls import server_context
from scp_node.transport import prepare_connection
from scp_node.uid_checks import remember_uid_checks
from workers.queue import JobQueue
from workers.retention import purge_expired_originals

log = logging.getLogger(__name__)


class StartRefused(ServiceError):
    """The node cannot start as configured; the message names the setting (one line for the admin)."""


STORAGE_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1."
# pynetdicom's storage list plus the retired storage SOP classes old modalities still send.
STORAGE_SOP_CLASSES = [
    *(cx.abstract_syntax for cx in AllStoragePresentationContexts),
    *(
        uid
        for uid, (_name, kind, _info, retired, _keyword) in UID_dictionary.items()
        if kind == "SOP Class" and retired == "Retired" and uid.startswith(STORAGE_CLASS_PREFIX)
    ),
]
# Patient Root and Study Root C-FIND, C-GET and C-MOVE.
QUERY_RETRIEVE_MODELS = [uid for uid, op in OPERATION_OF_CONTEXT.items() if op in ("find", "get", "move")]


def register_storage_classes() -> None:
    """pynetdicom aborts the association on a C-STORE whose SOP class has no service class of
    its own (retired ones such as the old Ultrasound Image Storage), after accepting its
    context: every class the node offers is made a storage class, as Orthanc and dcmqrscp
    treat them."""
    for uid in STORAGE_SOP_CLASSES:
        if uid_to_service_class(uid) is not StorageServiceClass:
            keyword = UID_dictionary[uid][4] or f"RetiredStorage_{uid.replace('.', '_')}"  # some lack one
            register_uid(uid, keyword, StorageServiceClass)


def receive_transfers_into(folder: Path) -> None:
    """pynetdicom names a chunked transfer's file with tempfile.NamedTemporaryFile and no
    folder. Only its call is pointed at incoming/ (which the node sweeps), rather than the
    process's tempfile.tempdir: no other temporary file may land where it would be swept."""
    dimse_messages.NamedTemporaryFile = functools.partial(tempfile.NamedTemporaryFile, dir=folder)


def build_ae(context: NodeContext) -> AE:
    network = context.config.network
    # Receive C-STORE data sets straight to files in the spool's incoming/ folder (same disk,
    # so accepting one is a rename), and send stored files without decoding them.
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.STORE_SEND_CHUNKED_DATASET = True
    remember_uid_checks()
    receive_transfers_into(context.spool.incoming)
    register_storage_classes()

    ae = AE(ae_title=network.ae_title)
    ae.maximum_associations = network.max_associations
    ae.maximum_pdu_size = network.max_pdu
    ae.acse_timeout = network.acse_timeout_s
    ae.dimse_timeout = network.dimse_timeout_s
    ae.network_timeout = network.network_timeout_s
    ae.add_supported_context(Verification, MESSAGE_SYNTAXES)
    ae.add_supported_context(StorageCommitmentPushModel, MESSAGE_SYNTAXES)
    for model in QUERY_RETRIEVE_MODELS:
        ae.add_supported_context(model, MESSAGE_SYNTAXES)
    # scu_role/scp_role: accept C-GET requesters that propose to act as Storage SCP.
    for sop_class in STORAGE_SOP_CLASSES:
        ae.add_supported_context(sop_class, RECEIVED_SYNTAXES, scu_role=True, scp_role=True)
    return ae


def recover(context: NodeContext, queue: JobQueue) -> int:
    """Drop half-received files and re-enqueue acknowledged instances not yet compressed."""
    context.spool.clean_incoming()
    with context.sessions() as session:
        pending = instances_to_resume(session)
    for uid in pending:
        queue.enqueue_compress(uid)
    if pending:
        log.info("re-enqueued %d instances left uncompressed", len(pending))
    return len(pending)


def seed_peers(context: NodeContext) -> None:
    """Peers named in config.yaml are written to the peer table at start: config wins for the AE
    titles it names (an edited config.yaml takes effect on restart); `scp-node ae` manages the rest."""
    with context.sessions() as session:
        for entry in context.config.access.peers:
            save_peer(session, entry)
        session.commit()


class SharedContexts(list):
    """The node's presentation contexts, shared by every association instead of deep-copied
    for each (pynetdicom copies them per association: 196 contexts with 8,484 transfer
    syntaxes took 90 ms of CPU per association). Negotiation only reads them: the access
    filter and the C-GET fitting build new lists, pynetdicom builds new result contexts."""

    def __deepcopy__(self, memo: dict) -> SharedContexts:
        return self


class NodeServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, plus housekeeping between polls of the listen socket:
    sweeping incoming/ and dropping originals that lossy copies replaced, once due.

    The process that holds the data-dir lock binds the socket and does the housekeeping; the
    other serve processes (`network.serve_processes`) accept on the socket it handed them."""

    def __init__(
        self,
        *args: Any,
        context: NodeContext,
        lock: DataDirLock | None,
        listening: socket.socket | None = None,
        **kwargs: Any,
    ) -> None:
        self._lock = lock  # first: a failed bind calls server_close() from super().__init__
        self._listening = listening
        super().__init__(*args, **kwargs)
        self.contexts = SharedContexts(self.contexts)
        self._context = context
        self._spool = context.spool
        network = context.config.network
        # A live transfer writes at least every network timeout, or pynetdicom aborts it.
        self._stale_after_s = 2 * network.network_timeout_s
        self._sweep_every_s = min(network.network_timeout_s, 30.0)
        self._next_sweep = time.monotonic() + self._sweep_every_s
        self._purge_every_s = context.config.compression.lossy.purge_interval_s
        self._next_purge = time.monotonic()

    def server_bind(self) -> None:
        if self._listening is None:
            super().server_bind()
            return
        self.socket.close()
        self.socket = self._listening
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self._listening is None:  # a handed-over socket is listening already
            super().server_activate()

    def service_actions(self) -> None:
        """Not pynetdicom's, which runs a full garbage collection every 60 polls or associations
        (about 50 ms holding the interpreter lock, stalling every transfer): Python's own
        collector reclaims finished associations."""
        if self._lock is None:
            return  # housekeeping is the lock holder's
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + self._sweep_every_s
            self._spool.clean_incoming(idle_for_s=self._stale_after_s)
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + self._purge_every_s
            try:
                purge_expired_originals(self._context)
            except Exception:  # the index may be briefly unreachable; the next round retries
                log.exception("dropping expired originals failed")

    def server_close(self) -> None:
        super().server_close()
        if self._lock is not None:
            self._lock.release()

    def stop_accepting(self) -> None:
        """Refuse new associations at once, but keep the data-dir lock: transfers in flight
        still write to incoming/, which another node's start-up would sweep."""
        socketserver.BaseServer.shutdown(self)
        self.socket.close()

    def drain(self, within_s: float, hurry: threading.Event) -> None:
        """Let the associations in flight finish, for at most `within_s` or until `hurry` is
        set; abort the rest (their unacknowledged stores are the sender's to repeat)."""
        active = self.ae.active_associations
        if not active:
            log.info("no association in flight")
            return
        log.info("no new associations; waiting up to %.0f s for %d in flight", within_s, len(active))
        deadline = time.monotonic() + within_s
        while active and time.monotonic() < deadline and not hurry.is_set():
            time.sleep(0.1)
            active = self.ae.active_associations
        if active:
            log.warning("aborting %d associations still open", len(active))
            for assoc in active:
                assoc.abort()
        else:
            log.info("in-flight associations finished")


# A-ASSOCIATE-AC presentation context results (PS3.8 9.3.3.2), in an admin's words.
_REJECTION_REASONS = {
    1: "refused by the node",
    2: "refused, no reason given",
    3: "SOP class not supported",
    4: "none of the proposed transfer syntaxes supported",
}


def log_rejected_contexts(event: Event, access: AccessControl) -> None:
    """pynetdicom says nothing about contexts it rejected; an admin needs to see why a
    modality's C-STORE never arrives (a private or unknown class, an unsupported transfer
    syntax). Services a peer may not use were logged at negotiation, by name; standard
    non-storage classes a client offers in passing (dcmtk proposes print and worklist) are DEBUG."""
    assoc = event.assoc
    for cx in assoc.rejected_contexts:
        operation = OPERATION_OF_CONTEXT.get(cx.abstract_syntax)
        if operation is not None and not access.allows(assoc, operation):
            continue
        uid = str(cx.abstract_syntax)
        offered_in_passing = uid in UID_dictionary and not uid.startswith(STORAGE_CLASS_PREFIX)
        log.log(
            logging.DEBUG if offered_in_passing and cx.result == 3 else logging.INFO,
            "association from %s at %s: %s (%s) %s",
            assoc.requestor.ae_title,
            assoc.requestor.address,
            UID(cx.abstract_syntax).name,
            cx.abstract_syntax,
            _REJECTION_REASONS.get(cx.result, f"rejected (result {cx.result})"),
        )


def start(context: NodeContext, queue: JobQueue, *, block: bool) -> NodeServer | None:
    """Serve an opened runtime (`workers.runtime.open_runtime`). Raises StartRefused before
    touching the data dir or the queue when another node serves the same data dir or the
    address is taken."""
    network = context.config.network
    lock = DataDirLock(context.config.storage.data_dir)
    try:
        lock.acquire(f"{network.ae_title} on {network.host}:{network.port}")
    except DataDirInUse as exc:
        raise StartRefused(f"{exc}; storage.data_dir must differ per node") from None
    try:
        server = _make_server(context, queue, lock)
    except BaseException:
        lock.release()
        raise
    log.info(
        "%s listening on %s:%d%s, data in %s",
        network.ae_title,
        network.host,
        network.port,
        " (TLS)" if network.tls.enabled else "",
        context.config.storage.data_dir,
    )
    if block:
        try:
            server.serve_forever()
        finally:
            server.server_close()
        return None
    threading.Thread(target=server.serve_forever, name="association-server", daemon=True).start()
    return server


def serve_handed_socket(context: NodeContext, queue: JobQueue, listening: socket.socket) -> NodeServer:
    """Accept associations on `listening`, the socket of the process that holds the data-dir
    lock (one of `network.serve_processes`); start-up recovery and housekeeping are its."""
    server = _make_server(context, queue, None, listening)
    threading.Thread(target=server.serve_forever, name="association-server", daemon=True).start()
    return server


def _make_server(
    context: NodeContext, queue: JobQueue, lock: DataDirLock | None, listening: socket.socket | None = None
) -> NodeServer:
    """Bind the address first: a node that cannot listen must not run recovery or jobs."""
    for name, reason in context.codecs.unavailable().items():
        log.info("codec %s unavailable: %s", name, reason)
    access = AccessControl(context)
    commitment = CommitmentReporter(context)
    relational = RelationalQueries(lenient=context.config.query.relational_without_negotiation)
    handlers = [
        (evt.EVT_C_STORE, handle_store, [context, queue, access]),
        (evt.EVT_C_FIND, handle_find, [context, relational]),
        (evt.EVT_SOP_EXTENDED, relational.on_sop_extended),
        (evt.EVT_C_GET, handle_get, [context]),
        (evt.EVT_C_MOVE, handle_move, [context]),
        (evt.EVT_N_ACTION, commitment.handle_n_action),
        (evt.EVT_DIMSE_SENT, commitment.on_dimse_sent),
        (evt.EVT_ACCEPTED, log_rejected_contexts, [access]),
        (evt.EVT_ESTABLISHED, context.activity.association_established),
        (evt.EVT_CONN_CLOSE, context.activity.connection_closed),
        (evt.EVT_DIMSE_RECV, context.activity.message_received),
        (evt.EVT_CONN_OPEN, prepare_connection),
    ]
    network = context.config.network
    ae = build_ae(context)
    try:
        server = ae.make_server(
            (network.host, network.port),
            ssl_context=server_context(network.tls) if network.tls.enabled else None,
            evt_handlers=handlers,
            server_class=NodeServer,
            request_handler=gated_request_handler(access),
            context=context,
            lock=lock,
            listening=listening,
        )
    except OSError as exc:
        raise StartRefused(
            f"cannot listen on {network.host}:{network.port} (network.host / network.port): {exc.strerror}"
        ) from None
    ae._servers.append(server)  # as ae.start_server does; server.shutdown() expects it there
    if lock is not None:
        seed_peers(context)
        recover(context, queue)
    return server

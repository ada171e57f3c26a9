"""Faults: a node killed mid-ingest, malformed data sets, odd peers, dropped connections.

Crash test: the node runs as its own process (`scp-node serve --config ...`). Four
associations send real images (distinct copies, one study per sender) while a fifth
transfer sits half-sent; after about 30 % of the instances were acknowledged the node is
SIGKILLed. Restarted on the same config, it must hold every acknowledged instance and
return it byte-identical, have dropped the half-received files, and finish compressing.

Bad input: over real associations (pynetdicom, and hand-built PDUs on a raw socket where a
well-behaved client cannot misbehave), each bad C-STORE gets a failure status and a log
line, nothing reaches the index, the spool or incoming/, and the node keeps serving.
Cases where the node falls short are marked xfail(strict=True) with the reason.
"""

from __future__ import annotations

import copy
import hashlib
import io
import logging
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ, P_DATA_TF
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage, Verification
from sqlalchemy import create_engine, select

from scp_node.imaging.dicom_layout import dataset_offset
from scp_node.index.models import Instance
from tests.support import (
    NodeProcess,
    RunningNode,
    getscu,
    make_config,
    pydicom_data_dir,
    pydicom_test_file,
    start_node,
)

UNKNOWN_SOP_CLASS = "1.2.826.0.1.3680043.2.1143.999.7"
FAILURE_STATUSES = {0xA900, 0xC000}  # data set does not match SOP class / cannot understand


@pytest.fixture(autouse=True)
def _send_files_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """`send_c_store(path)` then sends the file's data set bytes as they are, not re-encoded."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


# --- helpers ---------------------------------------------------------------------------------


def _wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def _data_set_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return data[dataset_offset(data) :]


def _copy_instance(
    source: Dataset, out: Path, *, study: str | None = None, series: str | None = None, **changes: object
) -> tuple[str, Path]:
    """Write a copy of `source` with a new SOP Instance UID (and the given study / series)."""
    ds = copy.deepcopy(source)
    uid = generate_uid()
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    if study:
        ds.StudyInstanceUID = study
    if series:
        ds.SeriesInstanceUID = series
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out)  # file meta as it is: for a CT request carrying another SOP class
    return uid, out


def _explicit_le_elements(data: bytes, offset: int) -> dict[int, tuple[int, int, int]]:
    """Top-level elements of an Explicit VR Little Endian data set: tag -> (offset, header, length)."""
    long_vrs = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
    elements = {}
    while offset + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, offset)
        if data[offset + 4 : offset + 6] in long_vrs:
            header, length = 12, struct.unpack_from("<I", data, offset + 8)[0]
        else:
            header, length = 8, struct.unpack_from("<H", data, offset + 6)[0]
        elements[group << 16 | element] = (offset, header, length)
        if length == 0xFFFFFFFF:
            break
        offset += header + length
    return elements


def _index_rows(database_url: str) -> dict[str, tuple[str, str]]:
    """SOP Instance UID -> (state, dataset_sha256), read straight from the index database."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(Instance.sop_instance_uid, Instance.state, Instance.dataset_sha256)
            ).all()
    finally:
        engine.dispose()
    return {uid: (str(state), sha) for uid, state, sha in rows}


def _files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()} if folder.exists() else set()


def _retrieve(port: int, out: Path, keys: dict[str, str]) -> dict[str, Path]:
    """getscu +B (bit-preserving): SOP Instance UID -> the received file."""
    result = getscu(port, out, keys)
    assert result.returncode == 0, result.stdout + result.stderr
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in out.iterdir()}


class RawAssociation:
    """An association driven with hand-built PDUs, to do what a well-behaved SCU never does."""

    def __init__(self, port: int, calling_ae: str, abstract_syntaxes: list[str]) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        request = A_ASSOCIATE()
        request.application_context_name = "1.2.840.10008.3.1.1.1"
        request.calling_ae_title = calling_ae
        request.called_ae_title = "SCP_NODE"
        contexts = []
        for index, abstract_syntax in enumerate(abstract_syntaxes):
            context = build_context(abstract_syntax, [ExplicitVRLittleEndian])
            context.context_id = 2 * index + 1
            contexts.append(context)
        request.presentation_context_definition_list = contexts
        max_length = MaximumLengthNotification()
        max_length.maximum_length_received = 16384
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = "1.2.826.0.1.3680043.2.1143.107"
        request.user_information = [max_length, implementation]
        pdu = A_ASSOCIATE_RQ()
        pdu.from_primitive(request)
        self.sock.sendall(pdu.encode())
        header = self._recv_exact(6)
        body = self._recv_exact(struct.unpack(">I", header[2:])[0])
        assert header[0] == 0x02, f"association not accepted: PDU type {header[0]:#04x}"
        accept = A_ASSOCIATE_AC()
        accept.decode(header + body)
        # context ID -> result (0 acceptance, 3 abstract syntax not supported, ...)
        self.results = {item.context_id: item.result_reason for item in accept.presentation_context}

    def _recv_exact(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("connection closed")
            data += chunk
        return data

    def send_c_store(
        self, context_id: int, sop_class: str, sop_uid: str, data_set: bytes, fraction: float = 1.0
    ) -> bool:
        """Send the C-STORE-RQ command and the first `fraction` of its P-DATA-TF PDUs; False if
        the node closed the connection before all of them were sent."""
        request = C_STORE()
        request.MessageID = 1
        request.AffectedSOPClassUID = sop_class
        request.AffectedSOPInstanceUID = sop_uid
        request.Priority = 0
        request.DataSet = io.BytesIO(data_set)
        message = C_STORE_RQ()
        message.primitive_to_message(request)
        primitives = list(message.encode_msg(context_id, 8192))
        for primitive in primitives[: max(2, int(len(primitives) * fraction))]:
            pdu = P_DATA_TF()
            pdu.from_primitive(primitive)
            try:
                self.sock.sendall(pdu.encode())
            except (BrokenPipeError, ConnectionResetError):
                return False
        return True

    def closed_by_peer(self, timeout: float) -> bool:
        """True once the node ended the association (A-ABORT PDU or closed connection)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data or data[0] == 0x07:
                    return True
        except TimeoutError:
            return False
        except OSError:
            return True

    def drop(self) -> None:
        """Vanish without A-ABORT: close the TCP connection with a reset."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


# --- crash test: SIGKILL during a multi-association ingest ----------------------------------

CRASH_SOURCES = [  # Explicit VR Little Endian, so getscu gets them back in their own syntax
    pydicom_test_file("CT_small.dcm"),  # 16-bit signed CT
    pydicom_test_file("MR_small.dcm"),  # 16-bit MR
    pydicom_test_file("emri_small.dcm"),  # 12-bit multi-frame enhanced MR
    pydicom_test_file("SC_rgb.dcm"),  # 8-bit RGB
    pydicom_data_dir() / "693_UNCR.dcm",  # 14-bit CT, 512 x 512
]
SENDERS = 4
PER_SENDER = 25
KILL_AFTER = int(SENDERS * PER_SENDER * 0.3)


@dataclass
class SenderLog:
    acknowledged: list[str] = field(default_factory=list)
    failed: list[tuple[str, int]] = field(default_factory=list)
    established: bool = False
    ended_by: str = ""  # why the sender stopped before its last instance
    completed: bool = False


def _sender(port: int, files: list[tuple[str, Path]], sop_classes: set[str], log: SenderLog) -> None:
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    for sop_class in sorted(sop_classes):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="SCP_NODE")
    if not assoc.is_established:
        return
    log.established = True
    try:
        for uid, path in files:
            try:
                response = assoc.send_c_store(path)
            except Exception as exc:  # the association died between two C-STOREs
                log.ended_by = f"{uid}: {exc!r}"
                return
            if "Status" not in response:  # no response: the node died with this one in flight
                log.ended_by = f"{uid}: no response"
                return
            if response.Status == 0x0000:
                log.acknowledged.append(uid)
            else:
                log.failed.append((uid, int(response.Status)))
        log.completed = True
    finally:
        if assoc.is_established:
            assoc.release()


@pytest.mark.parametrize("serve_processes", [1, 2])
def test_sigkill_during_ingest_loses_no_acknowledged_instance(
    tmp_path: Path, database_url: str, dcmtk: None, serve_processes: int
) -> None:
    """With network.serve_processes 2 the associations are spread over two processes; the
    kill -9 of `serve` must take its helper down with it, freeing the port for the restart."""
    config = make_config(
        tmp_path,
        database_url,
        **{"queue.in_process_workers": 1, "network.serve_processes": serve_processes},
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    incoming = config.storage.data_dir / "incoming"
    port = config.network.port

    sources = [dcmread(path) for path in CRASH_SOURCES]
    sop_classes = {str(ds.SOPClassUID) for ds in sources}
    sent: dict[str, Path] = {}  # every instance offered, acknowledged or not
    plans: list[list[tuple[str, Path]]] = []
    study_uids = []
    for sender in range(SENDERS):
        study = generate_uid()
        study_uids.append(study)
        series = [generate_uid() for _ in sources]
        plan = []
        for number in range(PER_SENDER):
            which = number % len(sources)
            uid, path = _copy_instance(
                sources[which],
                tmp_path / "send" / f"s{sender}" / f"{number:03d}.dcm",
                study=study,
                series=series[which],
                PatientID=f"FAULT{sender}",
                InstanceNumber=number + 1,
            )
            sent[uid] = path
            plan.append((uid, path))
        plans.append(plan)
    stalled_uid, stalled_path = _copy_instance(sources[-1], tmp_path / "send" / "stalled.dcm")

    nodes: list[NodeProcess] = []
    stalled: RawAssociation | None = None
    try:
        first = NodeProcess(config_file, port, tmp_path / "node-1.log")
        nodes.append(first)
        first.wait_until_serving()

        # A transfer that is half-way when the node dies: its file sits in incoming/.
        stalled = RawAssociation(port, "STALLED", [str(sources[-1].SOPClassUID)])
        stalled.send_c_store(
            1, str(sources[-1].SOPClassUID), stalled_uid, _data_set_bytes(stalled_path), fraction=0.5
        )
        _wait_for(lambda: any(incoming.iterdir()), 10, "the stalled transfer's file in incoming/")

        logs = [SenderLog() for _ in plans]
        threads = [
            threading.Thread(target=_sender, args=(port, plan, sop_classes, log), daemon=True)
            for plan, log in zip(plans, logs, strict=True)
        ]
        for thread in threads:
            thread.start()
        _wait_for(
            lambda: sum(len(log.acknowledged) for log in logs) >= KILL_AFTER,
            30,
            f"{KILL_AFTER} acknowledged instances",
            interval=0.005,
        )
        helpers = _helper_processes(first)
        assert len(helpers) == serve_processes - 1, first.log_tail()
        first.kill()
        _wait_for(lambda: not any(_alive(pid) for pid in helpers), 10, "the helpers dying with serve")
        for thread in threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in threads), "a sender hangs after the kill"
        stalled.drop()
        stalled = None

        assert all(log.established for log in logs), "a sender could not associate"
        acknowledged = {uid for log in logs for uid in log.acknowledged}
        assert not [failed for log in logs for failed in log.failed], "a good instance got a failure"
        assert KILL_AFTER <= len(acknowledged) < len(sent), "the kill did not land mid-ingest"
        # The kill landed mid-transfer: senders were cut off, and a transfer was half-received.
        cut_off = [log.ended_by for log in logs if not log.completed]
        assert cut_off, "no sender was cut off by the kill"
        print(f"killed after {len(acknowledged)} of {len(sent)} acknowledged; senders cut off: {cut_off}")
        assert any(incoming.iterdir()), "no half-received file was left to clean up"
        left_queued = [uid for uid, (state, _) in _index_rows(database_url).items() if state != "compressed"]
        assert left_queued, "nothing was left for the compress queue to resume"

        second = NodeProcess(config_file, port, tmp_path / "node-2.log")
        nodes.append(second)
        second.wait_until_serving()
        assert sorted(incoming.iterdir()) == [], "half-received files were not cleaned up"

        rows = _index_rows(database_url)
        missing = sorted(acknowledged - set(rows))
        assert not missing, f"{len(missing)} acknowledged instances lost: {missing[:3]}"
        assert set(rows) <= set(sent), "the index holds an instance nobody sent"
        assert stalled_uid not in rows
        expected_sha = {uid: hashlib.sha256(_data_set_bytes(sent[uid])).hexdigest() for uid in acknowledged}
        assert {uid: rows[uid][1] for uid in acknowledged} == expected_sha

        def check_retrieved(out: Path) -> None:
            received: dict[str, Path] = {}
            for study in study_uids:
                received |= _retrieve(
                    port, out / study, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}
                )
            assert set(received) == set(rows), "C-GET returned a different set than the index holds"
            for uid in sorted(acknowledged):
                assert _data_set_bytes(received[uid]) == _data_set_bytes(sent[uid]), uid

        check_retrieved(tmp_path / "get-after-restart")  # while compression resumes

        def all_compressed() -> bool:
            states = {state for state, _ in _index_rows(database_url).values()}
            assert "failed" not in states, second.log_tail()
            return states == {"compressed"}

        _wait_for(all_compressed, 60, "every instance compressed after the restart", interval=0.5)
        check_retrieved(tmp_path / "get-compressed")  # now from the blobs
        assert second.process.poll() is None, second.log_tail()
    finally:
        if stalled is not None:
            stalled.drop()
        for node_process in nodes:
            node_process.stop()


def _helper_processes(node: NodeProcess) -> list[int]:
    """The other serve processes, as `serve` logs them."""
    found = re.search(r"processes ([\d, ]+) accept associations too", node.log_tail())
    return [int(pid) for pid in found.group(1).split(", ")] if found else []


def _alive(pid: int) -> bool:
    try:
        # A killed child stays a zombie until reaped; it holds no socket then.
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


# --- bad input against the in-process node --------------------------------------------------


def _store_association(node: RunningNode, *extra_contexts: str):
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    for abstract_syntax in extra_contexts:
        ae.add_requested_context(abstract_syntax, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SCP_NODE")
    assert assoc.is_established
    return assoc


@pytest.fixture
def ct_source() -> Dataset:
    return dcmread(pydicom_test_file("CT_small.dcm"))


@pytest.fixture
def acknowledged(node: RunningNode, ct_source: Dataset, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An instance stored before the fault, which must survive it."""
    uid, path = _copy_instance(ct_source, tmp_path / "good-before.dcm")
    assoc = _store_association(node)
    assert assoc.send_c_store(path).Status == 0x0000
    assoc.release()
    yield uid, path


def _assert_node_keeps_serving(
    node: RunningNode, ct_source: Dataset, tmp_path: Path, acknowledged: tuple[str, Path]
) -> None:
    """C-ECHO and a good C-STORE succeed; the earlier instance comes back byte-identical."""
    uid, path = _copy_instance(ct_source, tmp_path / "good-after.dcm")
    assoc = _store_association(node)
    assert assoc.send_c_echo().Status == 0x0000
    assert assoc.send_c_store(path).Status == 0x0000
    assoc.release()
    with node.context.sessions() as session:
        stored = set(session.scalars(select(Instance.sop_instance_uid)))
    assert stored == {acknowledged[0], uid}
    earlier_uid, earlier_path = acknowledged
    received = _retrieve(
        node.port,
        tmp_path / "get",
        {
            "QueryRetrieveLevel": "IMAGE",
            "StudyInstanceUID": str(ct_source.StudyInstanceUID),
            "SeriesInstanceUID": str(ct_source.SeriesInstanceUID),
            "SOPInstanceUID": earlier_uid,
        },
    )
    assert set(received) == {earlier_uid}
    assert _data_set_bytes(received[earlier_uid]) == _data_set_bytes(earlier_path)


def _bad_file(case: str, source: Dataset, tmp_path: Path) -> tuple[str, Path]:
    """A CT_small copy (Explicit VR Little Endian) damaged the way `case` says."""
    if case == "unknown_sop_class_in_data_set":  # the file meta (so the request) still says CT
        return _copy_instance(source, tmp_path / "bad.dcm", SOPClassUID=UNKNOWN_SOP_CLASS)
    uid, path = _copy_instance(source, tmp_path / "bad.dcm")
    data = bytearray(path.read_bytes())
    start = dataset_offset(bytes(data))
    elements = _explicit_le_elements(bytes(data), start)
    pixel_offset, pixel_header, pixel_length = elements[0x7FE00010]
    before_pixels = max(tag for tag in elements if tag < 0x7FE00010)
    if case == "truncated_pixel_data":
        del data[pixel_offset + pixel_header + pixel_length // 2 :]
    elif case == "cut_in_last_element":  # the trailing padding (FFFC,FFFC) after the pixels is cut short
        offset, header, length = elements[max(elements)]
        assert max(elements) > 0x7FE00010 and length > 8
        del data[offset + header + length // 2 :]
    elif case == "cut_in_element_header":  # tag and VR of Pixel Data arrived, its length did not
        del data[pixel_offset + 6 :]
    elif case == "pixel_length_beyond_end":
        struct.pack_into("<I", data, pixel_offset + 8, len(data) - pixel_offset + 1000)
    elif case == "element_length_beyond_end":  # the element before Pixel Data claims 64 KiB
        offset, header, _ = elements[before_pixels]
        assert header == 8
        struct.pack_into("<H", data, offset + 6, 0xFFFE)
    elif case == "odd_length_element":  # Rows (US) with length 3: every later element is skewed
        struct.pack_into("<H", data, elements[0x00280010][0] + 6, 3)
    elif case == "undefined_length_native_pixels":  # 0xFFFFFFFF on native (not encapsulated) OW
        struct.pack_into("<I", data, pixel_offset + 8, 0xFFFFFFFF)
    elif case == "garbage_data_set":  # preamble, DICM and file meta are fine; the data set is noise
        data[start:] = random.Random(7).randbytes(20000)
    else:
        raise ValueError(case)
    path.write_bytes(bytes(data))
    return uid, path


BAD_DATA_SETS = [
    pytest.param("truncated_pixel_data", id="truncated-pixel-data"),
    pytest.param("cut_in_element_header", id="cut-in-element-header"),
    pytest.param("cut_in_last_element", id="cut-in-last-element"),
    pytest.param("pixel_length_beyond_end", id="pixel-length-beyond-end"),
    pytest.param("element_length_beyond_end", id="element-length-beyond-end"),
    pytest.param("odd_length_element", id="odd-length-element"),
    pytest.param("undefined_length_native_pixels", id="undefined-length-native-pixels"),
    pytest.param("garbage_data_set", id="garbage-data-set"),
    pytest.param("unknown_sop_class_in_data_set", id="unknown-sop-class-in-data-set"),
]


@pytest.mark.parametrize("case", BAD_DATA_SETS)
def test_bad_data_set_gets_failure_status_and_node_keeps_serving(
    case: str,
    node: RunningNode,
    ct_source: Dataset,
    acknowledged: tuple[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    dcmtk: None,
) -> None:
    uid, path = _bad_file(case, ct_source, tmp_path)
    spool_before = _files_under(node.config.storage.data_dir / "spool")
    assoc = _store_association(node)
    with caplog.at_level(logging.INFO):
        response = assoc.send_c_store(path)
    assert assoc.is_established  # a bad data set fails the C-STORE, not the association
    assoc.release()

    expected = {0xA900} if case == "unknown_sop_class_in_data_set" else FAILURE_STATUSES
    assert response.get("Status") in expected, f"{case}: status {response.get('Status', -1):#06x}"
    node_lines = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("scp_node") and r.levelno >= logging.WARNING
    ]
    assert any(uid in line for line in node_lines), node_lines
    with node.context.sessions() as session:
        assert session.scalar(select(Instance).where(Instance.sop_instance_uid == uid)) is None
    assert not _files_under(node.config.storage.data_dir / "spool") - spool_before
    assert not list(node.context.spool.incoming.iterdir())
    _assert_node_keeps_serving(node, ct_source, tmp_path, acknowledged)


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_unknown_abstract_syntax_is_rejected(
    node: RunningNode,
    ct_source: Dataset,
    acknowledged: tuple[str, Path],
    tmp_path: Path,
    dcmtk: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assoc = _store_association(node, UNKNOWN_SOP_CLASS)
    rejected = {cx.abstract_syntax: cx.result for cx in assoc.rejected_contexts}
    assert rejected == {UNKNOWN_SOP_CLASS: 0x03}  # abstract syntax not supported
    assert CTImageStorage in {cx.abstract_syntax for cx in assoc.accepted_contexts}
    assoc.release()

    # A peer that sends a C-STORE on the rejected context anyway loses its association.
    uid, path = _copy_instance(ct_source, tmp_path / "unknown.dcm", SOPClassUID=UNKNOWN_SOP_CLASS)
    raw = RawAssociation(node.port, "MODALITY", [CTImageStorage, UNKNOWN_SOP_CLASS])
    assert raw.results == {1: 0, 3: 3}
    try:
        with caplog.at_level(logging.WARNING):
            sent_all = raw.send_c_store(3, UNKNOWN_SOP_CLASS, uid, _data_set_bytes(path))
            closed = not sent_all or raw.closed_by_peer(timeout=10)
        assert closed, "the node kept an association that broke the protocol"
    finally:
        raw.drop()
    assert any(
        "MODALITY" in record.getMessage() and "presentation context 3" in record.getMessage()
        for record in caplog.records
    ), "no log line names the peer and the context it misused"
    assert not any(node.context.spool.incoming.iterdir())  # aborted at its first PDU
    with node.context.sessions() as session:
        assert session.scalar(select(Instance).where(Instance.sop_instance_uid == uid)) is None
    _assert_node_keeps_serving(node, ct_source, tmp_path, acknowledged)


def test_rejected_presentation_context_is_logged(node: RunningNode, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assoc = _store_association(node, UNKNOWN_SOP_CLASS)
        assoc.release()
    assert any(UNKNOWN_SOP_CLASS in record.getMessage() for record in caplog.records)


def _drop_mid_transfer(node: RunningNode, source: Dataset, tmp_path: Path) -> str:
    """Send half of a C-STORE data set on a raw socket, wait for the node to write it, vanish."""
    uid, path = _copy_instance(source, tmp_path / "dropped.dcm")
    raw = RawAssociation(node.port, "DROPPER", [str(source.SOPClassUID)])
    assert raw.results == {1: 0}
    incoming = node.context.spool.incoming
    try:
        raw.send_c_store(1, str(source.SOPClassUID), uid, _data_set_bytes(path), fraction=0.5)
        _wait_for(
            lambda: any(p.stat().st_size > 1000 for p in incoming.iterdir()),
            10,
            "the node writing the partial transfer to incoming/",
        )
    finally:
        raw.drop()
    return uid


@pytest.fixture
def big_source() -> Dataset:
    return dcmread(pydicom_data_dir() / "693_UNCR.dcm")  # 512 x 512 x 16 bit: many P-DATA PDUs


def test_peer_dropping_connection_mid_transfer_node_keeps_serving(
    node: RunningNode,
    big_source: Dataset,
    ct_source: Dataset,
    acknowledged: tuple[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    dcmtk: None,
) -> None:
    with caplog.at_level(logging.INFO):
        uid = _drop_mid_transfer(node, big_source, tmp_path)
        _wait_for(
            lambda: any("abort" in r.getMessage().lower() for r in caplog.records),
            5,
            "a log line about the aborted association",
        )
    with node.context.sessions() as session:
        assert session.scalar(select(Instance).where(Instance.sop_instance_uid == uid)) is None
    _assert_node_keeps_serving(node, ct_source, tmp_path, acknowledged)


@pytest.fixture
def quick_timeout_node(tmp_path: Path) -> Iterator[RunningNode]:
    """A node whose network timeout is 1 s, so that its sweep of incoming/ runs within seconds."""
    config = make_config(
        tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}", **{"network.network_timeout_s": 1}
    )
    running = start_node(config)
    yield running
    running.stop()


def test_aborted_transfer_leaves_nothing_in_incoming(
    quick_timeout_node: RunningNode, big_source: Dataset, tmp_path: Path
) -> None:
    node = quick_timeout_node
    _drop_mid_transfer(node, big_source, tmp_path)
    incoming = node.context.spool.incoming
    assert any(incoming.iterdir())  # pynetdicom left the partial file behind
    _wait_for(lambda: not any(incoming.iterdir()), 10, f"incoming/ to be empty: {list(incoming.iterdir())}")

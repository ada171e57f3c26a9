"""Storage Commitment Push Model: the report names what the node holds and what it does not,
on the requester's association or, once that is gone, on a new one to the peer."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, StorageCommitmentPushModel

from tests.support import RunningNode, free_port, make_config, pydicom_test_file, start_node

PUSH_MODEL_INSTANCE = "1.2.840.10008.1.20.1.1"


class Reports:
    """N-EVENT-REPORTs as an SCU receives them."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()

    def handle(self, event) -> tuple[int, None]:
        self.received.append((event.event_type, event.event_information))
        self.arrived.set()
        return 0x0000, None


def _action(transaction_uid: str, references: list[tuple[str, str]]) -> Dataset:
    info = Dataset()
    info.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_instance in references:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
        items.append(item)
    info.ReferencedSOPSequence = items
    return info


def _references(info: Dataset, keyword: str) -> dict[str, int | None]:
    return {str(i.ReferencedSOPInstanceUID): i.get("FailureReason") for i in info.get(keyword, [])}


def _wait_for_log(caplog: pytest.LogCaptureFixture, line: str) -> None:
    """Until the node has had its answer: an SCU releasing first would abort the report."""
    deadline = time.monotonic() + 15
    while line not in caplog.text:
        assert time.monotonic() < deadline, caplog.text[-2000:]
        time.sleep(0.05)


def test_report_on_the_same_association_names_committed_and_failed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scp_node")
    node = start_node(make_config(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}"))
    try:
        reports = Reports()
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(
            "127.0.0.1",
            node.port,
            ae_title="SCP_NODE",
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)],
        )
        assert assoc.is_established
        ct = dcmread(pydicom_test_file("CT_small.dcm"))
        assert assoc.send_c_store(ct).Status == 0x0000
        never_sent = generate_uid()
        transaction = generate_uid()
        references = [
            (CTImageStorage, ct.SOPInstanceUID),
            (CTImageStorage, never_sent),
            (MRImageStorage, ct.SOPInstanceUID),
        ]
        status, _ = assoc.send_n_action(
            _action(transaction, references), 1, StorageCommitmentPushModel, PUSH_MODEL_INSTANCE
        )
        assert status.Status == 0x0000
        assert reports.arrived.wait(15), "no N-EVENT-REPORT on the association"
        _wait_for_log(caplog, f"storage commitment {transaction} reported to MODALITY")
        assoc.release()
    finally:
        node.stop()
    ((event_type, info),) = reports.received
    assert event_type == 2  # some failed
    assert info.TransactionUID == transaction
    assert _references(info, "ReferencedSOPSequence") == {ct.SOPInstanceUID: None}
    failed = info.FailedSOPSequence
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in failed] == [
        (never_sent, 0x0112),  # no such object instance
        (ct.SOPInstanceUID, 0x0119),  # class / instance conflict
    ]


def _modality_listening(
    tmp_path: Path, reports: Reports, commitment_report: str
) -> tuple[object, RunningNode]:
    """A modality's own Storage Commitment SCP on a free port, and a node that knows it as a peer."""
    listener = AE(ae_title="MODALITY")
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    port = free_port()
    server = listener.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handle)]
    )
    peer = {
        "ae_title": "MODALITY",
        "host": "127.0.0.1",
        "port": port,
        "permissions": ["echo", "store"],
        "commitment_report": commitment_report,
    }
    database = f"sqlite:///{tmp_path / 'index.sqlite'}"
    return server, start_node(make_config(tmp_path, database, **{"access.peers": [peer]}))


def test_report_goes_to_the_peer_on_a_new_association_once_the_requester_left(tmp_path: Path) -> None:
    """A peer with commitment_report new_association (and any requester that released before
    the report) gets it on an association the node opens to its host and port."""
    reports = Reports()
    server, node = _modality_listening(tmp_path, reports, "new_association")
    try:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="SCP_NODE")
        ct = dcmread(pydicom_test_file("CT_small.dcm"))
        assert assoc.send_c_store(ct).Status == 0x0000
        transaction = generate_uid()
        status, _ = assoc.send_n_action(
            _action(transaction, [(CTImageStorage, ct.SOPInstanceUID)]),
            1,
            StorageCommitmentPushModel,
            PUSH_MODEL_INSTANCE,
        )
        assert status.Status == 0x0000
        assoc.release()
        assert reports.arrived.wait(15), "no N-EVENT-REPORT on a new association"
    finally:
        node.stop()
        server.shutdown()
    ((event_type, info),) = reports.received
    assert event_type == 1  # all committed
    assert info.TransactionUID == transaction
    assert _references(info, "ReferencedSOPSequence") == {ct.SOPInstanceUID: None}
    assert "FailedSOPSequence" not in info


def test_a_requester_that_releases_after_its_answer_gets_the_report_on_a_new_association(
    tmp_path: Path,
) -> None:
    """Orthanc asks for the report on the same association yet releases it as soon as N-ACTION
    is answered; a report that reaches it before its release answer makes it abort the whole
    store (HTTP 500 from its REST API). A requester slow to release (here 200 ms, Orthanc under
    load) must see a clean release and the report on a new association."""
    reports, stray = Reports(), Reports()
    server, node = _modality_listening(tmp_path, reports, "same_association")
    try:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(
            "127.0.0.1", node.port, ae_title="SCP_NODE", evt_handlers=[(evt.EVT_N_EVENT_REPORT, stray.handle)]
        )
        ct = dcmread(pydicom_test_file("CT_small.dcm"))
        assert assoc.send_c_store(ct).Status == 0x0000
        transaction = generate_uid()
        status, _ = assoc.send_n_action(
            _action(transaction, [(CTImageStorage, ct.SOPInstanceUID)]),
            1,
            StorageCommitmentPushModel,
            PUSH_MODEL_INSTANCE,
        )
        assert status.Status == 0x0000
        time.sleep(0.2)
        assoc.release()
        assert assoc.is_released and not assoc.is_aborted
        assert reports.arrived.wait(15), "no N-EVENT-REPORT on a new association"
    finally:
        node.stop()
        server.shutdown()
    assert stray.received == [], "the report raced the requester's release"
    ((event_type, info),) = reports.received
    assert event_type == 1 and info.TransactionUID == transaction

"""A message sent in one write is the same PDUs, byte for byte, that pynetdicom sends one by one,
for data sets given as bytes or as a file, at the PDU sizes peers ask for; a response reaches the
send_*() call that waits for it."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import split_dataset
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import Verification

from scp_node.transport import encoded_pdus
from tests.support import pydicom_test_file


def _request(data_set: io.BytesIO | None = None, path: Path | None = None) -> C_STORE_RQ:
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    primitive.AffectedSOPInstanceUID = "1.2.3.4.5"
    primitive.Priority = 2
    if data_set is not None:
        primitive.DataSet = data_set
    if path is not None:
        primitive._dataset_path = (path, split_dataset(path)[1])
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return message


def _pynetdicom_pdus(message: C_STORE_RQ | C_STORE_RSP, max_pdu: int) -> bytes:
    return b"".join(P_DATA_TF(fragment).encode() for fragment in message.encode_msg(3, max_pdu))


@pytest.mark.parametrize("max_pdu", [0, 4096, 16384, 262144])
def test_a_file_sent_whole_is_the_pdus_pynetdicom_sends(tmp_path: Path, max_pdu: int) -> None:
    path = tmp_path / "ct.dcm"
    dcmwrite(path, dcmread(pydicom_test_file("CT_small.dcm")), enforce_file_format=True)
    whole = b"".join(encoded_pdus(_request(path=path), 3, max_pdu))
    assert whole == _pynetdicom_pdus(_request(path=path), max_pdu)
    assert len(whole) > path.stat().st_size - split_dataset(path)[1]


@pytest.mark.parametrize("size", [0, 1, 4083, 4084, 4085, 100_000])
def test_data_sets_around_the_fragment_size_and_messages_without_one(size: int) -> None:
    ds = Dataset()
    if size:
        ds.add_new(0x00091001, "OB", b"\x5a" * size)  # a private element of `size` bytes
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, implicit_vr=True, little_endian=True)
    message = _request(io.BytesIO(buffer.getvalue()) if size else None)
    expected = _pynetdicom_pdus(_request(io.BytesIO(buffer.getvalue()) if size else None), 4096)
    assert b"".join(encoded_pdus(message, 3, 4096)) == expected
    for pdu_start in _pdu_offsets(expected):
        assert int.from_bytes(expected[pdu_start + 2 : pdu_start + 6], "big") <= 4096


def _pdu_offsets(stream: bytes) -> list[int]:
    offsets, at = [], 0
    while at < len(stream):
        assert stream[at] == 0x04  # P-DATA-TF
        offsets.append(at)
        at += 6 + int.from_bytes(stream[at + 2 : at + 6], "big")
    return offsets


class _ReactorWakingLate(threading.Event):
    """An association's reactor checkpoint whose reactor, once past it, is held until a sender
    has paused it and its response is on the queue: the reactor thread did not run while the
    sender's exchange went by (pynetdicom issue 875)."""

    def __init__(self) -> None:
        super().__init__()
        self.set()
        self.passed = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        was_set = self.is_set()
        result = super().wait(timeout)
        if was_set:
            self.passed.set()
            deadline = time.monotonic() + 5
            while self.is_set() and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(0.1)  # the response arrives
        return result


def test_a_response_goes_to_its_sender_when_the_reactor_polls_late() -> None:
    """pynetdicom's send_*() pauses its association's reactor, sends and waits for the response;
    a reactor already past its pause took the response off the queue as an "unexpected" message
    and the sender timed out (seen in CI: a C-ECHO after two C-STOREs came back empty). Loading
    scp_node.transport mends that for every association in the process."""
    scp = AE(ae_title="PEER")
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False)
    try:
        scu = AE(ae_title="SCU")
        scu.add_requested_context(Verification)
        scu.dimse_timeout = 2
        assoc = scu.associate("127.0.0.1", server.server_address[1], ae_title="PEER")
        assert assoc.is_established
        get_msg = assoc.dimse.get_msg

        def sender_scheduled_late(block: bool = False) -> tuple:
            if block:  # the sender's wait, not the reactor's poll
                time.sleep(0.3)
            return get_msg(block)

        assoc.dimse.get_msg = sender_scheduled_late
        checkpoint = _ReactorWakingLate()
        assoc._reactor_checkpoint = checkpoint
        try:
            for message_id in (1, 2):
                assert checkpoint.passed.wait(5)
                checkpoint.passed.clear()
                assert assoc.send_c_echo(msg_id=message_id).get("Status") == 0x0000
        finally:
            assoc.release()
    finally:
        server.shutdown()

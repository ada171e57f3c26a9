"""storescu -> node -> getscu with real images, before and after compression."""

from __future__ import annotations

import gc
import hashlib
import logging
import socket
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from scp_node.imaging.dicom_layout import dataset_offset
from scp_node.index.models import Instance, StorageState
from tests.support import RunningNode, getscu, pydicom_data_dir, pydicom_test_file, shared_corpus, storescu

# 8 to 16 bit, CT / MR / CR / US / RGB, multi-frame, odd sizes, compressed transfer syntaxes.
PYDICOM_FILES = [
    "CT_small.dcm",  # 16-bit signed CT
    "MR_small.dcm",  # 16-bit MR
    "MR_small_bigendian.dcm",  # Explicit VR Big Endian
    "MR_small_implicit.dcm",  # Implicit VR
    "MR_small_RLE.dcm",  # RLE lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "JPEG-LL.dcm",  # JPEG lossless process 14
    "SC_rgb.dcm",  # 8-bit RGB
    "SC_rgb_rle_2frame.dcm",  # multi-frame RLE colour
    "US1_J2KR.dcm",
    "emri_small.dcm",  # multi-frame MR
    "SC_rgb_small_odd.dcm",  # odd size, tiny
    "JPEG-lossy.dcm",  # already lossy: stored as received
    "rtplan.dcm",  # no pixel data
]
PYDICOM_DATA_FILES = ["693_UNCR.dcm", "RG1_UNCR.dcm", "MR2_UNCR.dcm", "US1_UNCR.dcm"]


def _real_images() -> list[Path]:
    """One file per SOP Instance UID (pydicom ships the same instance in several syntaxes)."""
    files = [pydicom_test_file(name) for name in PYDICOM_FILES]
    files += [pydicom_data_dir() / name for name in PYDICOM_DATA_FILES]
    unique = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in reversed(files)}
    return sorted(unique.values())


def _dataset_sha(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data[dataset_offset(data) :]).hexdigest()


def _retrieve_all(node: RunningNode, tmp: Path, study_uids: set[str]) -> dict[str, Path]:
    received: dict[str, Path] = {}
    for study_uid in sorted(study_uids):
        out = tmp / study_uid
        result = getscu(node.port, out, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid})
        assert result.returncode == 0, result.stdout + result.stderr
        for path in out.iterdir():
            received[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
    return received


def _drop_group_lengths(ds: Dataset) -> None:
    for element in list(ds):
        if element.tag.element == 0:
            del ds[element.tag]
        elif element.VR == "SQ":
            for item in element.value:
                _drop_group_lengths(item)


def _check_retrieved(node: RunningNode, originals: list[Path], received: dict[str, Path]) -> None:
    with node.context.sessions() as session:
        instances = {i.sop_instance_uid: i for i in session.query(Instance)}
    for original in originals:
        source = dcmread(original)
        instance = instances[str(source.SOPInstanceUID)]
        if instance.sop_instance_uid not in received:
            continue
        back = received[instance.sop_instance_uid]
        if dcmread(back, stop_before_pixels=True).file_meta.TransferSyntaxUID == instance.transfer_syntax_uid:
            assert _dataset_sha(back) == instance.dataset_sha256, original.name
        else:  # compressed input decoded, or converted for the requester: same elements and pixels
            copy = dcmread(back)
            # Group lengths (retired, PS3.5 7.2) describe one encoding and are not carried over.
            _drop_group_lengths(source)
            for element in source:
                # Decoding YBR_RCT/ICT JPEG 2000 yields RGB, and the element must say so.
                if element.tag not in (0x7FE00010, 0x00280004):
                    assert copy[element.tag].value == element.value, (original.name, element.tag)
            if "PixelData" in source:
                assert (copy.pixel_array == source.pixel_array).all(), original.name


@pytest.mark.dcmtk
def test_store_compress_retrieve_identical(node: RunningNode, tmp_path: Path, dcmtk: None) -> None:
    files = _real_images()
    result = storescu(node.port, files)
    assert result.returncode == 0, result.stdout + result.stderr
    study_uids = {str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}

    before = _retrieve_all(node, tmp_path / "before", study_uids)  # may be served from the spool
    node.wait_for_jobs()
    with node.context.sessions() as session:
        states = {i.sop_instance_uid: (i.state, i.codec) for i in session.query(Instance)}
    assert len(states) == len(files)
    assert {state for state, _ in states.values()} == {StorageState.COMPRESSED}
    assert {codec for _, codec in states.values()} >= {"jpegxl", "passthrough"}
    after = _retrieve_all(node, tmp_path / "after", study_uids)

    # JPEG-lossy.dcm (12-bit JPEG Extended) is neither accepted by getscu nor decodable here.
    unsendable = {str(dcmread(pydicom_test_file("JPEG-lossy.dcm"), stop_before_pixels=True).SOPInstanceUID)}
    assert set(after) == set(before) == set(states) - unsendable
    _check_retrieved(node, files, before)
    _check_retrieved(node, files, after)


@pytest.mark.dcmtk
def test_shared_corpus_round_trip(node: RunningNode, tmp_path: Path, dcmtk: None) -> None:
    """Every file of ../shared/corpus (CT, multi-vendor MR, enhanced multi-frame, compressed)."""
    files = sorted(shared_corpus().rglob("*.dcm"))
    result = storescu(node.port, files)
    assert result.returncode == 0, result.stdout + result.stderr
    node.wait_for_jobs()
    unique = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in files}
    study_uids = {str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in unique.values()}
    received = _retrieve_all(node, tmp_path / "out", study_uids)
    assert set(received) == set(unique)
    _check_retrieved(node, list(unique.values()), received)


@pytest.mark.dcmtk
def test_big_endian_converted_for_a_little_endian_requester(
    node: RunningNode, tmp_path: Path, dcmtk: None
) -> None:
    """getscu accepts only little endian: the node converts, words byte-swapped, pixels equal."""
    source = dcmread(pydicom_test_file("MR_small_bigendian.dcm"))
    source.SOPInstanceUID = generate_uid()
    original = tmp_path / "big_endian.dcm"
    source.save_as(original)
    assert dcmread(original).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2"
    assert storescu(node.port, [original]).returncode == 0
    node.wait_for_jobs()
    received = _retrieve_all(node, tmp_path / "out", {str(source.StudyInstanceUID)})
    back = dcmread(received[str(source.SOPInstanceUID)])
    assert back.file_meta.TransferSyntaxUID != "1.2.840.10008.1.2.2"
    _check_retrieved(node, [original], received)


def test_associations_send_each_pdu_at_once(node: RunningNode) -> None:
    """With Nagle's algorithm on, the last small PDU of a message waits for the peer's delayed
    ACK (about 40 ms per C-STORE sub-operation of a C-GET): the node's sockets have TCP_NODELAY."""
    assoc, inbound = _echo_association(node)
    try:
        assert inbound.dul.socket.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        assoc.release()


def _echo_association(node: RunningNode) -> tuple[Association, Association]:
    """A Verification association to the node: the requester's side and the node's."""
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SCP_NODE")
    assert assoc.is_established
    (inbound,) = node.server.active_associations
    return assoc, inbound


@pytest.mark.parametrize("debug", [False, True])
def test_pdus_are_described_only_when_the_debug_log_shows_it(
    node: RunningNode, caplog: pytest.LogCaptureFixture, debug: bool
) -> None:
    """pynetdicom formats a description of every PDU for its DEBUG log even when that log is
    off (a tenth of the CPU of a C-GET); the node keeps those handlers only when it is on."""
    caplog.set_level(logging.DEBUG if debug else logging.INFO, logger="pynetdicom")
    assoc, inbound = _echo_association(node)
    try:
        described = {
            event: bool(inbound.get_handlers(event)) for event in (evt.EVT_PDU_RECV, evt.EVT_PDU_SENT)
        }
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()
    assert described == {evt.EVT_PDU_RECV: debug, evt.EVT_PDU_SENT: debug}
    assert "Received Echo Request" in caplog.text  # the DIMSE-level lines stay either way


def test_polls_of_the_listen_socket_run_no_full_garbage_collection(
    node: RunningNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynetdicom's server collected all garbage every 60 polls or associations, holding the
    interpreter lock for tens of milliseconds in the middle of transfers."""
    collections: list[tuple] = []
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(args))
    for _ in range(200):
        node.server.service_actions()
    assert collections == []

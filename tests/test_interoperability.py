"""What real peers do: dcmtk clients, Orthanc, viewer-style requesters."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from scp_node.index.models import Instance
from tests.conftest import RunningNode, getscu, pydicom_data_dir, pydicom_test_file, storescu


@pytest.mark.dcmtk
def test_retired_storage_classes_are_stored_and_the_next_file_too(
    node: RunningNode, tmp_path: Path, dcmtk: None
) -> None:
    """pydicom-data's color-pl.dcm is retired Ultrasound Image Storage (1.2.840.10008.5.1.4.1.1.6):
    the node offers its context, so it must store it, and the CT queued behind it."""
    retired = pydicom_data_dir() / "color-pl.dcm"
    ct = pydicom_test_file("CT_small.dcm")
    assert str(dcmread(retired, stop_before_pixels=True).SOPClassUID) == "1.2.840.10008.5.1.4.1.1.6"
    sent = subprocess.run(
        ["storescu", "-aet", "MODALITY", "-aec", "SCP_NODE", "-R", "127.0.0.1", str(node.port), retired, ct],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    node.wait_for_jobs()
    with node.context.sessions() as session:
        stored = {row.sop_class_uid for row in session.query(Instance)}
    assert stored == {"1.2.840.10008.5.1.4.1.1.6", "1.2.840.10008.5.1.4.1.1.2"}

    study = str(dcmread(retired, stop_before_pixels=True).StudyInstanceUID)
    out = tmp_path / "out"
    got = getscu(node.port, out, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study})
    assert got.returncode == 0, got.stdout + got.stderr
    assert [dcmread(path).SOPClassUID for path in out.iterdir()] == ["1.2.840.10008.5.1.4.1.1.6"]


# What Horos / OsiriX propose for each storage class they retrieve (pynetdicom issue 543).
VIEWER_PROPOSAL = [
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEG2000,
    JPEGBaseline8Bit,
    RLELossless,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
]
# Explicit VR, JPEG-LS lossless, JPEG Lossless SV1 and JPEG 2000 lossless input.
VIEWED = ["CT_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEG-LL.dcm", "MR_small_jp2klossless.dcm"]


def _viewer_style_get(port: int, study_uid: str, sop_classes: set[str]) -> tuple[list[int], list[Dataset]]:
    received: list[Dataset] = []

    def on_store(event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in sorted(sop_classes):
        ae.add_requested_context(sop_class, VIEWER_PROPOSAL)
    roles = [build_role(sop_class, scp_role=True) for sop_class in sorted(sop_classes)]
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="SCP_NODE", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    statuses = [
        int(status.Status)
        for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        if status
    ]
    assoc.release()
    return statuses, received


def test_viewer_style_get_receives_every_instance_with_its_pixels(node: RunningNode) -> None:
    """Per storage class one context, compressed syntaxes first: the node must accept for each
    context a syntax it can produce for every instance, and send them all."""
    files = [pydicom_test_file(name) for name in VIEWED]
    assoc = AE(ae_title="MODALITY")
    sources = [dcmread(path) for path in files]
    for ds in sources:
        assoc.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    sender = assoc.associate("127.0.0.1", node.port, ae_title="SCP_NODE")
    for ds in sources:
        assert sender.send_c_store(ds).Status == 0x0000
    sender.release()
    node.wait_for_jobs()

    for source in sources:
        statuses, received = _viewer_style_get(node.port, source.StudyInstanceUID, {source.SOPClassUID})
        assert statuses[-1] == 0x0000, [hex(code) for code in statuses]
        (copy,) = [ds for ds in received if ds.SOPInstanceUID == source.SOPInstanceUID]
        assert (copy.pixel_array == source.pixel_array).all()


@pytest.mark.dcmtk
@pytest.mark.parametrize("preference", ["+xs", "+xv", "+xt", "+xr"])
def test_getscu_preferring_a_compressed_syntax_receives_every_instance(
    node: RunningNode, tmp_path: Path, preference: str, dcmtk: None
) -> None:
    files = [pydicom_test_file(name) for name in VIEWED]
    assert storescu(node.port, files).returncode == 0
    node.wait_for_jobs()
    for path in files:
        source = dcmread(path)
        out = tmp_path / preference / str(source.SOPInstanceUID)
        keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": str(source.StudyInstanceUID)}
        got = getscu(node.port, out, keys, preference)
        assert got.returncode == 0, got.stdout + got.stderr
        copies = [dcmread(p) for p in out.iterdir()]
        (copy,) = [ds for ds in copies if ds.SOPInstanceUID == source.SOPInstanceUID]
        assert (copy.pixel_array == source.pixel_array).all(), (path.name, preference)

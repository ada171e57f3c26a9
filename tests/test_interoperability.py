"""What real peers do: dcmtk clients, Orthanc, viewer-style requesters."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread

from scp_node.index.models import Instance
from tests.conftest import RunningNode, getscu, pydicom_data_dir, pydicom_test_file


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

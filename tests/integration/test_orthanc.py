"""Orthanc 1.10 (Debian's package) as the PACS beside the node, driven over its REST API: it
stores into the node with and without storage commitment, queries it, and has studies moved
back into a second Orthanc; UIDs, data sets and pixels must survive the round trip."""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from scp_node.imaging.dicom_layout import dataset_offset
from scp_node.index.models import Instance
from tests.support import RunningNode, free_port, make_config, pydicom_test_file, start_node
from tests.support.orthanc import Orthanc

# Explicit and implicit VR, JPEG Lossless, JPEG 2000 lossless, RGB, multi-frame.
FILES = [
    "CT_small.dcm",
    "MR_small_implicit.dcm",
    "SC_rgb.dcm",
    "JPEG-LL.dcm",
    "US1_J2KR.dcm",
    "emri_small.dcm",
]


@dataclass
class Site:
    node: RunningNode
    pacs: Orthanc  # sends to the node, queries it, asks it to move
    archive: Orthanc  # C-MOVE destination
    commitment: bool = True  # Orthanc asks for storage commitment when it stores

    def upload(self, paths: list[Path]) -> list[str]:
        return [self.pacs.post("/instances", path.read_bytes())["ID"] for path in paths]


def _site(tmp_path: Path, database_url: str, commitment_report: str) -> Site:
    node_port = free_port()
    pacs = Orthanc(tmp_path / "pacs", "ORTHANC", {"node": ("SCP_NODE", node_port)})
    archive = Orthanc(tmp_path / "archive", "ARCHIVE", {"node": ("SCP_NODE", node_port)})
    peers = [
        {
            "ae_title": "ORTHANC",
            "host": "127.0.0.1",
            "port": pacs.dicom_port,
            "permissions": ["echo", "store", "find", "get", "move"],
            "commitment_report": commitment_report,
        },
        {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": archive.dicom_port, "permissions": ["echo"]},
    ]
    config = make_config(tmp_path, database_url, **{"network.port": node_port, "access.peers": peers})
    return Site(start_node(config), pacs, archive)


@pytest.fixture(params=["without", "same_association", "new_association"])
def site(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Iterator[Site]:
    """Orthanc stores without storage commitment, or with it and the node's report going on the
    same association (Orthanc releases it first, so a new one follows) or a new one."""
    running = _site(
        tmp_path, database_url, "same_association" if request.param == "without" else request.param
    )
    running.commitment = request.param != "without"
    yield running
    running.node.stop()
    running.pacs.stop()
    running.archive.stop()


def _dataset_sha(data: bytes) -> str:
    return hashlib.sha256(data[dataset_offset(data) :]).hexdigest()


def _wait_for_commitment(pacs: Orthanc, transaction_uid: str) -> dict:
    deadline = time.monotonic() + 60
    while True:
        report = pacs.get(f"/storage-commitment/{transaction_uid}")
        if report["Status"] != "Pending":
            return report
        assert time.monotonic() < deadline, report
        time.sleep(0.2)


@pytest.mark.dcmtk
def test_orthanc_stores_with_commitment_queries_and_moves_back(site: Site) -> None:
    paths = [pydicom_test_file(name) for name in FILES]
    sources = {str(dcmread(path).SOPInstanceUID): path for path in paths}
    ids = site.upload(paths)

    stored = site.pacs.post(
        "/modalities/node/store",
        {"Resources": ids, "Synchronous": True, "StorageCommitment": site.commitment},
    )
    assert stored["FailedInstancesCount"] == 0 and stored["InstancesCount"] == len(paths), stored
    if site.commitment:
        report = _wait_for_commitment(site.pacs, stored["StorageCommitmentTransactionUID"])
        assert report["Status"] == "Success", report
        assert {item["SOPInstanceUID"] for item in report["Success"]} == set(sources)
    site.node.wait_for_jobs()
    with site.node.context.sessions() as session:
        assert {row.sop_instance_uid for row in session.query(Instance)} == set(sources)

    studies = {str(dcmread(path, stop_before_pixels=True).StudyInstanceUID) for path in paths}
    query = site.pacs.post("/modalities/node/query", {"Level": "Study", "Query": {"StudyInstanceUID": ""}})
    answers = site.pacs.get(f"/queries/{query['ID']}/answers?expand&simplify")
    assert {answer["StudyInstanceUID"] for answer in answers} == studies

    for study in sorted(studies):
        moved = site.pacs.post(
            "/modalities/node/move",
            {"Level": "Study", "Resources": [{"StudyInstanceUID": study}], "TargetAet": "ARCHIVE"},
        )
        assert moved is not None
    received = {}
    for orthanc_id in site.archive.get("/instances"):
        data = site.archive.request("GET", f"/instances/{orthanc_id}/file")
        received[str(dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
    assert set(received) == set(sources)
    with site.node.context.sessions() as session:
        ingested = {row.sop_instance_uid: row for row in session.query(Instance)}
    for uid, path in sources.items():
        _assert_same_instance(path, received[uid], ingested[uid])


def _assert_same_instance(path: Path, data: bytes, ingested: Instance) -> None:
    """Byte-identical to what the node received where it went out as it came (uncompressed);
    otherwise, and always against the original file, the same elements and pixels."""
    original, copy = dcmread(path), dcmread(io.BytesIO(data))
    syntax = copy.file_meta.TransferSyntaxUID
    if syntax == ingested.transfer_syntax_uid and not syntax.is_compressed:
        assert _dataset_sha(data) == ingested.dataset_sha256, path.name
    for element in _without_group_lengths(original):
        if element.tag != 0x7FE00010:
            assert copy[element.tag].value == element.value, (path.name, element.tag)
    assert (copy.pixel_array == original.pixel_array).all(), path.name


def _without_group_lengths(ds: Dataset) -> list:
    """Neither group lengths nor trailing padding (FFFC,FFFC) describe content: DCMTK, inside
    Orthanc, drops both when it sends a file."""
    return [element for element in ds if element.tag.element != 0 and element.tag != 0xFFFCFFFC]


def test_orthanc_commitment_names_what_the_node_lacks(tmp_path: Path) -> None:
    """Orthanc asks about instances it sent elsewhere: the report fails them, by name."""
    site = _site(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}", "new_association")
    try:
        ids = site.upload([pydicom_test_file("CT_small.dcm")])
        with site.node.context.sessions() as session:
            assert session.query(Instance).count() == 0
        # Commitment without the store: Orthanc's REST API asks for it on the ids it holds.
        transaction = site.pacs.post(
            "/modalities/node/storage-commitment", {"DicomInstances": [_sop_pair(site.pacs, ids[0])]}
        )
        report = _wait_for_commitment(site.pacs, transaction["ID"])
        assert report["Status"] == "Failure", report
        assert [failure["FailureReason"] for failure in report["Failures"]] == [0x0112]
    finally:
        site.node.stop()
        site.pacs.stop()
        site.archive.stop()


def _sop_pair(orthanc: Orthanc, orthanc_id: str) -> dict:
    tags = orthanc.get(f"/instances/{orthanc_id}/simplified-tags")
    return {"SOPClassUID": tags["SOPClassUID"], "SOPInstanceUID": tags["SOPInstanceUID"]}

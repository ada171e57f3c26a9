"""Lossy storage through the node: rules naming `ldm` and `bicubic` store a lossy copy under a
new SOP Instance UID, marked as lossy and derived, which C-FIND and C-GET serve instead of the
original; the original is kept losslessly for its time, or dropped, as configured."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from scp_node.index.models import Instance, StorageState, utcnow
from scp_node.index.repository import stats
from tests.support import RunningNode, getscu, make_config, pydicom_test_file, run_cli, start_node, storescu
from workers.retention import purge_expired_originals

CT, MR, PLAN = (pydicom_test_file(n) for n in ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm"))
RULES = [
    {"modality": "CT", "codec": "ldm", "options": {"scale": 2, "delta": 2, "steps": 2}},
    {"modality": "MR", "codec": "bicubic", "options": {"scale": 2}},
    {"modality": "RTPLAN", "codec": "bicubic", "options": {"delta": 1}},  # no pixels: kept as sent
]


def _uid(path: Path, keyword: str = "SOPInstanceUID") -> str:
    return str(dcmread(path, stop_before_pixels=True)[keyword].value)


def _study(path: Path) -> str:
    return _uid(path, "StudyInstanceUID")


def _rows(node: RunningNode) -> dict[str, Instance]:
    with node.context.sessions() as session:
        rows = session.query(Instance).all()
        session.expunge_all()
    return {row.sop_instance_uid: row for row in rows}


def _image_uids(node: RunningNode, path: Path) -> list[str]:
    """C-FIND at IMAGE level in the series of the file at `path`."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = _study(path)
    identifier.SeriesInstanceUID = _uid(path, "SeriesInstanceUID")
    identifier.SOPInstanceUID = ""
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SCP_NODE")
    assert assoc.is_established
    found = [
        str(match.SOPInstanceUID)
        for status, match in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
        if status.Status in (0xFF00, 0xFF01)
    ]
    assoc.release()
    return found


def _get(node: RunningNode, out: Path, **keys: str) -> list[Dataset]:
    result = getscu(node.port, out, keys)
    assert result.returncode == 0, result.stdout + result.stderr
    return [dcmread(path) for path in sorted(out.iterdir())] if out.exists() else []


def _lossy_node(tmp_path: Path, database_url: str, tiny_ldm_dir: Path, **lossy: object):
    overrides = {
        "compression.rules": RULES,
        "compression.ldm.weights_dir": str(tiny_ldm_dir),
        **{f"compression.lossy.{key}": value for key, value in lossy.items()},
    }
    return start_node(make_config(tmp_path, database_url, **overrides))


@pytest.mark.dcmtk
def test_lossy_copies_replace_originals_in_find_and_get(
    tmp_path: Path, database_url: str, tiny_ldm_dir: Path, dcmtk: None
) -> None:
    node = _lossy_node(tmp_path, database_url, tiny_ldm_dir, keep_original_days=30)
    try:
        assert storescu(node.port, [CT, MR, PLAN]).returncode == 0
        node.wait_for_jobs()
        rows = _rows(node)
        ct_copy = rows[_uid(CT)].replaced_by_uid
        mr_copy = rows[_uid(MR)].replaced_by_uid
        assert ct_copy and mr_copy and len(rows) == 5
        for original, copy, codec in ((_uid(CT), ct_copy, "ldm"), (_uid(MR), mr_copy, "bicubic")):
            kept = rows[original]
            assert (
                kept.state == StorageState.REPLACED
                and kept.codec == "jpegxl"
                and Path(kept.blob_path).exists()
            )
            days_left = (kept.original_expires_at.replace(tzinfo=None) - utcnow().replace(tzinfo=None)).days
            assert 29 <= days_left <= 30
            assert rows[copy].state == StorageState.COMPRESSED and rows[copy].codec == codec
            assert rows[copy].derived_from_uid == original
        assert rows[_uid(PLAN)].state == StorageState.COMPRESSED and not rows[_uid(PLAN)].replaced_by_uid

        assert _image_uids(node, CT) == [ct_copy]
        [ct] = _get(node, tmp_path / "ct", QueryRetrieveLevel="STUDY", StudyInstanceUID=_study(CT))
        [mr] = _get(
            node, tmp_path / "mr", QueryRetrieveLevel="STUDY", StudyInstanceUID=_uid(MR, "StudyInstanceUID")
        )
        assert not _get(node, tmp_path / "none", QueryRetrieveLevel="IMAGE", **_image_keys(CT, _uid(CT)))

        original = dcmread(CT)
        assert ct.SOPInstanceUID == ct_copy and ct.LossyImageCompression == "01"
        assert ct.LossyImageCompressionMethod == "LDM_X2_D2" and float(ct.LossyImageCompressionRatio) > 1
        assert ct.ImageType[0] == "DERIVED" and list(ct.ImageType[1:]) == list(original.ImageType[1:])
        source = ct.SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID == original.SOPInstanceUID
        assert source.PurposeOfReferenceCodeSequence[0].CodeValue == "121320"
        assert ct.StudyInstanceUID == original.StudyInstanceUID and ct.PatientID == original.PatientID
        error = np.abs(ct.pixel_array.astype(np.int64) - original.pixel_array.astype(np.int64))
        assert int(error.max()) <= 2
        assert mr.LossyImageCompressionMethod == "BICUBIC_X2" and mr.SOPInstanceUID == mr_copy
        assert not np.array_equal(mr.pixel_array, dcmread(MR).pixel_array)  # plain mode: lossy

        dropped = purge_expired_originals(node.context, utcnow() + timedelta(days=31))
        rows_after = _rows(node)
        assert dropped == 2 and not Path(rows[_uid(CT)].blob_path).exists()
        assert rows_after[_uid(CT)].state == StorageState.DROPPED and rows_after[_uid(CT)].blob_path is None
        [again] = _get(node, tmp_path / "again", QueryRetrieveLevel="IMAGE", **_image_keys(CT, ct_copy))
        assert np.array_equal(again.pixel_array, ct.pixel_array)
    finally:
        node.stop()


def _image_keys(path: Path, sop_instance_uid: str) -> dict[str, str]:
    return {
        "StudyInstanceUID": _study(path),
        "SeriesInstanceUID": _uid(path, "SeriesInstanceUID"),
        "SOPInstanceUID": sop_instance_uid,
    }


@pytest.mark.dcmtk
def test_dropped_originals_and_resent_originals_keep_one_copy(
    tmp_path: Path, tiny_ldm_dir: Path, dcmtk: None
) -> None:
    """An identical re-send changes nothing; a corrected one (same UID, duplicate_policy
    overwrite) is copied again under the same copy UID, replacing the first copy."""
    corrected = dcmread(CT)
    corrected.PatientName = "Corrected^Name"
    corrected.save_as(tmp_path / "corrected.dcm")
    node = _lossy_node(tmp_path, "", tiny_ldm_dir, keep_original=False)
    try:
        for path in (CT, CT, tmp_path / "corrected.dcm"):
            assert storescu(node.port, [path]).returncode == 0
            node.wait_for_jobs()
            rows = _rows(node)
            original = rows[_uid(CT)]
            assert original.state == StorageState.DROPPED
            assert original.blob_path is None and original.spool_path is None
            assert len(rows) == 2 and rows[original.replaced_by_uid].derived_from_uid == _uid(CT)
        assert _image_uids(node, CT) == [original.replaced_by_uid]
        assert not list((node.config.storage.data_dir / "spool").rglob("*.dcm"))
        with node.context.sessions() as session:
            totals = stats(session)
        assert totals.by_state == {"dropped": 1, "compressed": 1}
        assert totals.received_bytes == original.received_size
        assert totals.stored_bytes == rows[original.replaced_by_uid].stored_size
        [copy] = _get(node, tmp_path / "get", QueryRetrieveLevel="STUDY", StudyInstanceUID=_study(CT))
        assert copy.PatientName == "Corrected^Name" and copy.SOPInstanceUID == original.replaced_by_uid

        config_file = tmp_path / "config.yaml"
        config_file.write_text(yaml.safe_dump(node.config.model_dump(mode="json")))
        verify = run_cli(config_file, "verify", "--sample", "1.0")  # the dropped original is no problem
        assert verify.returncode == 0 and "checked 1 instances" in verify.stdout, verify.stdout
        assert "dropped 0 originals" in run_cli(config_file, "originals", "purge").stdout
        ldm_try = ["codec", "try", "--codec", "ldm", "--option", "delta=3", "--json", str(MR)]
        trial = run_cli(config_file, *ldm_try)
        assert json.loads(trial.stdout)["max_abs_error"] <= 3, trial.stderr
    finally:
        node.stop()


def test_instances_that_cannot_have_a_lossy_copy_are_stored_losslessly(
    tmp_path: Path, tiny_ldm_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A lossy copy of already lossy pixels, or one no smaller, is not made: the instance is
    kept losslessly with the default codec, and the log says why."""
    node = start_node(
        make_config(tmp_path, "", **{"compression.rules": [{"calling_ae": "MODALITY", "codec": "bicubic"}]})
    )
    try:
        files = [pydicom_test_file(n) for n in ("JPEG-lossy.dcm", "SC_rgb_small_odd.dcm")]
        assert storescu(node.port, files).returncode == 0
        node.wait_for_jobs()
        rows = _rows(node)
        assert len(rows) == 2 and all(not row.replaced_by_uid for row in rows.values())
        assert {row.state for row in rows.values()} == {StorageState.COMPRESSED}
        assert "already lossy" in caplog.text and "would not make these pixels smaller" in caplog.text
    finally:
        node.stop()


def test_lossy_copy_is_rebuilt_from_its_blob_byte_for_byte(ldm_codecs) -> None:
    from scp_node.imaging.blob import decode_instance
    from workers.lossy_copy import encode_lossy_copy, lossy_copy_uid

    codec = ldm_codecs.create("ldm", scale=4, delta=1, steps=2)
    data = pydicom_test_file("emri_small.dcm").read_bytes()  # 10 frames, 16-bit MR
    copy = encode_lossy_copy(data, codec)
    rebuilt = decode_instance(copy.encoded.blob, ldm_codecs)
    ds = dcmread(io.BytesIO(rebuilt.data))
    assert copy.sop_instance_uid == lossy_copy_uid(str(dcmread(io.BytesIO(data)).SOPInstanceUID), codec)
    assert copy.sop_instance_uid == ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
    assert rebuilt.dataset_sha256 == copy.dataset_sha256 and copy.size == len(rebuilt.data)
    original = dcmread(io.BytesIO(data)).pixel_array.astype(np.int64)
    assert int(np.abs(ds.pixel_array.astype(np.int64) - original).max()) <= 1


def test_serve_refuses_ldm_rules_without_weights_and_lossy_catch_alls(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    for compression, message in (
        ({"rules": [{"modality": "CR", "codec": "ldm"}]}, "compression.ldm.weights_dir"),
        ({"rules": [{"codec": "bicubic", "options": {"delta": 2}}]}, "rule without modality or calling_ae"),
    ):
        storage = {"data_dir": str(tmp_path / "data")}
        config_file.write_text(yaml.safe_dump({"compression": compression, "storage": storage}))
        served = run_cli(config_file, "serve", "--port", "0")
        assert served.returncode == 2 and message in served.stderr, served.stderr
        assert "Traceback" not in served.stderr

"""Bad input gets a failure status and the node keeps serving; restart recovery; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelGet,
    SecondaryCaptureImageStorage,
    Verification,
)

from scp_node.index.models import Instance, StorageState
from tests.support import RunningNode, make_config, pydicom_test_file, run_cli, start_node


def _scu_association(node: RunningNode):
    ae = AE(ae_title="BADPEER")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SCP_NODE")
    assert assoc.is_established
    return assoc


def test_bad_input_gets_failure_status_and_node_keeps_serving(node: RunningNode) -> None:
    assoc = _scu_association(node)
    truncated = dcmread(pydicom_test_file("CT_small.dcm"))
    truncated.PixelData = truncated.PixelData[:1000]
    assert assoc.send_c_store(truncated).Status == 0xC000

    other_uid = dcmread(pydicom_test_file("CT_small.dcm"))
    other_uid.SOPInstanceUID = "1.2.3.4.5"
    status = assoc.send_c_store(other_uid)  # request and data set disagree on the UID
    assert status.Status == 0x0000  # pynetdicom takes the request UID from the data set
    assert assoc.send_c_echo().Status == 0x0000
    assoc.abort()  # a peer that drops the connection

    assoc = _scu_association(node)
    assert assoc.send_c_store(dcmread(pydicom_test_file("CT_small.dcm"))).Status == 0x0000
    assoc.release()
    node.wait_for_jobs()
    with node.context.sessions() as session:
        assert session.query(Instance).count() == 2


def test_restart_requeues_and_cleans_half_received(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}", **{"queue.in_process_workers": 0}
    )
    node = start_node(config)  # no worker threads: instances stay queued, as after a crash
    assoc = _scu_association(node)
    assert assoc.send_c_store(dcmread(pydicom_test_file("CT_small.dcm"))).Status == 0x0000
    assoc.release()
    node.stop()
    half = config.storage.data_dir / "incoming" / "tmpXYZ.dcm"
    half.write_bytes(b"\0" * 100)

    restarted = start_node(
        config.model_copy(update={"queue": config.queue.model_copy(update={"in_process_workers": 1})})
    )
    try:
        restarted.wait_for_jobs()
        assert not half.exists()
        with restarted.context.sessions() as session:
            assert [i.state for i in session.query(Instance)] == [StorageState.COMPRESSED]
    finally:
        restarted.stop()


def test_cli_ae_stats_verify_codec_try(node: RunningNode, tmp_path: Path) -> None:
    assoc = _scu_association(node)
    assert assoc.send_c_store(dcmread(pydicom_test_file("CT_small.dcm"))).Status == 0x0000
    assoc.release()
    node.wait_for_jobs()
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(node.config.model_dump(mode="json")))

    peer = ["CT1", "--host", "10.0.0.5", "--port", "104", "--permissions", "echo,store"]
    assert run_cli(config_file, "ae", "add", *peer).returncode == 0
    assert "CT1" in run_cli(config_file, "ae", "list").stdout
    assert run_cli(config_file, "ae", "add", "BAD", "--permissions", "fly").returncode == 2
    assert run_cli(config_file, "ae", "remove", "CT1").returncode == 0
    assert "CT1" not in run_cli(config_file, "ae", "list").stdout

    stats = json.loads(run_cli(config_file, "stats", "--json").stdout)
    assert stats["instances"] == 1 and stats["by_state"] == {"compressed": 1}
    assert stats["compression_ratio"] > 1.0 and stats["queue_depth"] == 0

    verify = run_cli(config_file, "verify", "--sample", "1.0")
    assert verify.returncode == 0 and "problems 0" in verify.stdout
    with node.context.sessions() as session:
        blob = Path(session.query(Instance).one().blob_path)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    assert run_cli(config_file, "verify", "--sample", "1.0").returncode == 1

    trial = run_cli(
        config_file, "codec", "try", "--codec", "jpegls", "--json", str(pydicom_test_file("MR_small.dcm"))
    )
    result = json.loads(trial.stdout.splitlines()[0])
    assert set(result) == {
        "file",
        "original_bytes",
        "bytes",
        "ratio",
        "bpsp",
        "max_abs_error",
        "psnr",
        "encode_s",
        "decode_s",
    }
    assert result["max_abs_error"] == 0 and 0 < result["bpsp"] < 16


def test_unauthorised_peer_is_refused(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, f"sqlite:///{tmp_path / 'i.sqlite'}", **{"access.unknown_peer_permissions": ["echo"]}
    )
    node = start_node(config)
    try:
        assoc = _scu_association(node)
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(dcmread(pydicom_test_file("CT_small.dcm"))).Status == 0x0124
        assoc.release()
    finally:
        node.stop()


def test_get_image_level_with_a_list_of_uids(node: RunningNode, tmp_path: Path) -> None:
    """C-GET with a UID list (list matching) returns exactly the listed instances."""
    files = [pydicom_test_file(name) for name in ("CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm")]
    assoc = _scu_association_all(node)
    for path in files:
        assert assoc.send_c_store(dcmread(path)).Status == 0x0000
    assoc.release()
    wanted = [dcmread(f, stop_before_pixels=True) for f in files[:2]]
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.SOPInstanceUID = [str(ds.SOPInstanceUID) for ds in wanted]
    received = []
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    roles = []
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class)
        roles.append(build_role(sop_class, scp_role=True))

    def on_store(event):
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    assoc = ae.associate(
        "127.0.0.1",
        node.port,
        ae_title="SCP_NODE",
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    statuses = [
        s.Status for s, _ in assoc.send_c_get(identifier, PatientRootQueryRetrieveInformationModelGet)
    ]
    assoc.release()
    assert statuses[-1] == 0x0000
    assert sorted(received) == sorted(str(ds.SOPInstanceUID) for ds in wanted)


def _scu_association_all(node: RunningNode):
    ae = AE(ae_title="MODALITY")
    for sop_class in (CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage):
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SCP_NODE")
    assert assoc.is_established
    return assoc


def test_over_long_descriptions_are_stored_and_indexed_cut(node: RunningNode) -> None:
    """PostgreSQL enforces column lengths: a non-conformant description must not refuse the image."""
    ds = dcmread(pydicom_test_file("CT_small.dcm"))
    ds.StudyDescription = "D" * 200
    ds.StudyDate = "2004.01.19"  # retired ACR-NEMA spelling
    assoc = _scu_association(node)
    assert assoc.send_c_store(ds).Status == 0x0000
    assoc.release()
    with node.context.sessions() as session:
        study = session.query(Instance).one().series.study
        assert (study.study_description, study.study_date) == ("D" * 64, "20040119")

"""With Redis configured, jobs go to RQ and a real `scp-node worker` process runs them."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread

from scp_node.imaging.dicom_layout import dataset_offset
from scp_node.index.models import Instance, StorageState
from tests.support import REDIS_URL, getscu, make_config, pydicom_test_file, start_node, storescu

FILES = ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm"]


@pytest.mark.dcmtk
def test_rq_worker_compresses_and_retrieval_is_identical(
    tmp_path: Path, database_url: str, redis_queue_name: str, dcmtk: None
) -> None:
    config = make_config(
        tmp_path, database_url, **{"queue.redis_url": REDIS_URL, "queue.name": redis_queue_name}
    )
    node = start_node(config)
    try:
        files = [pydicom_test_file(name) for name in FILES]
        assert storescu(node.port, files).returncode == 0
        assert node.queue.depth() == len(files)
        config_file = tmp_path / "config.yaml"
        config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        worker = subprocess.run(
            [sys.executable, "-m", "scp_node.cli", "worker", "--burst", "--config", str(config_file)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert worker.returncode == 0, worker.stderr
        with node.context.sessions() as session:
            instances = {i.sop_instance_uid: i for i in session.query(Instance)}
        assert {i.state for i in instances.values()} == {StorageState.COMPRESSED}
        out = tmp_path / "out"
        for path in files:
            ds = dcmread(path, stop_before_pixels=True)
            result = getscu(
                node.port, out, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ds.StudyInstanceUID}
            )
            assert result.returncode == 0
        for path in out.iterdir():
            data = path.read_bytes()
            instance = instances[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
            assert hashlib.sha256(data[dataset_offset(data) :]).hexdigest() == instance.dataset_sha256
        assert len(list(out.iterdir())) == len(files)
    finally:
        node.stop()

"""Storage state under concurrency: any number of compress workers, in any number of processes,
with the same instances sent again and again, lose nothing acknowledged; one node serves a
data dir; and the admin's tools tell the truth about what is stored.

Every scenario ends with the same check (`_assert_every_instance_retrievable`): each
acknowledged instance is indexed as compressed, its blob exists, `scp-node verify --sample 1`
finds no problem, and getscu returns every data set with its ingest SHA-256.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread
from pynetdicom import dimse_messages

from scp_node.imaging.dicom_layout import dataset_offset
from scp_node.index.models import Instance, StorageState
from scp_node.server import StartRefused, start
from tests.support import (
    REDIS_URL,
    NodeProcess,
    RunningNode,
    free_port,
    getscu,
    make_config,
    pydicom_test_file,
    run_cli,
    shared_corpus,
    start_node,
    storescu,
)
from workers.runtime import open_runtime


def _ct_series(count: int) -> list[Path]:
    """Real 512x512 CT slices (one series), slow enough to code that two jobs overlap."""
    return sorted((shared_corpus() / "series" / "ct-siemens-chest").glob("*.dcm"))[:count]


def _twice_in_a_row(files: list[Path]) -> list[Path]:
    """A modality that retries each instance at once: the two compress jobs run side by side."""
    return [path for path in files for _ in range(2)]


def _write_config(node_config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(node_config.model_dump(mode="json")))
    return path


def _assert_every_instance_retrievable(node: RunningNode, files: list[Path], tmp_path: Path) -> None:
    uids = {str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in files}
    with node.context.sessions() as session:
        rows = {row.sop_instance_uid: row for row in session.query(Instance)}
    assert set(rows) == uids
    for uid, row in rows.items():
        assert row.state == StorageState.COMPRESSED, (uid, row.state, row.error)
        assert row.blob_path and Path(row.blob_path).is_file(), f"{uid}: blob {row.blob_path} missing"
    expected = {uid: row.dataset_sha256 for uid, row in rows.items()}  # as received

    config_file = _write_config(node.config, tmp_path / "verify.yaml")
    verify = run_cli(config_file, "verify", "--sample", "1")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"checked {len(expected)} instances, fully decoded {len(expected)}, problems 0" in verify.stdout
    stats = run_cli(config_file, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert yaml.safe_load(stats.stdout)["by_state"] == {"compressed": len(expected)}

    out = tmp_path / "retrieved"
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    result = getscu(node.port, out, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study})
    assert result.returncode == 0, result.stdout + result.stderr
    retrieved = {}
    for path in out.iterdir():
        data = path.read_bytes()
        retrieved[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = hashlib.sha256(
            data[dataset_offset(data) :]
        ).hexdigest()
    assert retrieved == expected


@pytest.mark.dcmtk
@pytest.mark.parametrize("workers", [2, 4])
def test_in_process_workers_with_instances_sent_twice_keep_every_blob(
    tmp_path: Path, database_url: str, workers: int, dcmtk: None
) -> None:
    files = _ct_series(12)
    node = start_node(make_config(tmp_path, database_url, **{"queue.in_process_workers": workers}))
    try:
        result = storescu(node.port, _twice_in_a_row(files))
        assert result.returncode == 0, result.stdout
        node.wait_for_jobs()
        _assert_every_instance_retrievable(node, files, tmp_path)
    finally:
        node.stop()


@pytest.mark.dcmtk
def test_concurrent_resends_while_compressing_keep_every_blob(
    tmp_path: Path, database_url: str, dcmtk: None
) -> None:
    """Three senders push the same series at once, twice each, while three workers compress."""
    files = _ct_series(8)
    node = start_node(make_config(tmp_path, database_url, **{"queue.in_process_workers": 3}))
    try:
        results: list[subprocess.CompletedProcess] = []
        senders = [
            threading.Thread(target=lambda: results.append(storescu(node.port, _twice_in_a_row(files))))
            for _ in range(3)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        assert [r.returncode for r in results] == [0, 0, 0], [r.stdout for r in results]
        node.wait_for_jobs()
        _assert_every_instance_retrievable(node, files, tmp_path)
    finally:
        node.stop()


@pytest.mark.dcmtk
@pytest.mark.redis
def test_several_rq_workers_with_repeated_sends_keep_every_blob(
    tmp_path: Path, database_url: str, redis_queue_name: str, dcmtk: None
) -> None:
    """Three real `scp-node worker` processes drain jobs for instances sent four times each."""
    files = _ct_series(10)
    config = make_config(
        tmp_path, database_url, **{"queue.redis_url": REDIS_URL, "queue.name": redis_queue_name}
    )
    node = start_node(config)
    try:
        for _ in range(2):
            assert storescu(node.port, _twice_in_a_row(files)).returncode == 0
        config_file = _write_config(config, tmp_path / "config.yaml")
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "scp_node.cli", "worker", "--burst", "--config", str(config_file)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(3)
        ]
        for worker in workers:
            output, _ = worker.communicate(timeout=600)
            assert worker.returncode == 0, output
        _assert_every_instance_retrievable(node, files, tmp_path)
    finally:
        node.stop()


def test_stats_and_verify_tell_a_missing_blob(node: RunningNode, tmp_path: Path) -> None:
    """A blob deleted behind the node's back: stats stops calling it compressed, and verify
    names it and exits non-zero (so it can run from cron)."""
    files = [pydicom_test_file("CT_small.dcm"), pydicom_test_file("MR_small.dcm")]
    assert storescu(node.port, files).returncode == 0
    node.wait_for_jobs()
    with node.context.sessions() as session:
        lost = session.query(Instance).order_by(Instance.id).first()
    Path(lost.blob_path).unlink()
    config_file = _write_config(node.config, tmp_path / "config.yaml")

    stats = run_cli(config_file, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert yaml.safe_load(stats.stdout)["by_state"] == {"compressed": 1, "missing": 1}
    verify = run_cli(config_file, "verify")
    assert verify.returncode == 1
    assert f"{lost.sop_instance_uid}: missing file {lost.blob_path}" in verify.stdout
    assert "problems 1" in verify.stdout


def _serve(config, tmp_path: Path, name: str) -> NodeProcess:
    return NodeProcess(
        _write_config(config, tmp_path / f"{name}.yaml"), config.network.port, tmp_path / f"{name}.log"
    )


def test_a_second_node_on_one_data_dir_refuses_at_once(tmp_path: Path) -> None:
    """It must not sweep incoming/ (the first node's live transfers) nor run jobs; a node on
    a taken port says so in one line. Killed with -9, the first node leaves no stale lock."""
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}")
    first = _serve(config, tmp_path, "first")
    try:
        first.wait_until_serving()
        live_transfer = config.storage.data_dir / "incoming" / "tmp-live.dcm"
        live_transfer.write_bytes(b"\0" * 128)

        second_config = config.model_copy(
            update={"network": config.network.model_copy(update={"port": free_port()})}
        )
        second = _serve(second_config, tmp_path, "second")
        assert second.process.wait(timeout=60) == 2
        output = second.log_tail()
        assert (
            f"data dir {config.storage.data_dir} is in use by scp-node serve pid {first.process.pid}"
            in output
        )
        assert "Traceback" not in output
        assert live_transfer.exists()

        elsewhere = config.model_copy(
            update={"storage": config.storage.model_copy(update={"data_dir": tmp_path / "other"})}
        )
        taken_port = _serve(elsewhere, tmp_path, "taken-port")
        assert taken_port.process.wait(timeout=60) == 2
        output = taken_port.log_tail()
        assert f"cannot listen on 127.0.0.1:{config.network.port} (network.host / network.port)" in output
        assert "Traceback" not in output
    finally:
        first.kill()
    restarted = _serve(config, tmp_path, "restarted")
    try:
        restarted.wait_until_serving()
    finally:
        restarted.stop()


def test_a_second_in_process_node_on_one_data_dir_is_refused(tmp_path: Path) -> None:
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}")
    node = start_node(config)
    try:
        other = config.model_copy(update={"network": config.network.model_copy(update={"port": free_port()})})
        runtime = open_runtime(other)
        try:
            with pytest.raises(StartRefused, match="is in use by scp-node serve pid"):
                start(runtime.context, runtime.queue, block=False)
        finally:
            runtime.close()
    finally:
        node.stop()
    start_node(config).stop()  # released with the server


def test_only_received_transfers_are_written_into_the_swept_folder(node: RunningNode) -> None:
    """incoming/ is swept of idle files: pynetdicom's transfers go there, and no other
    temporary file of the process does."""
    incoming = node.context.spool.incoming
    assert Path(tempfile.gettempdir()) != incoming
    with dimse_messages.NamedTemporaryFile(delete=True, suffix=".dcm") as transfer:
        assert Path(transfer.name).parent == incoming
    assert storescu(node.port, [pydicom_test_file("CT_small.dcm")]).returncode == 0

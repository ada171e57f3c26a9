"""Orthanc (Debian's package) as a peer in tests: its own config, storage and ports, kept on
loopback by bench/loopback.py's bind() shim, driven over its REST API."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.loopback import ShimUnavailable, build_bind_shim
from tests.support import free_port, require


def orthanc_binary() -> str:
    binary = shutil.which("Orthanc") or (
        "/usr/sbin/Orthanc" if os.access("/usr/sbin/Orthanc", os.X_OK) else None
    )
    require(binary is not None, "Orthanc (Debian package orthanc) is not installed")
    return binary


class Orthanc:
    """One Orthanc process; `modalities` maps a name to (AE title, port) on 127.0.0.1."""

    def __init__(self, workdir: Path, ae_title: str, modalities: dict[str, tuple[str, int]]) -> None:
        workdir.mkdir(parents=True)
        try:
            shim = build_bind_shim(workdir)
        except ShimUnavailable as exc:
            require(False, str(exc))
        self.ae_title = ae_title
        self.dicom_port, self.http_port = free_port(), free_port()
        config = {
            "Name": ae_title,
            "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "storage"),
            "DicomAet": ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "Plugins": [],
            "DicomModalities": {
                name: {"AET": aet, "Host": "127.0.0.1", "Port": port}
                for name, (aet, port) in modalities.items()
            },
        }
        config_file = workdir / "orthanc.json"
        config_file.write_text(json.dumps(config, indent=2))
        self.log_file = workdir / "orthanc.log"
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [orthanc_binary(), str(config_file)],
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LD_PRELOAD": str(shim)},
                start_new_session=True,
            )
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            assert self.process.poll() is None, self.log_file.read_text(errors="replace")[-3000:]
            try:
                self.get("/system")
                return
            except OSError:
                assert time.monotonic() < deadline, (
                    "Orthanc did not start:\n" + self.log_file.read_text()[-3000:]
                )
                time.sleep(0.2)

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 120) -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=body, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()

    def get(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def post(self, path: str, payload: Any) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return json.loads(self.request("POST", path, body) or b"null")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

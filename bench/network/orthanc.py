"""Orthanc as a target: the distribution's configuration with only the changes the package
docstring lists, kept on loopback by the bind() shim."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from bench.loopback import free_port
from bench.network.names import DEST_AE, GET_AE, ORTHANC
from bench.network.targets import BenchError, Target, launch

DEFAULT_ORTHANC_CONFIG = Path("/etc/orthanc")


def orthanc_binary() -> str | None:
    found = shutil.which("Orthanc")
    if found:
        return found
    return "/usr/sbin/Orthanc" if os.access("/usr/sbin/Orthanc", os.X_OK) else None


def strip_json_comments(text: str) -> str:
    """Orthanc's configuration is JSON with // and /* */ comments; drop those outside strings."""
    out: list[str] = []
    index, in_string = 0, False
    while index < len(text):
        char = text[index]
        if in_string:
            out.append(char)
            if char == "\\":
                out.append(text[index + 1])
                index += 1
            elif char == '"':
                in_string = False
            index += 1
        elif char == '"':
            in_string = True
            out.append(char)
            index += 1
        elif text.startswith("//", index):
            end = text.find("\n", index)
            index = len(text) if end < 0 else end
        elif text.startswith("/*", index):
            end = text.find("*/", index + 2)
            index = len(text) if end < 0 else end + 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def orthanc_overrides(
    storage: Path, dicom_port: int, http_port: int, destination_port: int
) -> dict[str, object]:
    """Every deviation from the distribution's configuration (see the package docstring)."""
    return {
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        # A registered modality may use every DICOM command; the port is where a C-MOVE to it
        # goes, so only the destination's is real.
        "DicomModalities": {
            "bench-get": [GET_AE, "127.0.0.1", 104],
            "bench-dest": [DEST_AE, "127.0.0.1", destination_port],
        },
        "RemoteAccessAllowed": False,
    }


def write_orthanc_config(source: Path, target: Path, overrides: dict[str, object]) -> None:
    """Copy every *.json of the configuration folder, each override set in the file defining it.

    Orthanc refuses a key defined in two files, so overrides cannot go into a file of their own.
    """
    documents = {
        path.name: json.loads(strip_json_comments(path.read_text())) for path in sorted(source.glob("*.json"))
    }
    if not documents:
        raise BenchError(f"no *.json configuration in {source}")
    main = "orthanc.json" if "orthanc.json" in documents else max(documents, key=lambda n: len(documents[n]))
    for key, value in overrides.items():
        holder = next((name for name, doc in documents.items() if key in doc), main)
        current = documents[holder].get(key)
        documents[holder][key] = {**current, **value} if isinstance(current, dict) else value
    target.mkdir()
    for name, document in documents.items():
        (target / name).write_text(json.dumps(document, indent=2) + "\n")


def start_orthanc(
    workdir: Path, binary: str, config_source: Path, shim: Path, destination_port: int
) -> Target:
    storage = workdir / "orthanc-db"
    storage.mkdir()
    dicom_port, http_port = free_port(), free_port()
    config = workdir / "orthanc-config"
    overrides = orthanc_overrides(storage, dicom_port, http_port, destination_port)
    write_orthanc_config(config_source, config, overrides)
    ae_title = str(json.loads((config / "orthanc.json").read_text()).get("DicomAet", "ORTHANC"))
    log = workdir / "orthanc.log"
    process = launch([binary, str(config)], log, cwd=workdir, shim=shim)
    return Target(ORTHANC, ae_title, dicom_port, storage, process, log, (dicom_port, http_port))

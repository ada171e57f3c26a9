"""Benchmark DICOM network ingest (C-STORE) and retrieval (C-GET): the node against Orthanc (issue 3).

The node's codec speed says nothing about what a modality or a viewer sees on the wire, so this
drives both servers the way sites do, with the dcmtk clients: N parallel `storescu` associations
send a folder of files as they are (each file's own transfer syntax is proposed, nothing is
converted on the way), then N parallel `getscu` associations retrieve every study (STUDY level,
bit-preserving, `+B`). Each side is timed from the first client process start to the last client
process end. MB means bytes of the files sent, or of the files `getscu` wrote.

Every retrieved data set is compared with the one sent: byte-identical; converted (it came back
in another transfer syntax, with every non-binary element and the decoded pixels equal); or
differing. dcmtk 3.6.7's getscu offers a single transfer syntax per storage SOP class, Explicit
VR Little Endian by default, so a server must convert every instance stored in another one.
storescu re-encodes what it sends (undefined-length sequences get explicit lengths, for one), so
"sent" means the bytes on the wire: before the repetitions, the files are sent once to dcmtk's
`storescp +B`, which writes exactly what arrives, and those data sets are the reference.

    python bench/network_bench.py FOLDER [FOLDER ...] [--associations 10] [--repeat 3] [--limit N]
        [--no-wait-compressed] [--no-orthanc] [--plot bench/network_bench.png] [--markdown FILE]

Each repetition starts every target afresh on an empty temporary storage directory, on
127.0.0.1 and free ports, and stops it (SIGTERM, SIGKILL after a timeout) before the next. The
reported figures are medians over the repetitions.

storescu calls as BENCH_STORE, an AE title neither server knows (both let unknown AEs store by
default); getscu calls as BENCH_GET, registered with both servers as a viewer, since both refuse
C-GET to unknown AE titles by default.

scp-node runs as `scp-node serve --config <tmp>/config.yaml`; the file sets only network.host
(127.0.0.1), network.port, storage.data_dir and one access.peers entry (BENCH_GET, host
127.0.0.1, permissions [get]), so everything else is the embedded default (SQLite, in-process
compression worker, jpegxl, at most 10 associations); --node-set changes more, for diagnosis.
The node compresses in the background, so its ingest time covers the network ingest only. By
default (--wait-compressed) the benchmark then waits until `scp-node stats --json` shows no
instance `received` or `queued`, so that retrieval decodes from the compressed blobs; that wait
is reported as "compress s". It polls the SQLite index read-only and asks `scp-node stats` only
once that shows nothing pending, because each stats call costs about 2 CPU seconds here.
"server CPU s" is the user + system time the server process used during a phase.

Orthanc (`Orthanc` on PATH, or /usr/sbin/Orthanc) runs with the distribution's configuration
directory (/etc/orthanc: every *.json file in it, comments stripped) copied to a temporary
directory, with only these changes:

- StorageDirectory and IndexDirectory: a temporary directory (default /var/lib/orthanc/db-v6).
- DicomPort and HttpPort: free ports (default 4242 and 8042), so it runs beside anything else.
- DicomModalities: BENCH_GET registered as ["BENCH_GET", "127.0.0.1", 104] (default: none).
  Orthanc refuses C-GET from AE titles that are not registered (DicomAlwaysAllowGet is false);
  a registered modality may use every command. The port is only used for C-MOVE, never here.
- RemoteAccessAllowed: false, as in the default; it only guards the HTTP API.
- Orthanc 1.10 has no option to choose the listen address, and binds both ports to 0.0.0.0. The
  script therefore compiles a tiny LD_PRELOAD library (needs `cc`) whose bind() turns the
  wildcard address into 127.0.0.1 (and :: into ::1); without a compiler Orthanc is skipped.
- Its log goes to a file in the temporary directory instead of the package's --logdir.

The same library keeps the capturing storescp on loopback.

After start-up, both targets' listening sockets are read from /proc/net/tcp{,6}; a target that
listens on anything but loopback is stopped and the run aborts.

The exit status is 1 when scp-node failed to store an instance, lost one, or returned different
content; Orthanc's failures are only reported.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import numpy as np
import yaml
from loopback import ShimUnavailable, build_bind_shim
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from tables import markdown_table, text_table

from scp_node.config import load_config
from scp_node.imaging.dicom_layout import dataset_offset
from scp_node.research.image_corpus import iter_files

# storescu calls as a modality that neither server knows (both let anyone store); getscu as a
# viewer registered with each server, because both refuse C-GET to unknown AE titles by default.
STORE_AE = "BENCH_STORE"
GET_AE = "BENCH_GET"
NODE = "scp-node"
ORTHANC = "Orthanc"
MB = 1e6
# dcmtk's association negotiation allows at most 128 presentation contexts per association.
MAX_CONTEXTS = 128
DEFAULT_ORTHANC_CONFIG = Path("/etc/orthanc")
T = TypeVar("T")



class BenchError(RuntimeError):
    """A target could not be started, confined to loopback or measured."""


# ---------------------------------------------------------------------------------------------
# The files to send


@dataclass(frozen=True)
class DicomFile:
    path: Path
    size: int
    sop_class: str
    sop_uid: str
    study_uid: str
    transfer_syntax: str
    dataset_sha256: str


@dataclass
class Corpus:
    files: list[DicomFile] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    seen: int = 0
    # SOP Instance UID -> SHA-256 of the data set as storescu put it on the wire (capture_wire).
    wire_sha256: dict[str, str] = field(default_factory=dict)

    def reference_sha256(self, item: DicomFile) -> str:
        return self.wire_sha256.get(item.sop_uid, item.dataset_sha256)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def studies(self) -> dict[str, list[DicomFile]]:
        by_study: dict[str, list[DicomFile]] = {}
        for item in self.files:
            by_study.setdefault(item.study_uid, []).append(item)
        return by_study


def read_file(path: Path) -> DicomFile | str:
    """The file's identity and dataset digest, or why it is not sent."""
    data = path.read_bytes()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, TypeError, KeyError) as exc:
        return f"not readable as DICOM ({type(exc).__name__})"
    syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
    if not syntax:
        return "no File Meta header (transfer syntax unknown)"
    keys = {k: str(ds.get(k, "") or "") for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID")}
    missing = [k for k, value in keys.items() if not value]
    if missing:
        return f"no {missing[0]}"
    try:
        offset = dataset_offset(data)
    except Exception as exc:  # pydicom raises several types on a broken meta group
        return f"unreadable File Meta header ({type(exc).__name__})"
    return DicomFile(
        path=path,
        size=len(data),
        sop_class=keys["SOPClassUID"],
        sop_uid=keys["SOPInstanceUID"],
        study_uid=keys["StudyInstanceUID"],
        transfer_syntax=syntax,
        dataset_sha256=hashlib.sha256(data[offset:]).hexdigest(),
    )


def load_corpus(folders: Iterable[Path], limit: int | None) -> Corpus:
    """One file per SOP Instance UID (a second copy would overwrite or be refused), in path order."""
    corpus = Corpus()
    uids: set[str] = set()
    for path in iter_files(folders):
        corpus.seen += 1
        item = read_file(path)
        if isinstance(item, str):
            corpus.skipped[item] += 1
        elif item.sop_uid in uids:
            corpus.skipped["duplicate SOP Instance UID (first file kept)"] += 1
        else:
            uids.add(item.sop_uid)
            corpus.files.append(item)
    if limit is not None and limit < len(corpus.files):
        # Evenly spaced, so a limited run keeps the folders' mix instead of the first folder only.
        kept = [corpus.files[i * len(corpus.files) // limit] for i in range(limit)]
        corpus.skipped["left out by --limit"] += len(corpus.files) - len(kept)
        corpus.files = kept
    return corpus


def balanced_chunks(items: Sequence[T], count: int, weight: Callable[[T], int]) -> list[list[T]]:
    """At most `count` non-empty chunks of about equal weight (largest first into the lightest)."""
    chunks: list[list[T]] = [[] for _ in range(max(1, min(count, len(items))))]
    loads = [0] * len(chunks)
    for item in sorted(items, key=weight, reverse=True):
        lightest = loads.index(min(loads))
        chunks[lightest].append(item)
        loads[lightest] += weight(item)
    return [chunk for chunk in chunks if chunk]


# ---------------------------------------------------------------------------------------------
# Client processes


@dataclass(frozen=True)
class ClientRun:
    """One dcmtk client process: what it was given, its exit status, its log, when it ran."""

    command: list[str]
    returncode: int
    log: Path
    started: float
    ended: float


def run_clients(
    jobs: Sequence[Sequence[list[str]]], logs: Sequence[Sequence[Path]], timeout: float
) -> list[ClientRun]:
    """Run the jobs in parallel, each job's commands one after the other; every process's record."""

    def run_job(index: int) -> list[ClientRun]:
        runs = []
        for command, log in zip(jobs[index], logs[index], strict=True):
            started = time.perf_counter()
            with log.open("w") as handle:
                try:
                    code = subprocess.run(
                        command, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout, check=False
                    ).returncode
                except subprocess.TimeoutExpired:
                    code = -9
                    handle.write(f"\nnetwork_bench: killed after {timeout} s\n")
            runs.append(ClientRun(command, code, log, started, time.perf_counter()))
        return runs

    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        return [run for runs in pool.map(run_job, range(len(jobs))) for run in runs]


def wall_seconds(runs: Sequence[ClientRun]) -> float:
    return max(r.ended for r in runs) - min(r.started for r in runs)


def storescu_config(files: Sequence[DicomFile]) -> str:
    """A storescu profile proposing exactly each file's (SOP class, transfer syntax) pair."""
    syntaxes = sorted({f.transfer_syntax for f in files})
    pairs = sorted({(f.sop_class, f.transfer_syntax) for f in files})
    lines = ["[[TransferSyntaxes]]"]
    for index, syntax in enumerate(syntaxes):
        lines += [f"[TS{index}]", f"TransferSyntax1 = {syntax}"]
    lines += ["[[PresentationContexts]]", "[Bench]"]
    for index, (sop_class, syntax) in enumerate(pairs, start=1):
        lines.append(f"PresentationContext{index} = {sop_class}\\TS{syntaxes.index(syntax)}")
    lines += ["[[Profiles]]", "[Bench]", "PresentationContexts = Bench", ""]
    return "\n".join(lines)


def context_batches(files: Sequence[DicomFile]) -> list[list[DicomFile]]:
    """Split a chunk so that no association needs more than MAX_CONTEXTS presentation contexts."""
    batches: list[list[DicomFile]] = [[]]
    pairs: set[tuple[str, str]] = set()
    for item in files:
        pair = (item.sop_class, item.transfer_syntax)
        if pair not in pairs and len(pairs) == MAX_CONTEXTS:
            batches.append([])
            pairs = set()
        pairs.add(pair)
        batches[-1].append(item)
    return batches


STORE_RESPONSE = re.compile(r"Received Store Response \((\w+)")


def stored_paths(log: Path) -> set[str]:
    """Files storescu -v reports as stored (status Success or Warning)."""
    stored: set[str] = set()
    current = None
    for line in log.read_text(errors="replace").splitlines():
        if "Sending file: " in line:
            current = line.split("Sending file: ", 1)[1].strip()
        elif (match := STORE_RESPONSE.search(line)) and current is not None:
            if match.group(1) in ("Success", "Warning"):
                stored.add(current)
            current = None
    return stored


def failure_lines(log: Path) -> list[str]:
    return [
        line.strip() for line in log.read_text(errors="replace").splitlines() if line.startswith(("E:", "F:"))
    ]


# ---------------------------------------------------------------------------------------------
# Targets


@dataclass
class Target:
    """A running server: how to reach it and where it keeps its data."""

    name: str
    ae_title: str
    port: int
    storage: Path
    process: subprocess.Popen
    log: Path
    ports: tuple[int, ...]
    node_config: Path | None = None
    stopped: bool = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process, all threads (NaN where unknown)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def echo(ae_title: str, port: int) -> bool:
    result = subprocess.run(
        ["echoscu", "-aet", STORE_AE, "-aec", ae_title, "-to", "2", "127.0.0.1", str(port)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return result.returncode == 0


def wait_ready(target: Target, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not target.alive():
            raise BenchError(
                f"{target.name} exited with {target.process.returncode}:\n{log_tail(target.log)}"
            )
        if echo(target.ae_title, target.port):
            return
        time.sleep(0.25)
    raise BenchError(f"{target.name} did not answer C-ECHO on port {target.port} in {timeout} s")


def _proc_address(text: str) -> str:
    raw = bytes.fromhex(text)
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]  # four host-order 32-bit words
    return str(ipaddress.IPv6Address(b"".join(words)))


def listen_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port`, from /proc/net/tcp{,6}."""
    found: set[str] = set()
    for table in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(_proc_address(address))
    return found


def check_loopback(target: Target) -> None:
    if not Path("/proc/net/tcp").exists():
        print(f"warning: cannot check {target.name}'s listen addresses (no /proc/net/tcp)", file=sys.stderr)
        return
    for port in target.ports:
        addresses = listen_addresses(port)
        if not addresses:
            raise BenchError(f"{target.name}: nothing listens on port {port}")
        public = sorted(a for a in addresses if not ipaddress.ip_address(a).is_loopback)
        if public:
            raise BenchError(f"{target.name} listens on {', '.join(public)} port {port}, not loopback only")


def stop(target: Target, timeout: float) -> None:
    if target.stopped:
        return
    target.stopped = True
    if target.alive():
        target.process.send_signal(signal.SIGTERM)
        try:
            target.process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"{target.name} ignored SIGTERM for {timeout} s: SIGKILL", file=sys.stderr)
            target.process.kill()
            target.process.wait()
    with target.log.open("a") as handle:
        handle.write(f"\nnetwork_bench: exit status {target.process.returncode}\n")


def log_tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def scp_node_binary() -> str:
    beside = Path(sys.executable).parent / "scp-node"
    found = str(beside) if beside.exists() else shutil.which("scp-node")
    if not found:
        raise BenchError("scp-node is not installed (run from the project's virtual environment)")
    return found


def node_settings(port: int, storage: Path, extra: Sequence[str]) -> dict:
    """The node's config.yaml: loopback, a free port, a fresh data_dir, the getscu AE as a peer,
    and whatever --node-set adds (dotted keys, YAML values); everything else is the default."""
    settings: dict = {
        "network": {"host": "127.0.0.1", "port": port},
        "access": {"peers": [{"ae_title": GET_AE, "host": "127.0.0.1", "permissions": ["get"]}]},
        "storage": {"data_dir": str(storage)},
    }
    for assignment in extra:
        dotted, _, value = assignment.partition("=")
        section = settings
        *parents, leaf = dotted.split(".")
        for key in parents:
            section = section.setdefault(key, {})
        section[leaf] = yaml.safe_load(value)
    return settings


def start_node(workdir: Path, binary: str, extra: Sequence[str] = ()) -> Target:
    port = free_port()
    storage = workdir / "data"
    config = workdir / "config.yaml"
    settings = node_settings(port, storage, extra)
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    ae_title = load_config(config).network.ae_title
    log = workdir / "scp-node.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [binary, "serve", "--config", str(config)],
            cwd=workdir,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches the benchmark, which then stops the server
        )
    return Target(NODE, ae_title, port, storage, process, log, (port,), config)


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


def orthanc_overrides(storage: Path, dicom_port: int, http_port: int) -> dict[str, object]:
    """Every deviation from the distribution's configuration (see the module docstring)."""
    return {
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        # A registered modality may use every DICOM command; the port is only used by C-MOVE.
        "DicomModalities": {"bench-get": [GET_AE, "127.0.0.1", 104]},
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


def start_orthanc(workdir: Path, binary: str, config_source: Path, shim: Path) -> Target:
    storage = workdir / "orthanc-db"
    storage.mkdir()
    dicom_port, http_port = free_port(), free_port()
    config = workdir / "orthanc-config"
    write_orthanc_config(config_source, config, orthanc_overrides(storage, dicom_port, http_port))
    ae_title = str(json.loads((config / "orthanc.json").read_text()).get("DicomAet", "ORTHANC"))
    log = workdir / "orthanc.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [binary, str(config)],
            cwd=workdir,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LD_PRELOAD": str(shim)},
            start_new_session=True,
        )
    return Target(ORTHANC, ae_title, dicom_port, storage, process, log, (dicom_port, http_port))


def tree_bytes(path: Path) -> int:
    """Apparent size of every file under `path` (data, index, journals)."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            with suppress(FileNotFoundError):  # a temporary file went away while walking
                total += (Path(folder) / name).lstat().st_size
    return total


def node_stats(binary: str, config: Path) -> dict:
    result = subprocess.run(
        [binary, "stats", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise BenchError(f"scp-node stats failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def pending_in_index(data_dir: Path) -> int | None:
    """Instances still received or queued, read cheaply from the node's SQLite index (None: unknown).

    `scp-node stats` costs about 2 CPU seconds per call on this machine, which would compete with
    the compression it is waiting for; this query costs nothing and only decides when to ask it.
    """
    database = data_dir / "index.sqlite"
    try:
        with closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True, timeout=5)) as connection:
            row = connection.execute(
                "SELECT count(*) FROM instance WHERE state IN ('received', 'queued')"
            ).fetchone()
    except sqlite3.Error:
        return None
    return int(row[0])


def wait_compressed(target: Target, binary: str, timeout: float, poll: float) -> tuple[float | None, dict]:
    """Seconds until `scp-node stats` shows no instance received or queued (None on timeout)."""
    assert target.node_config is not None
    started = time.perf_counter()
    while True:
        pending = pending_in_index(target.storage)
        if pending in (0, None):
            done = time.perf_counter()  # the stats call below takes seconds: not compression time
            stats = node_stats(binary, target.node_config)
            if stats["by_state"].get("received", 0) + stats["by_state"].get("queued", 0) == 0:
                return (done if pending == 0 else time.perf_counter()) - started, stats
        if not target.alive():
            raise BenchError(f"scp-node exited while compressing:\n{log_tail(target.log)}")
        if time.perf_counter() - started > timeout:
            return None, node_stats(binary, target.node_config)
        time.sleep(poll)


# The node logs each storage context a C-GET requester offers and it does not support (getscu
# offers every storage class dcmtk knows): expected, so not counted as problems.
EXPECTED_LOG_LINES = re.compile(r"presentation context .* rejected")
LOG_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\d [\d:,]+ |[EWI]\d{4} [\d:.]+ )")


def log_problems(target: Target) -> list[str]:
    """Distinct error and warning lines of the server's log, timestamps removed."""
    lines = target.log.read_text(errors="replace").splitlines()
    if target.name == NODE:
        found = [line for line in lines if re.search(r" (ERROR|WARNING|CRITICAL) |^Traceback", line)]
        found = [line for line in found if not EXPECTED_LOG_LINES.search(line)]
    else:
        found = [line for line in lines if line.startswith("E")]
    return list(dict.fromkeys(LOG_TIMESTAMP.sub("", line) for line in found))


def dataset_digests(folder: Path) -> dict[str, str]:
    """SOP Instance UID -> SHA-256 of the data set (after the File Meta group) of each file."""
    digests = {}
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        digests[uid] = hashlib.sha256(data[dataset_offset(data) :]).hexdigest()
    return digests


def capture_wire(corpus: Corpus, root: Path, shim: Path, args: argparse.Namespace) -> None:
    """Record what storescu really sends, as the reference for "byte-exact" retrieval.

    storescu re-encodes a data set as it sends it (undefined-length sequences get explicit
    lengths, for one), so a server can never return the file's own bytes. dcmtk's storescp in
    bit-preserving mode writes what arrived; its digests replace the files' own where present.
    """
    workdir = Path(tempfile.mkdtemp(prefix="capture-", dir=root))
    received = workdir / "received"
    received.mkdir()
    port = free_port()
    log = workdir / "storescp.log"
    try:
        with log.open("w") as handle:
            process = subprocess.Popen(
                ["storescp", "-aet", "CAPTURE", "+B", "+xa", "-od", str(received), str(port)],
                stdout=handle,
                stderr=subprocess.STDOUT,
                env={**os.environ, "LD_PRELOAD": str(shim)},
                start_new_session=True,
            )
        target = Target("storescp", "CAPTURE", port, received, process, log, (port,))
        try:
            wait_ready(target, args.start_timeout)
            check_loopback(target)
            ingest(target, corpus, 1, workdir, args.client_timeout)
        finally:
            stop(target, args.stop_timeout)
        corpus.wire_sha256 = dataset_digests(received)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# One repetition on one target


@dataclass
class Phase:
    instances: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    processes: int = 0
    server_cpu: float = float("nan")  # CPU seconds the server process used meanwhile

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds if self.seconds else float("nan")

    @property
    def mb_per_second(self) -> float:
        return self.bytes / MB / self.seconds if self.seconds else float("nan")


@dataclass
class Retrieved:
    exact: int = 0  # data set bytes identical to the file sent
    converted: int = 0  # another transfer syntax than the file sent
    differing: int = 0  # same transfer syntax and other bytes, or converted with other content
    unexpected: int = 0  # an instance that was not stored in this run


@dataclass
class Measurement:
    target: str
    repetition: int
    ingest: Phase
    retrieve: Phase
    content: Retrieved
    stored_after_ingest: int
    stored_final: int
    compress_seconds: float | None = None
    compress_cpu: float | None = None
    node_stats: dict | None = None
    send_failures: dict[str, list[str]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)


def ingest(
    target: Target, corpus: Corpus, associations: int, workdir: Path, timeout: float
) -> tuple[Phase, list[DicomFile], dict[str, list[str]]]:
    """Send every file once: one client per chunk, one association per presentation-context batch."""
    jobs, logs = [], []
    batch_of: dict[Path, list[DicomFile]] = {}
    for index, chunk in enumerate(balanced_chunks(corpus.files, associations, lambda f: f.size)):
        chunk.sort(key=lambda f: str(f.path))
        commands, job_logs = [], []
        for batch_index, batch in enumerate(context_batches(chunk)):
            profile = workdir / f"storescu-{index}-{batch_index}.cfg"
            profile.write_text(storescu_config(batch))
            command = ["storescu", "-v", "-nh", "-aet", STORE_AE, "-aec", target.ae_title]
            command += ["-xf", str(profile), "Bench", "127.0.0.1", str(target.port)]
            commands.append(command + [str(f.path) for f in batch])
            job_logs.append(workdir / f"storescu-{index}-{batch_index}.log")
            batch_of[job_logs[-1]] = batch
        jobs.append(commands)
        logs.append(job_logs)
    runs = run_clients(jobs, logs, timeout)
    sent_paths: set[str] = set()
    failures: dict[str, list[str]] = {}
    for run in runs:
        stored = stored_paths(run.log)
        sent_paths |= stored
        errors = failure_lines(run.log) or [f"storescu exit status {run.returncode}"]
        failures.update({str(f.path): errors[:3] for f in batch_of[run.log] if str(f.path) not in stored})
    sent = [f for f in corpus.files if str(f.path) in sent_paths]
    phase = Phase(
        instances=len(sent),
        failed=len(corpus.files) - len(sent),
        bytes=sum(f.size for f in sent),
        seconds=wall_seconds(runs),
        processes=len(runs),
    )
    return phase, sent, failures


# Binary VRs hold words in the sender's byte order, so they legitimately change with the syntax.
BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW", "US or OW"}
# JPEG baseline and extended, JPEG-LS near-lossless, JPEG 2000 (lossy or lossless).
LOSSY_CAPABLE = {f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 81, 91)}


def content_difference(original: Path, original_syntax: str, retrieved: Path) -> str | None:
    """Why a data set that came back in another transfer syntax is not the one sent (None: it is).

    Every non-binary element of the original must come back with the same value, and the decoded
    pixels must be equal unless the original syntax may be lossy; the photometric interpretation
    may change (JPEG 2000 YBR_RCT/ICT decodes to RGB), and group lengths change with the encoding.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            source, copy = dcmread(original), dcmread(retrieved)
        except Exception as exc:  # a broken retrieved file is exactly what this reports
            return f"unreadable: {type(exc).__name__}: {exc}"
        for element in source:
            if element.tag in (0x7FE00010, 0x00280004) or element.VR in BINARY_VRS:
                continue
            if element.tag.element == 0:  # a group length changes with the encoding
                continue
            if element.tag not in copy:
                return f"{element.tag} missing"
            if copy[element.tag].value != element.value:
                return f"{element.keyword or element.tag} {element.value!r} -> {copy[element.tag].value!r}"
        if "PixelData" not in source or original_syntax in LOSSY_CAPABLE:
            return None  # lossy pixels: decoders may legitimately differ in the last bit
        try:
            equal = np.array_equal(source.pixel_array, copy.pixel_array)
        except Exception as exc:
            return f"pixels not decodable: {type(exc).__name__}: {exc}"
        return None if equal else "decoded pixels differ"


def query_file(path: Path, study_uid: str) -> Path:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    ds.save_as(path, implicit_vr=False, little_endian=True)
    return path


def retrieve(
    target: Target,
    corpus: Corpus,
    sent: Sequence[DicomFile],
    associations: int,
    workdir: Path,
    timeout: float,
) -> tuple[Phase, Retrieved, list[str], list[str]]:
    by_study: dict[str, list[DicomFile]] = {}
    for item in sent:
        by_study.setdefault(item.study_uid, []).append(item)
    chunks = balanced_chunks(sorted(by_study), associations, lambda uid: sum(f.size for f in by_study[uid]))
    jobs, logs, outs = [], [], []
    for index, studies in enumerate(chunks):
        out = workdir / f"get-{index}"
        out.mkdir()
        queries = [str(query_file(workdir / f"query-{index}-{n}.dcm", uid)) for n, uid in enumerate(studies)]
        command = ["getscu", "-v", "-S", "-aet", GET_AE, "-aec", target.ae_title, "+B", "-od", str(out)]
        jobs.append([[*command, "127.0.0.1", str(target.port), *queries]])
        logs.append([workdir / f"getscu-{index}.log"])
        outs.append(out)
    runs = run_clients(jobs, logs, timeout) if jobs else []
    expected = {f.sop_uid: f for f in sent}
    received: dict[str, tuple[Path, int]] = {}
    content = Retrieved()
    differing = []
    for out in outs:
        for path in sorted(out.iterdir()):
            data = path.read_bytes()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = dcmread(path, stop_before_pixels=True)
            uid = str(ds.SOPInstanceUID)
            original = expected.get(uid)
            if original is None or uid in received:
                content.unexpected += 1
                continue
            received[uid] = (path, len(data))
            if str(ds.file_meta.TransferSyntaxUID) != original.transfer_syntax:
                problem = content_difference(original.path, original.transfer_syntax, path)
                if problem is None:
                    content.converted += 1
                else:
                    content.differing += 1
                    differing.append(
                        f"{original.path} (converted to {ds.file_meta.TransferSyntaxUID}: {problem})"
                    )
            elif hashlib.sha256(data[dataset_offset(data) :]).hexdigest() == corpus.reference_sha256(
                original
            ):
                content.exact += 1
            else:
                content.differing += 1
                differing.append(f"{original.path} (same transfer syntax, other bytes)")
        shutil.rmtree(out)
    missing = sorted(str(f.path) for uid, f in expected.items() if uid not in received)
    phase = Phase(
        instances=len(received),
        failed=len(missing),
        bytes=sum(size for _, size in received.values()),
        seconds=wall_seconds(runs) if runs else 0.0,
        processes=len(runs),
    )
    return phase, content, missing, differing


def measure(
    name: str, repetition: int, corpus: Corpus, args: argparse.Namespace, root: Path, shim: Path | None
) -> Measurement:
    workdir = Path(tempfile.mkdtemp(prefix=f"{name.lower()}-{repetition}-", dir=root))
    target = None
    try:
        if name == NODE:
            target = start_node(workdir, args.scp_node, args.node_set)
        else:
            assert shim is not None
            target = start_orthanc(workdir, args.orthanc, args.orthanc_config, shim)
        wait_ready(target, args.start_timeout)
        check_loopback(target)
        cpu = target.cpu_seconds()
        ingested, sent, send_failures = ingest(
            target, corpus, args.associations, workdir, args.client_timeout
        )
        ingested.server_cpu = target.cpu_seconds() - cpu
        stored_after_ingest = tree_bytes(target.storage)
        compress_seconds, compress_cpu, stats = None, None, None
        if name == NODE and args.wait_compressed:
            cpu = target.cpu_seconds()
            compress_seconds, stats = wait_compressed(target, args.scp_node, args.compress_timeout, args.poll)
            compress_cpu = target.cpu_seconds() - cpu
            if compress_seconds is None:
                print(f"  {NODE}: still compressing after {args.compress_timeout} s", file=sys.stderr)
        stored_final = tree_bytes(target.storage)
        cpu = target.cpu_seconds()
        retrieved, content, missing, differing = retrieve(
            target, corpus, sent, args.associations, workdir, args.client_timeout
        )
        retrieved.server_cpu = target.cpu_seconds() - cpu
        if name == NODE and stats is None:
            stats = node_stats(args.scp_node, target.node_config)
        if not target.alive():
            raise BenchError(f"{name} exited during the benchmark:\n{log_tail(target.log)}")
        stop(target, args.stop_timeout)  # first, so that the log is complete
        return Measurement(
            target=name,
            repetition=repetition,
            ingest=ingested,
            retrieve=retrieved,
            content=content,
            stored_after_ingest=stored_after_ingest,
            stored_final=stored_final,
            compress_seconds=compress_seconds,
            compress_cpu=compress_cpu,
            node_stats=stats,
            send_failures=send_failures,
            missing=missing,
            differing=differing,
            log_problems=log_problems(target),
        )
    finally:
        if target is not None:
            stop(target, args.stop_timeout)
            if args.keep_logs:
                keep = args.keep_logs / f"{name}-{repetition}"
                keep.mkdir(parents=True, exist_ok=True)
                for log in [target.log, *workdir.glob("*.log"), *workdir.glob("*.cfg")]:
                    shutil.copy(log, keep / log.name)
        shutil.rmtree(workdir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Report


def median(values: Iterable[float | None]) -> float:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else float("nan")


def number(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN != NaN


def ratio(a: float, b: float) -> str:
    return "-" if a != a or b != b or not b else f"{a / b:.2f}"


def repetition_rows(results: Sequence[Measurement]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    header = ("rep", "target", "ingest s", "in inst/s", "in MB/s", "compress s")
    header += ("get s", "get inst/s", "get MB/s", "stored MB")
    rows = [
        (
            str(m.repetition + 1),
            m.target,
            number(m.ingest.seconds, 2),
            number(m.ingest.per_second),
            number(m.ingest.mb_per_second),
            number(m.compress_seconds if m.compress_seconds is not None else float("nan")),
            number(m.retrieve.seconds, 2),
            number(m.retrieve.per_second),
            number(m.retrieve.mb_per_second),
            number(m.stored_final / MB),
        )
        for m in results
    ]
    return header, rows


def summary_rows(by_target: dict[str, list[Measurement]]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    header = ("target", "phase", "assoc", "instances", "failed", "MB", "s", "inst/s", "MB/s", "server CPU s")
    rows = []
    for name, runs in by_target.items():
        for phase_name, phases in (
            ("ingest", [m.ingest for m in runs]),
            ("retrieve", [m.retrieve for m in runs]),
        ):
            rows.append(
                (
                    name,
                    phase_name,
                    number(median(p.processes for p in phases), 0),
                    number(median(p.instances for p in phases), 0),
                    number(median(p.failed for p in phases), 0),
                    number(median(p.bytes / MB for p in phases)),
                    number(median(p.seconds for p in phases), 2),
                    number(median(p.per_second for p in phases)),
                    number(median(p.mb_per_second for p in phases)),
                    number(median(p.server_cpu for p in phases)),
                )
            )
    return header, rows


def content_rows(by_target: dict[str, list[Measurement]]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    header = ("target", "retrieved", "byte-exact", "converted", "differing", "missing", "unexpected")
    rows = [
        (
            name,
            number(median(m.retrieve.instances for m in runs), 0),
            number(median(m.content.exact for m in runs), 0),
            number(median(m.content.converted for m in runs), 0),
            number(median(m.content.differing for m in runs), 0),
            number(median(len(m.missing) for m in runs), 0),
            number(median(m.content.unexpected for m in runs), 0),
        )
        for name, runs in by_target.items()
    ]
    return header, rows


def storage_rows(
    by_target: dict[str, list[Measurement]],
) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    header = (
        "target",
        "sent MB",
        "stored MB after ingest",
        "stored MB before get",
        "sent/stored",
        "compress s",
        "compress CPU s",
    )
    rows = []
    for name, runs in by_target.items():
        sent = median(m.ingest.bytes / MB for m in runs)
        final = median(m.stored_final / MB for m in runs)
        rows.append(
            (
                name,
                number(sent),
                number(median(m.stored_after_ingest / MB for m in runs)),
                number(final),
                ratio(sent, final),
                number(median(m.compress_seconds for m in runs)),
                number(median(m.compress_cpu for m in runs)),
            )
        )
    return header, rows


COMPARED: list[tuple[str, Callable[[Measurement], float], int]] = [
    ("ingest inst/s", lambda m: m.ingest.per_second, 1),
    ("ingest MB/s", lambda m: m.ingest.mb_per_second, 1),
    ("retrieve inst/s", lambda m: m.retrieve.per_second, 1),
    ("retrieve MB/s", lambda m: m.retrieve.mb_per_second, 1),
    ("stored MB after ingest", lambda m: m.stored_after_ingest / MB, 1),
    ("stored MB before get", lambda m: m.stored_final / MB, 1),
    ("instances sent", lambda m: m.ingest.instances, 0),
    ("instances retrieved", lambda m: m.retrieve.instances, 0),
]


def comparison_rows(by_target: dict[str, list[Measurement]]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    header = ("metric", NODE, ORTHANC, f"{NODE}/{ORTHANC}")
    rows = []
    for label, metric, digits in COMPARED:
        node = median(metric(m) for m in by_target[NODE])
        other = median(metric(m) for m in by_target[ORTHANC])
        rows.append((label, number(node, digits), number(other, digits), ratio(node, other)))
    return header, rows


def run_lines(
    started: datetime, load: float, corpus: Corpus, args: argparse.Namespace, orthanc: str | None
) -> list[str]:
    studies = len(corpus.studies())
    syntaxes = Counter(f.transfer_syntax for f in corpus.files)
    lines = [
        f"command: python {shlex.join(sys.argv)}",
        f"date: {started.isoformat(timespec='seconds')}",
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"load average at start {load:.2f} (other processes compete for the cores)",
        f"clients: {tool_version('storescu')}, parallel associations: {args.associations}, "
        f"repetitions: {args.repeat} (medians reported), wait for compression: {args.wait_compressed}",
        f"orthanc: {orthanc or 'not run'}",
        f"scp-node executable: {args.scp_node}",
        f"code in this repository: {args.code_state}",
        f"scp-node settings changed by --node-set: {', '.join(args.node_set) or 'none'}",
        f"files: {corpus.seen} read, {len(corpus.files)} to send "
        f"({corpus.bytes / MB:.1f} MB, {studies} studies)",
        "transfer syntaxes sent: " + ", ".join(f"{uid} x{count}" for uid, count in syntaxes.most_common()),
    ]
    lines += [f"skipped {count}: {reason}" for reason, count in corpus.skipped.most_common()]
    rewritten = sum(
        corpus.wire_sha256.get(f.sop_uid, f.dataset_sha256) != f.dataset_sha256 for f in corpus.files
    )
    lines.append(
        f"byte-exact reference: the data sets as storescu sent them, captured by storescp +B for "
        f"{sum(f.sop_uid in corpus.wire_sha256 for f in corpus.files)} files (else the file itself); "
        f"storescu re-encoded {rewritten} of them on the way"
    )
    return lines


REPOSITORY = Path(__file__).resolve().parents[1]


def code_state() -> str:
    """The node's code as run: commit, modified files and a digest of scp_node/ and workers/."""
    digest = hashlib.sha256()
    for path in sorted([*REPOSITORY.glob("scp_node/**/*.py"), *REPOSITORY.glob("workers/**/*.py")]):
        digest.update(str(path.relative_to(REPOSITORY)).encode() + b"\0" + path.read_bytes())

    def git(*command: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(REPOSITORY), *command], capture_output=True, text=True, check=False
        )
        return result.stdout.rstrip() if result.returncode == 0 else "?"

    modified = git("status", "--porcelain", "--", "scp_node", "workers").splitlines()
    changes = ", ".join(line[3:] for line in modified) or "none"
    commit = git("rev-parse", "--short", "HEAD")
    return f"commit {commit}, uncommitted changes: {changes}, digest {digest.hexdigest()[:12]}"


def tool_version(binary: str) -> str:
    try:
        output = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return f"{binary} (not found)"
    match = re.search(r"\$dcmtk: (\S+ v\S+)", output) or re.search(r"^(Orthanc \S+)", output, re.M)
    return match.group(1) if match else binary


def problem_lines(results: Sequence[Measurement]) -> list[str]:
    """Everything that went wrong, per target, over all repetitions (each distinct line once)."""
    lines: list[str] = []
    for name in dict.fromkeys(m.target for m in results):
        runs = [m for m in results if m.target == name]
        failed = {path: why for m in runs for path, why in m.send_failures.items()}
        lines += [f"{name}: not stored: {path}: {' | '.join(why)}" for path, why in sorted(failed.items())]
        lines += [
            f"{name}: stored but not retrieved: {p}" for p in sorted({p for m in runs for p in m.missing})
        ]
        lines += [
            f"{name}: retrieved with different content: {p}"
            for p in sorted({p for m in runs for p in m.differing})
        ]
        problems = list(dict.fromkeys(line for m in runs for line in m.log_problems))
        if problems:
            lines.append(f"{name}: {len(problems)} distinct error/warning log lines, the first ones follow")
            lines += [f"{name} log: {line[:300]}" for line in problems[:10]]
    return lines


def stats_lines(results: Sequence[Measurement]) -> list[str]:
    lines = []
    for m in results:
        if m.node_stats:
            stats = m.node_stats
            lines.append(
                f"{NODE} rep {m.repetition + 1} index: by_state {stats.get('by_state')}, "
                f"by_codec {stats.get('by_codec')}, received_bytes {stats.get('received_bytes')}, "
                f"stored_bytes {stats.get('stored_bytes')}, "
                f"compression_ratio {stats.get('compression_ratio')}"
            )
    return lines


def sections(header: list[str], results: Sequence[Measurement]) -> list[tuple[str, tuple, list]]:
    by_target: dict[str, list[Measurement]] = {}
    for m in results:
        by_target.setdefault(m.target, []).append(m)
    parts = [
        ("Per repetition", *repetition_rows(results)),
        ("Throughput (medians)", *summary_rows(by_target)),
        ("Retrieved data sets compared with those sent (medians)", *content_rows(by_target)),
        (
            "Storage directory size (medians; data, index and journals; with --wait-compressed "
            "'before get' is after compression)",
            *storage_rows(by_target),
        ),
    ]
    if NODE in by_target and ORTHANC in by_target:
        parts.append((f"Comparison (medians, same run): {NODE}/{ORTHANC}", *comparison_rows(by_target)))
    return parts


def report_text(header: list[str], results: Sequence[Measurement]) -> str:
    parts = ["\n".join(header)]
    parts += [f"{title}\n{text_table(h, rows)}" for title, h, rows in sections(header, results)]
    parts.append("\n".join(stats_lines(results)))
    parts.append("\n".join(problem_lines(results)) or "no failures, no differing content, no log errors")
    return "\n\n".join(p for p in parts if p) + "\n"


def report_markdown(header: list[str], results: Sequence[Measurement]) -> str:
    parts = ["\n".join(f"- {line}" for line in header)]
    parts += [f"#### {title}\n\n{markdown_table(h, rows)}" for title, h, rows in sections(header, results)]
    parts.append("\n".join(f"- {line}" for line in stats_lines(results)))
    problems = problem_lines(results)
    parts.append(
        "\n".join(f"- {line}" for line in problems) or "No failures, no differing content, no log errors."
    )
    return "\n\n".join(p for p in parts if p) + "\n"


def plot(results: Sequence[Measurement], path: Path) -> None:
    """One panel per metric, one bar per target (medians); the storage panel also shows the input."""
    names = list(dict.fromkeys(m.target for m in results))
    colours = {NODE: "tab:blue", ORTHANC: "tab:orange"}
    panels = [
        ("ingest instances/s", lambda m: m.ingest.per_second),
        ("ingest MB/s", lambda m: m.ingest.mb_per_second),
        ("retrieve instances/s", lambda m: m.retrieve.per_second),
        ("retrieve MB/s", lambda m: m.retrieve.mb_per_second),
    ]
    figure = Figure(figsize=(16, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels) + 1, gridspec_kw={"width_ratios": [1] * len(panels) + [1.8]})
    for ax, (title, metric) in zip(axes, panels, strict=False):
        values = [median(metric(m) for m in results if m.target == n) for n in names]
        bars = ax.bar(names, values, color=[colours.get(n, "grey") for n in names])
        ax.bar_label(bars, fmt="%.1f")
        ax.margins(y=0.15)
        ax.set_title(f"{title}\n(higher is better)", fontsize=9)
    labels, values, colors = ["sent"], [median(m.ingest.bytes / MB for m in results)], ["grey"]
    for n in names:
        runs = [m for m in results if m.target == n]
        labels.append(f"{n}\nafter ingest")
        values.append(median(m.stored_after_ingest / MB for m in runs))
        colors.append(colours.get(n, "grey"))
        if any(m.compress_seconds is not None for m in runs):
            labels.append(f"{n}\nafter compression")
            values.append(median(m.stored_final / MB for m in runs))
            colors.append(colours.get(n, "grey"))
    bars = axes[-1].bar(range(len(labels)), values, color=colors)
    axes[-1].bar_label(bars, fmt="%.1f")
    axes[-1].margins(y=0.15)
    axes[-1].set_xticks(range(len(labels)), labels, fontsize=8)
    axes[-1].set_title("MB sent, and storage directory MB\n(lower is better)", fontsize=9)
    figure.suptitle("DICOM network benchmark: storescu ingest, getscu retrieval (medians)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


# ---------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, metavar="FOLDER")
    parser.add_argument("--associations", "-n", type=int, default=10, help="parallel clients (default: 10)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="repetitions; medians are reported (default: 3)"
    )
    parser.add_argument("--limit", type=int, help="send at most this many files (evenly spaced sample)")
    parser.add_argument(
        "--wait-compressed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="retrieve from scp-node only once it has compressed everything (default: yes)",
    )
    parser.add_argument("--orthanc", default=orthanc_binary(), help="Orthanc binary (default: %(default)s)")
    parser.add_argument("--no-orthanc", action="store_true", help="benchmark scp-node only")
    parser.add_argument(
        "--orthanc-config",
        type=Path,
        default=DEFAULT_ORTHANC_CONFIG,
        help="Orthanc's configuration folder to copy (default: %(default)s)",
    )
    parser.add_argument("--scp-node", default=None, help="scp-node executable (default: beside python)")
    parser.add_argument(
        "--node-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a node setting from its default, e.g. compression.default_codec=passthrough",
    )
    parser.add_argument(
        "--plot", type=Path, default=Path("bench/network_bench.png"), help="bar chart (default: %(default)s)"
    )
    parser.add_argument("--markdown", type=Path, help="also write the report as Markdown here")
    parser.add_argument("--json", type=Path, help="also write every measurement as JSON here")
    parser.add_argument("--keep-logs", type=Path, help="copy server and client logs into this folder")
    parser.add_argument("--tmp", type=Path, help="folder for the temporary storage (default: system temp)")
    parser.add_argument("--client-timeout", type=float, default=300, help="seconds per client process")
    parser.add_argument("--compress-timeout", type=float, default=600, help="seconds (default: 600)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between index polls (default: 0.5)")
    parser.add_argument("--start-timeout", type=float, default=60)
    parser.add_argument("--stop-timeout", type=float, default=30)
    args = parser.parse_args(argv)
    for folder in args.folders:
        if not folder.is_dir():
            parser.error(f"not a folder: {folder}")
    if args.associations < 1 or args.repeat < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--associations, --repeat and --limit must be at least 1")
    for tool in ("storescu", "getscu", "echoscu"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} (dcmtk) is not on PATH")
    if args.no_orthanc:
        args.orthanc = None
    args.scp_node = args.scp_node or scp_node_binary()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started, load = datetime.now(UTC), os.getloadavg()[0]
    args.code_state = code_state()
    corpus = load_corpus(args.folders, args.limit)
    if not corpus.files:
        sys.exit("network_bench: no DICOM files to send")
    root = Path(tempfile.mkdtemp(prefix="network-bench-", dir=args.tmp))
    results: list[Measurement] = []
    try:
        shim = None
        try:
            shim = build_bind_shim(root)
            capture_wire(corpus, root, shim, args)
        except (BenchError, ShimUnavailable) as exc:
            print(f"network_bench: Orthanc and the wire capture skipped: {exc}", file=sys.stderr)
            args.orthanc = None
        targets = [NODE] + ([ORTHANC] if args.orthanc else [])
        header = run_lines(started, load, corpus, args, tool_version(args.orthanc) if args.orthanc else None)
        print("\n".join(header), flush=True)
        for repetition in range(args.repeat):
            # Alternate the order so that neither target always runs on a warmer page cache.
            for name in targets if repetition % 2 == 0 else targets[::-1]:
                m = measure(name, repetition, corpus, args, root, shim)
                results.append(m)
                print(
                    f"rep {repetition + 1} {name}: ingest {m.ingest.instances}/{len(corpus.files)} in "
                    f"{m.ingest.seconds:.2f} s, compress {number(median([m.compress_seconds]))} s, "
                    f"retrieve {m.retrieve.instances} in {m.retrieve.seconds:.2f} s",
                    flush=True,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    header.append(f"load average at end: {os.getloadavg()[0]:.2f}")
    if code_state() != args.code_state:
        header.append(f"WARNING: the repository's code changed during the run, now {code_state()}")
    print()
    print(report_text(header, results), end="")
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot(results, args.plot)
    if args.markdown:
        args.markdown.write_text(report_markdown(header, results))
    if args.json:
        document = {"run": header, "measurements": [asdict(m) for m in results]}
        args.json.write_text(json.dumps(document, indent=1, default=str) + "\n")
    node_runs = [m for m in results if m.target == NODE]
    lost = any(m.ingest.failed or m.missing or m.differing for m in node_runs)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())

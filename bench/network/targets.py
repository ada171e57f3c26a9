"""A running server under test, whichever it is: readiness, loopback check, stop, its log."""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.loopback import listen_addresses
from bench.network.names import GET_AE, NODE, STORE_AE


class BenchError(RuntimeError):
    """A target could not be started, confined to loopback or measured."""


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
    # Processes that do part of the server's work (the node's RQ workers): counted in its CPU.
    workers: tuple[subprocess.Popen, ...] = ()

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process and its workers, all threads (NaN
        where unknown)."""
        return sum(_cpu_seconds(process) for process in (self.process, *self.workers))


def _cpu_seconds(process: subprocess.Popen) -> float:
    try:
        fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def launch(
    command: list[str], log: Path, *, cwd: Path | None = None, shim: Path | None = None
) -> subprocess.Popen:
    """Start a server writing to `log`, under the loopback bind() `shim` where given. Its own
    session keeps a Ctrl-C for the benchmark, which then stops the server (`stop`)."""
    env = {**os.environ, "LD_PRELOAD": str(shim)} if shim else None
    with log.open("w") as handle:
        return subprocess.Popen(
            command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


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
    for process in (*target.workers, target.process):
        _terminate(target.name, process, timeout)
    with target.log.open("a") as handle:
        handle.write(f"\nbench.network: exit status {target.process.returncode}\n")


def _terminate(name: str, process: subprocess.Popen, timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        print(f"{name} (pid {process.pid}) ignored SIGTERM for {timeout} s: SIGKILL", file=sys.stderr)
        process.kill()
        process.wait()


def log_tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


# The node logs each storage context a C-GET requester offers and it does not support (getscu
# offers every storage class dcmtk knows), and the C-FIND context movescu offers beside C-MOVE,
# which BENCH_GET may not use: expected, so not counted as problems.
EXPECTED_LOG_LINES = re.compile(rf"presentation context .* rejected|from {GET_AE} at .*: find not permitted")
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

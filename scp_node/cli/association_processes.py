"""The serve processes after the first (`network.serve_processes`): each accepts associations
on the listening socket `serve` bound and hands over, with its own runtime (index connections,
compress threads), so that DICOM work uses more than the one core an interpreter lock allows.

`serve` keeps the data-dir lock, HTTP, start-up recovery and housekeeping. Each helper runs
`python -m scp_node.cli.association_processes FD` with the node's config as JSON on stdin, dies
with `serve` (Linux parent-death signal: a kill -9 of `serve` must free the port), and on
SIGTERM stops accepting, lets its associations finish and closes its runtime, as `serve` does.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

from scp_node.config import NodeConfig

log = logging.getLogger("scp_node.cli")
_PR_SET_PDEATHSIG = 1


@dataclass
class AssociationProcesses:
    processes: list[subprocess.Popen]

    @classmethod
    def start(cls, config: NodeConfig, listening: socket.socket, count: int) -> AssociationProcesses:
        fd = listening.fileno()
        processes: list[subprocess.Popen] = []
        for _ in range(count):
            process = subprocess.Popen(
                [sys.executable, "-m", "scp_node.cli.association_processes", str(fd), str(os.getpid())],
                stdin=subprocess.PIPE,
                pass_fds=[fd],
            )
            assert process.stdin is not None
            process.stdin.write(config.model_dump_json().encode())
            process.stdin.close()
            processes.append(process)
        if processes:
            log.info("processes %s accept associations too", ", ".join(str(p.pid) for p in processes))
        return cls(processes)

    def terminate(self) -> None:
        """Ask each to stop as `serve` does: no new associations, let those in flight finish."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()

    def wait(self, within_s: float) -> None:
        """Those still running after `within_s` (their own drain) and a margin are killed."""
        for process in self.processes:
            try:
                process.wait(timeout=within_s + 10)
            except subprocess.TimeoutExpired:
                log.warning("serve process %d did not stop; killing it", process.pid)
                process.kill()
                process.wait()


def _die_with_parent(parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent was gone before the signal was set
        os._exit(1)


def _main(fd: int) -> int:
    from scp_node.cli.shutdown import ShutdownSignals, serve_until_stopped
    from scp_node.server import serve_handed_socket
    from workers.runtime import open_runtime

    config = NodeConfig.model_validate_json(sys.stdin.read())
    logging.basicConfig(
        level=config.log_level, format=f"%(asctime)s [{os.getpid()}] %(levelname)s %(name)s: %(message)s"
    )
    runtime = open_runtime(config)
    try:
        with ShutdownSignals() as signals:
            server = serve_handed_socket(runtime.context, runtime.queue, socket.socket(fileno=fd))
            serve_until_stopped(server, config.network, signals)
    finally:
        runtime.close()
    return 0


if __name__ == "__main__":
    _die_with_parent(int(sys.argv[2]))
    sys.exit(_main(int(sys.argv[1])))

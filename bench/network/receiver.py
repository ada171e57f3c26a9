"""dcmtk's storescp as the receiving end: the wire capture, and the destination of a C-MOVE.

Bit-preserving (`+B`) so that a file holds exactly the data set that arrived, accepting every
transfer syntax it knows (`+xa`) so that a sender may keep an instance in the syntax it holds,
and kept on loopback by the bind() shim (storescp binds the wildcard address).
"""

from __future__ import annotations

import os
import signal
from contextlib import suppress
from pathlib import Path

from bench.network.targets import Target, check_loopback, launch, stop, wait_ready


def start_storescp(
    ae_title: str, port: int, workdir: Path, shim: Path, start_timeout: float, *, fork: bool = False
) -> Target:
    """storescp writing into a folder of `workdir` (the target's `storage`), its log beside it,
    answering C-ECHO on 127.0.0.1 only.

    `fork`: one child process per association, for senders that open several at once (a
    single-process storescp serves them one after the other, and the waiting ones time out)."""
    received = workdir / f"{ae_title.lower()}-received"
    received.mkdir()
    log = workdir / f"storescp-{ae_title.lower()}.log"
    command = ["storescp", "-aet", ae_title, "+B", "+xa", "-od", str(received)]
    command += [*(["--fork"] if fork else []), str(port)]
    target = Target("storescp", ae_title, port, received, launch(command, log, shim=shim), log, (port,))
    try:
        wait_ready(target, start_timeout)
        check_loopback(target)
    except BaseException:
        stop_storescp(target, start_timeout)
        raise
    return target


def stop_storescp(target: Target, timeout: float) -> None:
    """Stop storescp and the children it forked: a sender may keep an association open for reuse
    (Orthanc does for a few seconds), and its child would outlive the benchmark."""
    if not target.stopped:
        with suppress(ProcessLookupError):
            os.killpg(target.process.pid, signal.SIGTERM)  # its own session: the group is its own
    stop(target, timeout)

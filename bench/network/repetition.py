"""One repetition on one target: start it afresh (and the C-MOVE destination), ingest, (wait for
compression,) retrieve by C-GET, then by C-MOVE, stop both."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from contextlib import suppress
from pathlib import Path

from bench.loopback import free_port
from bench.network.corpus import Corpus
from bench.network.ingest import ingest
from bench.network.measurement import Measurement, Phase, Retrieved
from bench.network.move import movescu
from bench.network.names import DEST_AE, NODE
from bench.network.node import node_stats, start_node, wait_compressed
from bench.network.orthanc import start_orthanc
from bench.network.receiver import start_storescp, stop_storescp
from bench.network.retrieval import retrieve_studies
from bench.network.retrieve import getscu
from bench.network.targets import BenchError, check_loopback, log_problems, log_tail, stop, wait_ready


def tree_bytes(path: Path) -> int:
    """Apparent size of every file under `path` (data, index, journals)."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            with suppress(FileNotFoundError):  # a temporary file went away while walking
                total += (Path(folder) / name).lstat().st_size
    return total


def run_repetition(
    name: str, repetition: int, corpus: Corpus, args: argparse.Namespace, root: Path, shim: Path | None
) -> Measurement:
    """Measure target `name` on an empty storage directory under `root`; Orthanc and the C-MOVE
    destination need the `shim` (without it the C-MOVE phase is not run).

    The destination starts first, so that its port is taken before the target is told it, and
    idles until the C-MOVE phase."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{name.lower()}-{repetition}-", dir=root))
    target = destination = None
    try:
        if shim is not None:
            destination = start_storescp(DEST_AE, free_port(), workdir, shim, args.start_timeout, fork=True)
        destination_port = destination.port if destination else free_port()  # nothing will listen
        if name == NODE:
            target = start_node(workdir, args.scp_node, destination_port, args.node_set)
        else:
            assert shim is not None
            target = start_orthanc(workdir, args.orthanc, args.orthanc_config, shim, destination_port)
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
        retrieved, content, missing, differing = retrieve_studies(
            "getscu", getscu(target, workdir), corpus, sent, args.associations, workdir, args.client_timeout
        )
        retrieved.server_cpu = target.cpu_seconds() - cpu
        moved, move_content, move_missing, move_differing = Phase(), Retrieved(), [], []
        if destination is not None:  # after C-GET, on the same stored data
            cpu = target.cpu_seconds()
            client = movescu(target, destination)
            moved, move_content, move_missing, move_differing = retrieve_studies(
                "movescu", client, corpus, sent, args.associations, workdir, args.client_timeout
            )
            moved.server_cpu = target.cpu_seconds() - cpu
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
            move=moved,
            move_content=move_content,
            move_missing=move_missing,
            move_differing=move_differing,
            log_problems=log_problems(target),
        )
    finally:
        if target is not None:
            stop(target, args.stop_timeout)
        if destination is not None:  # after the target, which may still hold an association to it
            stop_storescp(destination, args.stop_timeout)
        if target is not None and args.keep_logs:
            keep = args.keep_logs / f"{name}-{repetition}"
            keep.mkdir(parents=True, exist_ok=True)
            for log in [target.log, *workdir.glob("*.log"), *workdir.glob("*.cfg")]:
                shutil.copy(log, keep / log.name)
        shutil.rmtree(workdir, ignore_errors=True)

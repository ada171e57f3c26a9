"""Running the dcmtk clients: jobs in parallel, each job's processes one after the other, timed."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ClientRun:
    """One dcmtk client process: what it was given, its exit status, its log, when it ran."""

    command: list[str]
    returncode: int
    log: Path
    started: float
    ended: float


def balanced_chunks(items: Sequence[T], count: int, weight: Callable[[T], int]) -> list[list[T]]:
    """At most `count` non-empty chunks of about equal weight (largest first into the lightest)."""
    chunks: list[list[T]] = [[] for _ in range(max(1, min(count, len(items))))]
    loads = [0] * len(chunks)
    for item in sorted(items, key=weight, reverse=True):
        lightest = loads.index(min(loads))
        chunks[lightest].append(item)
        loads[lightest] += weight(item)
    return [chunk for chunk in chunks if chunk]


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
                    handle.write(f"\nbench.network: killed after {timeout} s\n")
            runs.append(ClientRun(command, code, log, started, time.perf_counter()))
        return runs

    with ThreadPoolExecutor(max_workers=max(1, len(jobs))) as pool:
        return [run for runs in pool.map(run_job, range(len(jobs))) for run in runs]


def wall_seconds(runs: Sequence[ClientRun]) -> float:
    """From the first process's start to the last one's end: what the sites wait for."""
    return max(r.ended for r in runs) - min(r.started for r in runs)

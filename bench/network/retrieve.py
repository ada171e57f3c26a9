"""Retrieval by C-GET: getscu fetches every study sent (STUDY level, bit-preserving) on the
requester's own association, each client into a folder of its own (`retrieval` runs it)."""

from __future__ import annotations

from pathlib import Path

from bench.network.names import GET_AE
from bench.network.retrieval import ClientCommand
from bench.network.targets import Target


def getscu(target: Target, workdir: Path) -> ClientCommand:
    """The getscu command for a chunk of studies, writing into a new folder of `workdir`."""

    def command(index: int, queries: list[str]) -> tuple[list[str], Path]:
        out = workdir / f"get-{index}"
        out.mkdir()
        options = ["-v", "-S", "-aet", GET_AE, "-aec", target.ae_title, "+B", "-od", str(out)]
        return ["getscu", *options, "127.0.0.1", str(target.port), *queries], out

    return command

"""Retrieval by C-MOVE: movescu asks the target to send every study sent (STUDY level) to the
bench's storescp, which the target reaches on an association of its own, as a PACS sends to a
workstation; the files arrive in that storescp's folder (`retrieval` runs it).

movescu ends when the target's final C-MOVE response arrives, which the target sends after the
destination has answered every C-STORE, so the files are all in the folder by then."""

from __future__ import annotations

from pathlib import Path

from bench.network.names import GET_AE
from bench.network.retrieval import ClientCommand
from bench.network.targets import Target


def movescu(target: Target, destination: Target) -> ClientCommand:
    """The movescu command for a chunk of studies, moving them to `destination`."""

    def command(index: int, queries: list[str]) -> tuple[list[str], Path]:
        options = ["-v", "-S", "-aet", GET_AE, "-aec", target.ae_title, "-aem", destination.ae_title]
        return ["movescu", *options, "127.0.0.1", str(target.port), *queries], destination.storage

    return command

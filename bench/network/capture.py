"""The reference for "byte-exact": the data sets as storescu really puts them on the wire.

storescu re-encodes a data set as it sends it (undefined-length sequences get explicit lengths,
for one), so a server can never return the file's own bytes. dcmtk's storescp in bit-preserving
mode writes what arrived; its digests replace the files' own where present.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from bench.loopback import free_port
from bench.network.corpus import Corpus, dataset_sha256, read_header
from bench.network.ingest import ingest
from bench.network.receiver import start_storescp, stop_storescp

CAPTURE_AE = "CAPTURE"


def capture_wire(corpus: Corpus, root: Path, shim: Path, args: argparse.Namespace) -> None:
    """Send every file once to a capturing storescp (kept on loopback by `shim`) and keep the
    digests of what arrived in `corpus.wire_sha256`."""
    workdir = Path(tempfile.mkdtemp(prefix="capture-", dir=root))
    try:
        target = start_storescp(CAPTURE_AE, free_port(), workdir, shim, args.start_timeout)
        try:
            ingest(target, corpus, 1, workdir, args.client_timeout)
        finally:
            stop_storescp(target, args.stop_timeout)
        corpus.wire_sha256 = dataset_digests(target.storage)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def dataset_digests(folder: Path) -> dict[str, str]:
    """SOP Instance UID -> SHA-256 of the data set (after the File Meta group) of each file."""
    return {
        str(read_header(path).SOPInstanceUID): dataset_sha256(path.read_bytes())
        for path in sorted(folder.iterdir())
    }

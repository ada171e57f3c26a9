"""CPU a server spends on associations that are open and idle: the node against Orthanc.

A viewer or a modality may hold an association open between requests; pynetdicom's reactors
polled each millisecond and four idle associations cost the node 31 % of a core (issue 15).
This opens N echo associations to each server, leaves them idle, and reads the server's CPU
time (all threads) over a window, for each N given.

    python -m bench.idle_associations --associations 0 1 4 8 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from bench.loopback import ShimUnavailable, build_bind_shim, free_port
from bench.network.names import STORE_AE
from bench.network.node import scp_node_binary, start_node
from bench.network.orthanc import orthanc_binary, start_orthanc
from bench.network.targets import BenchError, Target, check_loopback, stop, wait_ready
from bench.run_header import run_lines
from bench.tables import markdown_table, text_table


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.idle_associations", description=__doc__.split("\n")[0]
    )
    # The node accepts network.max_associations (default 10) at once.
    parser.add_argument("--associations", type=int, nargs="+", default=[0, 1, 4, 8])
    parser.add_argument("--seconds", type=float, default=5.0, help="measuring window per count")
    parser.add_argument("--orthanc-config", type=Path, default=Path("/etc/orthanc"))
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here")
    return parser.parse_args(argv)


def percent_of_a_core(target: Target, associations: int, seconds: float) -> float:
    """The server's CPU over `seconds` while `associations` echo associations stay open and idle."""
    ae = AE(STORE_AE)
    ae.add_requested_context(Verification)
    opened = [ae.associate("127.0.0.1", target.port, ae_title=target.ae_title) for _ in range(associations)]
    try:
        if not all(assoc.is_established for assoc in opened):
            raise BenchError(f"{target.name} refused an echo association")
        time.sleep(1.0)  # the associations settle
        before = target.cpu_seconds()
        time.sleep(seconds)
        return (target.cpu_seconds() - before) / seconds * 100
    finally:
        for assoc in opened:
            assoc.release()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    root = Path(tempfile.mkdtemp(prefix="idle-associations-"))
    rows: list[list[str]] = []
    for name in ("node", "orthanc"):
        (root / name).mkdir()
    try:
        targets = [start_node(root / "node", scp_node_binary(), free_port())]
        orthanc = orthanc_binary()
        if orthanc:
            try:
                targets.append(
                    start_orthanc(
                        root / "orthanc", orthanc, args.orthanc_config, build_bind_shim(root), free_port()
                    )
                )
            except ShimUnavailable as exc:
                print(f"bench.idle_associations: Orthanc skipped: {exc}", file=sys.stderr)
        try:
            for target in targets:
                wait_ready(target, 120)
                check_loopback(target)
            for count in args.associations:
                rows.append(
                    [str(count), *(f"{percent_of_a_core(t, count, args.seconds):.1f}" for t in targets)]
                )
        finally:
            for target in targets:
                stop(target, 30)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    header = ["idle associations", *(f"{target.name} % of a core" for target in targets)]
    lines = run_lines("bench.idle_associations", started, os.getloadavg()[0])
    print("\n".join(lines) + "\n\n" + text_table(header, rows))
    if args.markdown:
        args.markdown.write_text(
            "\n".join(f"- {line}" for line in lines) + "\n\n" + markdown_table(header, rows)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

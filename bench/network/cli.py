"""The command line: options, then the repetitions over both targets, then the report files."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import bench.network
from bench.arguments import add_folders, benchmark_parser
from bench.loopback import ShimUnavailable, build_bind_shim
from bench.network.capture import capture_wire
from bench.network.corpus import load_corpus
from bench.network.figures import median, number
from bench.network.measurement import Measurement
from bench.network.names import NODE, ORTHANC
from bench.network.node import scp_node_binary
from bench.network.orthanc import DEFAULT_ORTHANC_CONFIG, orthanc_binary
from bench.network.plot import plot
from bench.network.provenance import PROGRAM, code_state, header_lines
from bench.network.repetition import run_repetition
from bench.network.report import report_markdown, report_text
from bench.network.targets import BenchError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = benchmark_parser(PROGRAM, bench.network.__doc__)
    add_folders(parser)
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
    if args.associations < 1 or args.repeat < 1 or (args.limit is not None and args.limit < 1):
        parser.error("--associations, --repeat and --limit must be at least 1")
    for tool in ("storescu", "getscu", "movescu", "storescp", "echoscu"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} (dcmtk) is not on PATH")
    if args.no_orthanc:
        args.orthanc = None
    args.scp_node = args.scp_node or scp_node_binary()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 1 when scp-node failed to store, lost or changed an instance; Orthanc's
    failures are only reported."""
    args = parse_args(argv)
    started, load = datetime.now(UTC), os.getloadavg()[0]
    args.code_state = code_state()
    corpus = load_corpus(args.folders, args.limit)
    if not corpus.files:
        sys.exit("bench.network: no DICOM files to send")
    root = Path(tempfile.mkdtemp(prefix="network-bench-", dir=args.tmp))
    results: list[Measurement] = []
    try:
        shim = None
        try:
            shim = build_bind_shim(root)
            capture_wire(corpus, root, shim, args)
        except (BenchError, ShimUnavailable) as exc:
            print(f"bench.network: Orthanc, the wire capture and C-MOVE skipped: {exc}", file=sys.stderr)
            args.orthanc = None
        targets = [NODE] + ([ORTHANC] if args.orthanc else [])
        header = header_lines(started, load, corpus, args)
        print("\n".join(header), flush=True)
        for repetition in range(args.repeat):
            # Alternate the order so that neither target always runs on a warmer page cache.
            for name in targets if repetition % 2 == 0 else targets[::-1]:
                m = run_repetition(name, repetition, corpus, args, root, shim)
                results.append(m)
                print(
                    f"rep {repetition + 1} {name}: ingest {m.ingest.instances}/{len(corpus.files)} in "
                    f"{m.ingest.seconds:.2f} s, compress {number(median([m.compress_seconds]))} s, "
                    f"C-GET {m.retrieve.instances} in {m.retrieve.seconds:.2f} s, "
                    f"C-MOVE {m.move.instances} in {m.move.seconds:.2f} s",
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
    lost = any(
        m.ingest.failed or missing or differing
        for m in node_runs
        for _, _, missing, differing in m.retrievals().values()
    )
    return 1 if lost else 0

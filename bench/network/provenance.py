"""The report's header: what ran (command, machine, clients, servers, the node's code) and on
what input, so that a figure can be traced to the run that made it."""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
from collections import Counter
from datetime import datetime
from pathlib import Path

from bench.network.corpus import Corpus
from bench.network.measurement import MB
from bench.run_header import run_lines

PROGRAM = "bench.network"  # run as `python -m PROGRAM`
REPOSITORY = Path(__file__).resolve().parents[2]


def header_lines(started: datetime, load: float, corpus: Corpus, args: argparse.Namespace) -> list[str]:
    """`load`: the load average at the start; `args.orthanc` is None where Orthanc is not run."""
    studies = len(corpus.studies())
    syntaxes = Counter(f.transfer_syntax for f in corpus.files)
    lines = run_lines(PROGRAM, started, load_average=load)
    lines += [
        f"clients: {tool_version('storescu')}, parallel associations: {args.associations}, "
        f"repetitions: {args.repeat} (medians reported), wait for compression: {args.wait_compressed}",
        f"orthanc: {tool_version(args.orthanc) if args.orthanc else 'not run'}",
        f"scp-node executable: {args.scp_node}",
        f"code in this repository: {args.code_state}",
        f"scp-node settings changed by --node-set: {', '.join(args.node_set) or 'none'}",
        f"files: {corpus.seen} read, {len(corpus.files)} to send "
        f"({corpus.bytes / MB:.1f} MB, {studies} studies)",
        "transfer syntaxes sent: " + ", ".join(f"{uid} x{count}" for uid, count in syntaxes.most_common()),
    ]
    lines += [f"skipped {count}: {reason}" for reason, count in corpus.skipped.most_common()]
    rewritten = sum(
        corpus.wire_sha256.get(f.sop_uid, f.dataset_sha256) != f.dataset_sha256 for f in corpus.files
    )
    lines.append(
        f"byte-exact reference: the data sets as storescu sent them, captured by storescp +B for "
        f"{sum(f.sop_uid in corpus.wire_sha256 for f in corpus.files)} files (else the file itself); "
        f"storescu re-encoded {rewritten} of them on the way"
    )
    return lines


def code_state() -> str:
    """The node's code as run: commit, modified files and a digest of scp_node/ and workers/."""
    digest = hashlib.sha256()
    for path in sorted([*REPOSITORY.glob("scp_node/**/*.py"), *REPOSITORY.glob("workers/**/*.py")]):
        digest.update(str(path.relative_to(REPOSITORY)).encode() + b"\0" + path.read_bytes())

    def git(*command: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(REPOSITORY), *command], capture_output=True, text=True, check=False
        )
        return result.stdout.rstrip() if result.returncode == 0 else "?"

    modified = git("status", "--porcelain", "--", "scp_node", "workers").splitlines()
    changes = ", ".join(line[3:] for line in modified) or "none"
    commit = git("rev-parse", "--short", "HEAD")
    return f"commit {commit}, uncommitted changes: {changes}, digest {digest.hexdigest()[:12]}"


def tool_version(binary: str) -> str:
    try:
        output = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return f"{binary} (not found)"
    match = re.search(r"\$dcmtk: (\S+ v\S+)", output) or re.search(r"^(Orthanc \S+)", output, re.M)
    return match.group(1) if match else binary

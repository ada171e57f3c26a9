"""Ingest: storescu sends every file once, in its own transfer syntax, over parallel associations."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from bench.network.clients import balanced_chunks, run_clients, wall_seconds
from bench.network.corpus import Corpus, DicomFile
from bench.network.measurement import Phase
from bench.network.names import STORE_AE
from bench.network.targets import Target

# dcmtk's association negotiation allows at most 128 presentation contexts per association.
MAX_CONTEXTS = 128
STORE_RESPONSE = re.compile(r"Received Store Response \((\w+)")


def storescu_config(files: Sequence[DicomFile]) -> str:
    """A storescu profile proposing exactly each file's (SOP class, transfer syntax) pair."""
    syntaxes = sorted({f.transfer_syntax for f in files})
    pairs = sorted({(f.sop_class, f.transfer_syntax) for f in files})
    lines = ["[[TransferSyntaxes]]"]
    for index, syntax in enumerate(syntaxes):
        lines += [f"[TS{index}]", f"TransferSyntax1 = {syntax}"]
    lines += ["[[PresentationContexts]]", "[Bench]"]
    for index, (sop_class, syntax) in enumerate(pairs, start=1):
        lines.append(f"PresentationContext{index} = {sop_class}\\TS{syntaxes.index(syntax)}")
    lines += ["[[Profiles]]", "[Bench]", "PresentationContexts = Bench", ""]
    return "\n".join(lines)


def context_batches(files: Sequence[DicomFile]) -> list[list[DicomFile]]:
    """Split a chunk so that no association needs more than MAX_CONTEXTS presentation contexts."""
    batches: list[list[DicomFile]] = [[]]
    pairs: set[tuple[str, str]] = set()
    for item in files:
        pair = (item.sop_class, item.transfer_syntax)
        if pair not in pairs and len(pairs) == MAX_CONTEXTS:
            batches.append([])
            pairs = set()
        pairs.add(pair)
        batches[-1].append(item)
    return batches


def stored_paths(log: Path) -> set[str]:
    """Files storescu -v reports as stored (status Success or Warning)."""
    stored: set[str] = set()
    current = None
    for line in log.read_text(errors="replace").splitlines():
        if "Sending file: " in line:
            current = line.split("Sending file: ", 1)[1].strip()
        elif (match := STORE_RESPONSE.search(line)) and current is not None:
            if match.group(1) in ("Success", "Warning"):
                stored.add(current)
            current = None
    return stored


def failure_lines(log: Path) -> list[str]:
    return [
        line.strip() for line in log.read_text(errors="replace").splitlines() if line.startswith(("E:", "F:"))
    ]


def ingest(
    target: Target, corpus: Corpus, associations: int, workdir: Path, timeout: float
) -> tuple[Phase, list[DicomFile], dict[str, list[str]]]:
    """Send every file once: one client per chunk, one association per presentation-context batch."""
    jobs, logs = [], []
    batch_of: dict[Path, list[DicomFile]] = {}
    for index, chunk in enumerate(balanced_chunks(corpus.files, associations, lambda f: f.size)):
        chunk.sort(key=lambda f: str(f.path))
        commands, job_logs = [], []
        for batch_index, batch in enumerate(context_batches(chunk)):
            profile = workdir / f"storescu-{index}-{batch_index}.cfg"
            profile.write_text(storescu_config(batch))
            command = ["storescu", "-v", "-nh", "-aet", STORE_AE, "-aec", target.ae_title]
            command += ["-xf", str(profile), "Bench", "127.0.0.1", str(target.port)]
            commands.append(command + [str(f.path) for f in batch])
            job_logs.append(workdir / f"storescu-{index}-{batch_index}.log")
            batch_of[job_logs[-1]] = batch
        jobs.append(commands)
        logs.append(job_logs)
    runs = run_clients(jobs, logs, timeout)
    sent_paths: set[str] = set()
    failures: dict[str, list[str]] = {}
    for run in runs:
        stored = stored_paths(run.log)
        sent_paths |= stored
        errors = failure_lines(run.log) or [f"storescu exit status {run.returncode}"]
        failures.update({str(f.path): errors[:3] for f in batch_of[run.log] if str(f.path) not in stored})
    sent = [f for f in corpus.files if str(f.path) in sent_paths]
    phase = Phase(
        instances=len(sent),
        failed=len(corpus.files) - len(sent),
        bytes=sum(f.size for f in sent),
        seconds=wall_seconds(runs),
        processes=len(runs),
    )
    return phase, sent, failures

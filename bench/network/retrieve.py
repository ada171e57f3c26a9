"""Retrieval: getscu fetches every study sent (STUDY level, bit-preserving), and each data set
that comes back is compared with the one sent."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from bench.network.clients import balanced_chunks, run_clients, wall_seconds
from bench.network.compare import retrieved_difference
from bench.network.corpus import Corpus, DicomFile, by_study, read_header
from bench.network.measurement import Phase, Retrieved
from bench.network.names import GET_AE
from bench.network.targets import Target


def query_file(path: Path, study_uid: str) -> Path:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    ds.save_as(path, implicit_vr=False, little_endian=True)
    return path


def retrieve(
    target: Target,
    corpus: Corpus,
    sent: Sequence[DicomFile],
    associations: int,
    workdir: Path,
    timeout: float,
) -> tuple[Phase, Retrieved, list[str], list[str]]:
    """The phase, the content compared, the paths not retrieved, and those retrieved differing."""
    studies_sent = by_study(sent)
    chunks = balanced_chunks(
        sorted(studies_sent), associations, lambda uid: sum(f.size for f in studies_sent[uid])
    )
    jobs, logs, outs = [], [], []
    for index, studies in enumerate(chunks):
        out = workdir / f"get-{index}"
        out.mkdir()
        queries = [str(query_file(workdir / f"query-{index}-{n}.dcm", uid)) for n, uid in enumerate(studies)]
        command = ["getscu", "-v", "-S", "-aet", GET_AE, "-aec", target.ae_title, "+B", "-od", str(out)]
        jobs.append([[*command, "127.0.0.1", str(target.port), *queries]])
        logs.append([workdir / f"getscu-{index}.log"])
        outs.append(out)
    runs = run_clients(jobs, logs, timeout) if jobs else []
    expected = {f.sop_uid: f for f in sent}
    received_bytes: dict[str, int] = {}  # SOP Instance UID -> size of the file getscu wrote
    content = Retrieved()
    differing = []
    for out in outs:
        for path in sorted(out.iterdir()):
            data = path.read_bytes()
            ds = read_header(path)
            uid = str(ds.SOPInstanceUID)
            original = expected.get(uid)
            if original is None or uid in received_bytes:
                content.unexpected += 1
                continue
            received_bytes[uid] = len(data)
            syntax = str(ds.file_meta.TransferSyntaxUID)
            problem = retrieved_difference(original, corpus.reference_sha256(original), path, data, syntax)
            if problem is not None:
                content.differing += 1
                differing.append(f"{original.path} ({problem})")
            elif syntax != original.transfer_syntax:
                content.converted += 1
            else:
                content.exact += 1
        shutil.rmtree(out)
    missing = sorted(str(f.path) for uid, f in expected.items() if uid not in received_bytes)
    phase = Phase(
        instances=len(received_bytes),
        failed=len(missing),
        bytes=sum(received_bytes.values()),
        seconds=wall_seconds(runs) if runs else 0.0,
        processes=len(runs),
    )
    return phase, content, missing, differing

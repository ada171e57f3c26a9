"""What C-GET and C-MOVE share: the same studies asked for in the same balanced chunks (one
client process per chunk, one STUDY-level query per study), timed the same way, and every file
that arrives compared with the data set sent, so that the two services are measured alike."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from bench.network.clients import balanced_chunks, run_clients, wall_seconds
from bench.network.compare import retrieved_difference
from bench.network.corpus import Corpus, DicomFile, by_study, read_header
from bench.network.measurement import Phase, RetrievalResult, Retrieved

# A chunk's index and its query files -> the client's command, and the folder its files arrive in.
ClientCommand = Callable[[int, list[str]], tuple[list[str], Path]]


def query_file(path: Path, study_uid: str) -> Path:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    ds.save_as(path, implicit_vr=False, little_endian=True)
    return path


def retrieve_studies(
    tool: str,
    client: ClientCommand,
    corpus: Corpus,
    sent: Sequence[DicomFile],
    associations: int,
    workdir: Path,
    timeout: float,
) -> RetrievalResult:
    """Run `tool` (its `client` command) once per chunk of studies, in parallel, timed from the
    first start to the last end, and compare what arrived with what was `sent`."""
    studies_sent = by_study(sent)
    chunks = balanced_chunks(
        sorted(studies_sent), associations, lambda uid: sum(f.size for f in studies_sent[uid])
    )
    jobs, logs, folders = [], [], []
    for index, studies in enumerate(chunks):
        queries = [
            str(query_file(workdir / f"{tool}-query-{index}-{n}.dcm", uid)) for n, uid in enumerate(studies)
        ]
        command, folder = client(index, queries)
        jobs.append([command])
        logs.append([workdir / f"{tool}-{index}.log"])
        folders.append(folder)
    runs = run_clients(jobs, logs, timeout) if jobs else []
    received_bytes, content, missing, differing = compare_received(dict.fromkeys(folders), corpus, sent)
    phase = Phase(
        instances=len(received_bytes),
        failed=len(missing),
        bytes=sum(received_bytes.values()),
        seconds=wall_seconds(runs) if runs else 0.0,
        processes=len(runs),
    )
    return phase, content, missing, differing


def compare_received(
    folders: Iterable[Path], corpus: Corpus, sent: Sequence[DicomFile]
) -> tuple[dict[str, int], Retrieved, list[str], list[str]]:
    """Compare every file in `folders` with the one sent, deleting it once read (a folder may
    serve the next phase); the size of each instance received by SOP Instance UID, the content
    compared, the paths not retrieved, and those retrieved differing."""
    expected = {f.sop_uid: f for f in sent}
    received_bytes: dict[str, int] = {}
    content = Retrieved()
    differing = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            data = path.read_bytes()
            ds = read_header(path)
            uid = str(ds.SOPInstanceUID)
            original = expected.get(uid)
            if original is None or uid in received_bytes:
                content.unexpected += 1
            else:
                received_bytes[uid] = len(data)
                syntax = str(ds.file_meta.TransferSyntaxUID)
                problem = retrieved_difference(
                    original, corpus.reference_sha256(original), path, data, syntax
                )
                if problem is not None:
                    content.differing += 1
                    differing.append(f"{original.path} ({problem})")
                elif syntax != original.transfer_syntax:
                    content.converted += 1
                else:
                    content.exact += 1
            path.unlink()
    missing = sorted(str(f.path) for uid, f in expected.items() if uid not in received_bytes)
    return received_bytes, content, missing, differing

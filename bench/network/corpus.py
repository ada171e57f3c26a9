"""The files to send: one per SOP Instance UID, each with the digest of its data set."""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from scp_node.imaging.dicom_layout import dataset_offset
from scp_node.research.image_corpus import iter_files


@dataclass(frozen=True)
class DicomFile:
    path: Path
    size: int
    sop_class: str
    sop_uid: str
    study_uid: str
    transfer_syntax: str
    dataset_sha256: str


@dataclass
class Corpus:
    files: list[DicomFile] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    seen: int = 0
    # SOP Instance UID -> SHA-256 of the data set as storescu put it on the wire (bench.network.capture).
    wire_sha256: dict[str, str] = field(default_factory=dict)

    def reference_sha256(self, item: DicomFile) -> str:
        return self.wire_sha256.get(item.sop_uid, item.dataset_sha256)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def studies(self) -> dict[str, list[DicomFile]]:
        return by_study(self.files)


def by_study(files: Iterable[DicomFile]) -> dict[str, list[DicomFile]]:
    studies: dict[str, list[DicomFile]] = {}
    for item in files:
        studies.setdefault(item.study_uid, []).append(item)
    return studies


def read_header(path: Path) -> Dataset:
    """The data set up to Pixel Data; pydicom's warnings about real-world values say nothing here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dcmread(path, stop_before_pixels=True)


def dataset_sha256(data: bytes) -> str:
    """SHA-256 of a file's data set, after the File Meta group: what a server stores and returns."""
    return hashlib.sha256(data[dataset_offset(data) :]).hexdigest()


def read_file(path: Path) -> DicomFile | str:
    """The file's identity and dataset digest, or why it is not sent."""
    data = path.read_bytes()
    try:
        ds = read_header(path)
    except (InvalidDicomError, OSError, ValueError, TypeError, KeyError) as exc:
        return f"not readable as DICOM ({type(exc).__name__})"
    syntax = str(getattr(ds.file_meta, "TransferSyntaxUID", "") or "")
    if not syntax:
        return "no File Meta header (transfer syntax unknown)"
    keys = {k: str(ds.get(k, "") or "") for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID")}
    missing = [k for k, value in keys.items() if not value]
    if missing:
        return f"no {missing[0]}"
    try:
        digest = dataset_sha256(data)
    except Exception as exc:  # pydicom raises several types on a broken meta group
        return f"unreadable File Meta header ({type(exc).__name__})"
    return DicomFile(
        path=path,
        size=len(data),
        sop_class=keys["SOPClassUID"],
        sop_uid=keys["SOPInstanceUID"],
        study_uid=keys["StudyInstanceUID"],
        transfer_syntax=syntax,
        dataset_sha256=digest,
    )


def load_corpus(folders: Iterable[Path], limit: int | None) -> Corpus:
    """One file per SOP Instance UID (a second copy would overwrite or be refused), in path order."""
    corpus = Corpus()
    uids: set[str] = set()
    for path in iter_files(folders):
        corpus.seen += 1
        item = read_file(path)
        if isinstance(item, str):
            corpus.skipped[item] += 1
        elif item.sop_uid in uids:
            corpus.skipped["duplicate SOP Instance UID (first file kept)"] += 1
        else:
            uids.add(item.sop_uid)
            corpus.files.append(item)
    if limit is not None and limit < len(corpus.files):
        # Evenly spaced, so a limited run keeps the folders' mix instead of the first folder only.
        kept = [corpus.files[i * len(corpus.files) // limit] for i in range(limit)]
        corpus.skipped["left out by --limit"] += len(corpus.files) - len(kept)
        corpus.files = kept
    return corpus

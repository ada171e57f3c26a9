"""Folders of DICOM files as the images a codec would be given, for benchmarks and training.

Pixels take the same path as when the node stores a file (`scp_node.imaging.dicom_layout`,
`scp_node.imaging.blob`, `scp_node.imaging.pixels`). The same pixels in several transfer
syntaxes count once, and
files the node would keep verbatim (lossy, undecodable) are skipped with the reason. Training
and evaluation need two more things: images of pure noise (most of mr-multivendor) are flagged,
because no codec can compress them and a model should not learn from them, and the held-out
split keeps every image of a patient on one side, so evaluation never sees a training patient.
Slice stacks (a series of single-frame slices, or the frames of one multi-frame image) give the
neighbouring-slice pairs a series-aware codec learns from; a series belongs to one patient, so
it falls whole on one side of the split.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scp_node.imaging.blob import _decoded_words, why_verbatim
from scp_node.imaging.codecs import ImageDescription
from scp_node.imaging.dicom_layout import FileLayout, InvalidDicomFile, PixelFormat, read_layout
from scp_node.imaging.pixels import UnsupportedPixels, samples_from_words, words_from_native

# Modalities reported on their own; CR and DX are both projection radiography, so one group.
MODALITY_GROUPS = {"CR": "CR/DX", "DX": "CR/DX", "MG": "MG", "CT": "CT", "MR": "MR", "US": "US"}
# Horizontal neighbours correlate at 0.76 or more in the real development images, below 0.01
# in the random ones.
NOISE_CORRELATION = 0.2


@dataclass(frozen=True)
class Image:
    """One distinct image as the node would hand it to a codec."""

    path: Path
    modality: str
    samples: np.ndarray  # (frames, rows, columns, samples), unsigned, bit_depth bits
    desc: ImageDescription
    bits_allocated: int
    patient: str  # PatientID, else the study, else the file: what the held-out split groups by
    series: str = ""  # SeriesInstanceUID
    position: float | None = None  # ImagePositionPatient along the slice normal, in mm

    @property
    def pixel_count(self) -> int:
        return self.desc.frames * self.desc.rows * self.desc.columns

    @property
    def sample_count(self) -> int:
        return self.pixel_count * self.desc.samples

    @property
    def native_bytes(self) -> int:
        """Size of the pixels stored natively (uncompressed), the baseline of the ratio."""
        return self.sample_count * self.bits_allocated // 8

    @property
    def is_noise(self) -> bool:
        """True for images whose neighbouring pixels are uncorrelated (random test data)."""
        samples = self.samples.astype(np.float64)
        left, right = samples[:, :, :-1, :].ravel(), samples[:, :, 1:, :].ravel()
        if left.size < 2 or left.std() == 0 or right.std() == 0:
            return False
        return float(np.corrcoef(left, right)[0, 1]) < NOISE_CORRELATION


@dataclass(frozen=True)
class Skip:
    """A file left out, and why: the node would not code its pixels either."""

    path: Path
    reason: str
    detail: str = ""


@dataclass
class Corpus:
    images: list[Image] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)  # duplicate path -> kept path
    files: int = 0


def iter_files(folders: Iterable[Path]) -> Iterator[Path]:
    """Every file under the folders once, in a stable order so duplicates resolve the same way."""
    seen: set[Path] = set()
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.resolve() not in seen:
                seen.add(path.resolve())
                yield path


def modality_group(layout: FileLayout) -> str:
    return MODALITY_GROUPS.get(str(layout.dataset.get("Modality", "")).strip().upper(), "OT")


def pixel_words(data: bytes, layout: FileLayout, fmt: PixelFormat) -> np.ndarray:
    """The pixel words as the node's coder sees them: native as stored, encapsulated decoded."""
    if layout.encapsulated:
        return _decoded_words(data, fmt)
    value = data[layout.pixel_value_offset : layout.pixel_value_end]
    return words_from_native(value, fmt, layout.transfer_syntax.is_little_endian)


def _patient(layout: FileLayout, path: Path) -> str:
    ds = layout.dataset
    for keyword in ("PatientID", "StudyInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            return f"{keyword}={value}"
    return f"file={path}"


def _slice_position(layout: FileLayout) -> float | None:
    """ImagePositionPatient projected on the slice normal (the cross product of the two
    ImageOrientationPatient vectors): the order of slices in a stack."""
    ds = layout.dataset
    try:
        orientation = [float(value) for value in ds.ImageOrientationPatient]
        position = np.array([float(value) for value in ds.ImagePositionPatient])
    except (AttributeError, TypeError, ValueError):
        return None
    if len(orientation) != 6 or position.shape != (3,):
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    return float(position @ normal)


def load_image(path: Path) -> Image | Skip:
    """Read one file into codec samples, or say why the node would keep its pixels verbatim."""
    data = path.read_bytes()
    try:
        layout = read_layout(data)
    except InvalidDicomFile as exc:
        return Skip(path, "not a readable DICOM file", str(exc))
    reason = why_verbatim(layout)
    if reason is not None:
        return Skip(path, reason)
    fmt = PixelFormat.from_dataset(layout.dataset)
    try:
        words = pixel_words(data, layout, fmt)
    except UnsupportedPixels as exc:
        return Skip(path, "pixels not codable", str(exc))
    samples, _, desc = samples_from_words(words, fmt)
    series = str(layout.dataset.get("SeriesInstanceUID", "") or "")
    return Image(
        path,
        modality_group(layout),
        samples,
        desc,
        fmt.bits_allocated,
        _patient(layout, path),
        series,
        _slice_position(layout),
    )


def pixel_key(samples: np.ndarray) -> str:
    """Identity of the decoded pixels: the same image in another transfer syntax counts once."""
    digest = hashlib.sha256(repr(samples.shape).encode())
    digest.update(samples.tobytes())
    return digest.hexdigest()


def load_corpus(folders: Iterable[Path]) -> Corpus:
    corpus = Corpus()
    kept: dict[str, Path] = {}
    for path in iter_files(folders):
        corpus.files += 1
        loaded = load_image(path)
        if isinstance(loaded, Skip):
            corpus.skipped.append(loaded)
            continue
        key = pixel_key(loaded.samples)
        if key in kept:
            corpus.duplicates[str(path)] = str(kept[key])
            continue
        kept[key] = path
        corpus.images.append(loaded)
    return corpus


@dataclass(frozen=True)
class Split:
    train: list[Image]
    held_out: list[Image]
    noise: list[Image]  # in neither: not trained on, not counted in compression claims


def split_by_patient(images: Iterable[Image], held_out_fraction: float = 0.25) -> Split:
    """Hold out whole patients, chosen by a stable hash so the split is the same on every run;
    every modality with two or more patients keeps at least one on each side. Slice stacks
    follow their patient, so a series is never split; and every modality with slice stacks of
    two or more patients keeps a stack on each side, so series-aware coding is both learned
    and measured."""
    real = [image for image in images if not image.is_noise]
    noise = [image for image in images if image.is_noise]
    held: set[str] = set()
    by_modality: dict[str, set[str]] = {}
    for image in real:
        by_modality.setdefault(image.modality, set()).add(image.patient)
    for patients in by_modality.values():
        ranked = sorted(patients, key=_rank)
        count = round(len(ranked) * held_out_fraction)
        if len(ranked) >= 2:
            count = min(max(count, 1), len(ranked) - 1)
        held.update(ranked[:count])
    for patients in _stack_patients(real).values():
        ranked = sorted(patients, key=_rank)
        if len(ranked) >= 2 and not held.intersection(ranked):
            held.add(ranked[0])
        elif len(ranked) >= 2 and held.issuperset(ranked):
            held.discard(ranked[-1])
    return Split(
        train=[image for image in real if image.patient not in held],
        held_out=[image for image in real if image.patient in held],
        noise=noise,
    )


@dataclass(frozen=True)
class SlicePair:
    """Two neighbouring slices of one stack: `reference` is coded first, `target` from it."""

    reference: Image
    reference_frame: int
    target: Image
    target_frame: int

    @property
    def bit_depth(self) -> int:
        """Bits that hold both slices (slices of one series may differ in their used range)."""
        return max(self.reference.desc.bit_depth, self.target.desc.bit_depth)


def slice_pairs(images: Iterable[Image]) -> list[SlicePair]:
    """Neighbouring slices: consecutive frames of a multi-frame image, and consecutive
    single-frame images of one series ordered by position, where their geometry matches.
    Pass one side of a `Split`: pairs never cross it, because a series has one patient."""
    pairs: list[SlicePair] = []
    stacks: dict[str, list[Image]] = {}
    for image in images:
        pairs += [SlicePair(image, frame - 1, image, frame) for frame in range(1, image.desc.frames)]
        if image.series and image.position is not None and image.desc.frames == 1:
            stacks.setdefault(image.series, []).append(image)
    for stack in stacks.values():
        ordered = sorted(stack, key=lambda image: image.position)
        for first, second in itertools.pairwise(ordered):
            if first.desc.shape == second.desc.shape:
                pairs.append(SlicePair(first, 0, second, 0))
    return pairs


def _stack_patients(images: list[Image]) -> dict[str, set[str]]:
    """Per modality group, the patients with a slice stack (a multi-frame image or a series of
    two or more positioned slices)."""
    slices: dict[tuple[str, str, str], int] = {}
    stacks: dict[str, set[str]] = {}
    for image in images:
        if image.desc.frames > 1:
            stacks.setdefault(image.modality, set()).add(image.patient)
        elif image.series and image.position is not None:
            slices[(image.modality, image.patient, image.series)] = (
                slices.get((image.modality, image.patient, image.series), 0) + 1
            )
    for (modality, patient, _), count in slices.items():
        if count >= 2:
            stacks.setdefault(modality, set()).add(patient)
    return stacks


def _rank(patient: str) -> str:
    return hashlib.sha256(patient.encode()).hexdigest()

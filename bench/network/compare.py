"""Whether a retrieved data set is the one sent: byte for byte in its own transfer syntax, or
element by element and pixel by pixel where the server converted it to another."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset

from bench.network.corpus import DicomFile, dataset_sha256

# Binary VRs hold words in the sender's byte order, so they legitimately change with the syntax.
BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "OB or OW", "US or OW"}
# JPEG baseline and extended, JPEG-LS near-lossless, JPEG 2000 (lossy or lossless).
LOSSY_CAPABLE = {f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 81, 91)}


def retrieved_difference(
    sent: DicomFile, reference_sha256: str, retrieved: Path, data: bytes, syntax: str
) -> str | None:
    """Why the retrieved file (`data`, in transfer syntax `syntax`) is not what was sent (None: it is).

    `reference_sha256` is the digest of the data set as it went over the wire."""
    if syntax != sent.transfer_syntax:
        problem = content_difference(sent.path, sent.transfer_syntax, retrieved)
        return None if problem is None else f"converted to {syntax}: {problem}"
    return None if dataset_sha256(data) == reference_sha256 else "same transfer syntax, other bytes"


def content_difference(original: Path, original_syntax: str, retrieved: Path) -> str | None:
    """Why a data set that came back in another transfer syntax is not the one sent (None: it is).

    Every non-binary element of the original must come back with the same value, and the decoded
    pixels must be equal unless the original syntax may be lossy; the photometric interpretation
    may change (JPEG 2000 YBR_RCT/ICT decodes to RGB), and group lengths change with the encoding.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            source, copy = dcmread(original), dcmread(retrieved)
        except Exception as exc:  # a broken retrieved file is exactly what this reports
            return f"unreadable: {type(exc).__name__}: {exc}"
        problem = _elements_difference(source, copy)
        if problem is not None:
            return problem
        if "PixelData" not in source or original_syntax in LOSSY_CAPABLE:
            return None  # lossy pixels: decoders may legitimately differ in the last bit
        try:
            equal = np.array_equal(source.pixel_array, copy.pixel_array)
        except Exception as exc:
            return f"pixels not decodable: {type(exc).__name__}: {exc}"
        return None if equal else "decoded pixels differ"


def _elements_difference(source: Dataset, copy: Dataset) -> str | None:
    """The first non-binary element of `source` that `copy` lacks or holds another value of,
    sequence items compared by the same rule (their binary elements change with the syntax too)."""
    for element in source:
        if element.tag in (0x7FE00010, 0x00280004) or element.VR in BINARY_VRS:
            continue
        if element.tag.element == 0:  # a group length changes with the encoding
            continue
        if element.tag not in copy:
            return f"{element.tag} missing"
        other = copy[element.tag]
        name = element.keyword or str(element.tag)
        if element.VR == "SQ":
            if len(other.value) != len(element.value):
                return f"{name} has {len(other.value)} items, not {len(element.value)}"
            for item, other_item in zip(element.value, other.value, strict=True):
                problem = _elements_difference(item, other_item)
                if problem is not None:
                    return f"{name} > {problem}"
        elif other.value != element.value:
            return f"{name} {element.value!r} -> {other.value!r}"
    return None

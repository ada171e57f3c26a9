"""WADO-RS frames (PS3.18 10.4.1.1.5): single frames of an instance, uncompressed or in a lossless
syntax the node writes (as C-GET converts), each part typed by its syntax's media type."""

from __future__ import annotations

import io

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from scp_node.imaging.dicom_layout import PixelFormat
from scp_node.imaging.encapsulation import JPEGXLLossless
from scp_node.retrieve import StoredFile
from scp_node.web.errors import HttpProblem
from scp_node.web.multipart import MediaType, covers
from scp_node.web.wado import ANY_SYNTAX, part_10

OCTET_STREAM = "application/octet-stream"
# The media type of a frame in each syntax the node writes (PS3.18 Table 8.7.3-2), the default first.
FRAME_MEDIA_TYPES: dict[UID, str] = {
    ExplicitVRLittleEndian: OCTET_STREAM,
    JPEGLSLossless: "image/jls",
    JPEG2000Lossless: "image/jp2",
    HTJ2KLossless: "image/jphc",
    JPEGXLLossless: "image/jxl",
    JPEGLosslessSV1: "image/jpeg",
    RLELossless: "image/dicom-rle",
}


def frame_syntaxes(accept: str | None) -> list[UID]:
    """The syntaxes the Accept header allows frames in, best first (PS3.18 8.7.3.5: a media type
    per syntax; none given means uncompressed); 406 when the node writes none of them."""
    if not accept:
        return [ExplicitVRLittleEndian]
    ranked = []
    for position, entry in enumerate(accept.split(",")):
        media = MediaType.parse(entry)
        if media.name == "multipart/related":
            part_type = media.params.get("type", OCTET_STREAM)
        elif media.name in ("*/*", "multipart/*"):
            part_type = "*/*"
        else:
            continue
        syntax = media.params.get("transfer-syntax", ANY_SYNTAX)
        for uid, frame_type in FRAME_MEDIA_TYPES.items():
            if covers(part_type, frame_type) and syntax in (ANY_SYNTAX, uid):
                ranked.append((-media.quality, position, uid))
    if not ranked:
        writes = ", ".join(f"{kind} ({uid.name})" for uid, kind in FRAME_MEDIA_TYPES.items())
        raise HttpProblem(406, f"cannot answer {accept!r}: frames are written as {writes}")
    return list(dict.fromkeys(uid for *_, uid in sorted(ranked)))


def encoded_frames(stored: StoredFile, syntaxes: list[UID], numbers: list[int]) -> list[tuple[bytes, str]]:
    """(frame bytes, part content type) for the frames numbered (from 1) in `numbers`, in the
    first of `syntaxes` the node can produce; 404 for a frame out of range."""
    refusals = []
    for syntax in syntaxes:
        try:
            data, produced = part_10(stored, [syntax])
        except HttpProblem as exc:
            if exc.status != 406:
                raise
            refusals.append(exc.reason)
            continue
        content_type = f"{FRAME_MEDIA_TYPES[produced]}; transfer-syntax={produced}"
        return [(frame, content_type) for frame in _frames(dcmread(io.BytesIO(data)), numbers)]
    raise HttpProblem(406, "; ".join(refusals))


def _frames(ds: Dataset, numbers: list[int]) -> list[bytes]:
    if "PixelData" not in ds:
        raise HttpProblem(404, "the instance has no pixel data")
    layout = PixelFormat.from_dataset(ds)
    for number in numbers:
        if not 1 <= number <= layout.frames:
            raise HttpProblem(404, f"frame {number} does not exist (frames 1-{layout.frames})")
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        every = list(generate_frames(ds.PixelData, number_of_frames=layout.frames))
        return [every[number - 1] for number in numbers]
    if layout.bits_allocated == 1:
        raise HttpProblem(406, "uncompressed frames of 1-bit pixel data are not split by this node")
    size = layout.native_length // layout.frames
    return [ds.PixelData[(number - 1) * size : number * size] for number in numbers]


def frame_numbers(text: str) -> list[int]:
    """A frame list from the path ("1,3,5"); 400 when it is not one."""
    parts = [part.strip() for part in text.split(",")]
    if not parts or not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise HttpProblem(400, f"frame list {text!r}: expected comma-separated numbers from 1")
    return [int(part) for part in parts]

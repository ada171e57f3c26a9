"""Where the pixel data sits in a stored DICOM file, and what shape it has.

The node keeps every byte outside the pixel data verbatim, so it needs the exact byte
ranges of the file meta, the elements before Pixel Data, its header, its value and whatever
follows (trailing padding, late private elements).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info, data_element_generator, read_preamble
from pydicom.tag import Tag
from pydicom.uid import UID

from scp_node.imaging.errors import ImagingError

PIXEL_DATA = Tag(0x7FE0, 0x0010)
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM_TAG = (0xFFFE, 0xE000)
SEQUENCE_DELIMITER_TAG = (0xFFFE, 0xE0DD)


@dataclass(frozen=True)
class PixelFormat:
    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    planar: bool
    photometric: str

    @classmethod
    def from_dataset(cls, ds: Dataset) -> PixelFormat:
        return cls(
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            frames=int(ds.get("NumberOfFrames") or 1),
            samples=int(ds.get("SamplesPerPixel") or 1),
            bits_allocated=int(ds.BitsAllocated),
            bits_stored=int(ds.get("BitsStored") or ds.BitsAllocated),
            signed=int(ds.get("PixelRepresentation") or 0) == 1,
            planar=int(ds.get("PlanarConfiguration") or 0) == 1,
            photometric=str(ds.get("PhotometricInterpretation", "")),
        )

    @property
    def sample_count(self) -> int:
        return self.frames * self.rows * self.columns * self.samples

    @property
    def native_length(self) -> int:
        """Bytes of native pixel data, before the pad byte that makes the length even."""
        samples = self.sample_count
        if self.photometric == "YBR_FULL_422":  # two chroma samples shared by each pixel pair
            samples = samples * 2 // 3
        return (samples * self.bits_allocated + 7) // 8


@dataclass(frozen=True)
class FileLayout:
    """Byte offsets into a DICOM Part-10 file; `pixel_*` are None when it has no Pixel Data."""

    dataset_offset: int
    transfer_syntax: UID
    pixel_header_offset: int | None
    pixel_value_offset: int | None
    pixel_value_end: int | None
    encapsulated: bool
    dataset: Dataset  # all elements but Pixel Data (deferred): for the index and the policy

    @property
    def has_pixels(self) -> bool:
        return self.pixel_value_offset is not None


class InvalidDicomFile(ImagingError):
    """The bytes are not a DICOM file the node can store (malformed or truncated)."""


def read_layout(data: bytes) -> FileLayout:
    """Parse the file's elements without loading pixel data and locate Pixel Data.

    Also rejects files whose native pixel data is shorter than Rows x Columns x Frames say,
    which is how a truncated transfer shows up.
    """
    try:
        ds = dcmread(io.BytesIO(data), defer_size=256, force=False)
        transfer_syntax = ds.file_meta.TransferSyntaxUID
        offset = dataset_offset(data)
    except Exception as exc:
        raise InvalidDicomFile(f"cannot parse data set: {exc}") from exc
    if not transfer_syntax.is_deflated:
        _check_element_walk(data, offset, transfer_syntax)
    raw = ds._dict.get(PIXEL_DATA)
    if raw is None or transfer_syntax.is_deflated:
        return FileLayout(offset, transfer_syntax, None, None, None, False, ds)
    value_offset = raw.value_tell
    encapsulated = raw.length == UNDEFINED_LENGTH
    if encapsulated:
        value_end = _encapsulated_end(data, value_offset)
    else:
        value_end = value_offset + raw.length
        if value_end > len(data):
            raise InvalidDicomFile(f"pixel data truncated: {len(data) - value_offset} of {raw.length} bytes")
        _check_native_length(ds, raw.length)
    explicit_long = not transfer_syntax.is_implicit_VR
    header_length = 12 if explicit_long else 8
    del ds[PIXEL_DATA]
    return FileLayout(
        dataset_offset=offset,
        transfer_syntax=transfer_syntax,
        pixel_header_offset=value_offset - header_length,
        pixel_value_offset=value_offset,
        pixel_value_end=value_end,
        encapsulated=encapsulated,
        dataset=ds,
    )


def _check_element_walk(data: bytes, offset: int, transfer_syntax: UID) -> None:
    """Every top-level element must have an even length and the last must end at the last byte.

    pydicom stops quietly on a cut element header, skips over a deferred value whose length runs
    past the end and returns a short read for a small value cut at the end of the file, so a
    damaged transfer can parse as a shorter, plausible data set.
    """
    stream = io.BytesIO(data)
    stream.seek(offset)
    elements = data_element_generator(
        stream, transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian, defer_size=256
    )
    end = offset
    try:
        for element in elements:
            length = getattr(element, "length", UNDEFINED_LENGTH)  # sequences come parsed
            if length != UNDEFINED_LENGTH and length % 2:
                raise InvalidDicomFile(f"element {element.tag} has odd length {length}")
            value = getattr(element, "value", None)  # None where deferred (checked by `end`)
            if isinstance(value, bytes) and length != UNDEFINED_LENGTH and len(value) < length:
                raise InvalidDicomFile(f"element {element.tag} truncated: {len(value)} of {length} bytes")
            end = stream.tell()
    except InvalidDicomFile:
        raise
    except Exception as exc:
        raise InvalidDicomFile(f"cannot walk the data set's elements: {exc}") from exc
    if end != len(data):
        raise InvalidDicomFile(f"data set elements end at byte {end} of {len(data)}: truncated or malformed")


def _encapsulated_end(data: bytes, offset: int) -> int:
    """Walk the fragment items to just past the sequence delimiter; a short file is truncated."""
    while offset + 8 <= len(data):
        group, element, length = struct.unpack_from("<HHI", data, offset)
        offset += 8
        if (group, element) == SEQUENCE_DELIMITER_TAG:
            return offset
        if (group, element) != ITEM_TAG or offset + length > len(data):
            break
        offset += length
    raise InvalidDicomFile("encapsulated pixel data truncated or malformed")


def dataset_offset(data: bytes) -> int:
    """Offset just after the file meta group (preamble + 'DICM' + group 0002)."""
    stream = io.BytesIO(data)
    read_preamble(stream, False)
    _read_file_meta_info(stream)
    return stream.tell()


def _check_native_length(ds: Dataset, length: int) -> None:
    try:
        fmt = PixelFormat.from_dataset(ds)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidDicomFile(f"pixel data without a valid image description: {exc}") from exc
    if length < fmt.native_length:
        raise InvalidDicomFile(f"pixel data has {length} bytes, the image needs {fmt.native_length}")

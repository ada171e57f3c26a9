"""Series mode in the index: where a slice lies, which stored slice a new one may be coded
against, and which blobs were coded against a slice.

What keeps every instance retrievable, and retrieval bounded:
- a reference is a served slice of the same series and grid whose blob is final (COMPRESSED),
  at the end of a chain shorter than the codec's `series_depth`;
- a slice that others were coded against is not itself coded against another one later, so a
  chain never grows after it was formed;
- whoever takes a slice as reference bumps that row's version in the same transaction
  (`claim_reference`): a store replacing the slice at the same time fails its commit, retries,
  and then finds the new dependant, which it re-codes before the slice changes.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from scp_node.index.errors import IndexingError
from scp_node.index.models import SERVED, Instance, StorageState

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

_DECIMAL = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
# Modalities whose series are stacks of neighbouring slices.
SLICE_MODALITIES = ("CT", "MR", "PT")


class ReferenceChanged(IndexingError):
    """The slice a blob was coded against changed before the blob's row was committed."""


def slice_location(ds: Dataset) -> tuple[str, float] | None:
    """(grid, position along the slice normal) of a one-frame image with a patient position
    and orientation; None for anything else. Same grid: same rows, columns, pixel format and
    orientation, so slices of one grid are parallel and of one size."""
    frames = _decimals(ds, "NumberOfFrames") or [1.0]
    orientation = _decimals(ds, "ImageOrientationPatient")
    position = _decimals(ds, "ImagePositionPatient")
    if (
        frames != [1.0]
        or orientation is None
        or len(orientation) != 6
        or position is None
        or len(position) != 3
    ):
        return None
    pixel_format = tuple(
        ds.get(keyword)
        for keyword in ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "PixelRepresentation")
    )
    row, column = orientation[:3], orientation[3:]
    normal = (
        row[1] * column[2] - row[2] * column[1],
        row[2] * column[0] - row[0] * column[2],
        row[0] * column[1] - row[1] * column[0],
    )
    key = repr((pixel_format, tuple(round(value, 3) for value in orientation)))
    grid = hashlib.sha256(key.encode()).hexdigest()[:16]
    return grid, sum(n * p for n, p in zip(normal, position, strict=True))


def _decimals(ds: Dataset, keyword: str) -> list[float] | None:
    """A DS / IS value's numbers, read without converting a malformed value (None then)."""
    element = ds.get_item(keyword)
    if element is None or element.value is None:
        return None
    value = element.value
    if isinstance(value, bytes):
        texts = value.decode("ascii", "replace").split("\\")
    elif isinstance(value, str | int | float):
        texts = [str(value)]
    else:
        texts = [str(item) for item in value]
    if not all(_DECIMAL.match(text) for text in texts):
        return None
    numbers = [float(text) for text in texts]
    return numbers if all(map(math.isfinite, numbers)) else None


def nearest_reference(session: Session, instance: Instance, series_depth: int) -> Instance | None:
    """The stored slice `instance` may be coded against: the nearest one along the normal."""
    if (
        series_depth <= 0
        or instance.slice_grid is None
        or instance.slice_position is None
        or instance.series.modality not in SLICE_MODALITIES
        or has_dependants(session, instance.sop_instance_uid)
    ):
        return None
    return session.scalars(
        select(Instance)
        .where(
            Instance.series_pk == instance.series_pk,
            Instance.slice_grid == instance.slice_grid,
            Instance.slice_position.is_not(None),
            Instance.state == StorageState.COMPRESSED,
            SERVED,
            Instance.reference_depth < series_depth,
            Instance.id != instance.id,
        )
        .order_by(func.abs(Instance.slice_position - instance.slice_position), Instance.id)
        .limit(1)
    ).first()


def has_dependants(session: Session, sop_instance_uid: str) -> bool:
    first = session.scalar(select(Instance.id).where(Instance.reference_uid == sop_instance_uid).limit(1))
    return first is not None


def dependants_of(session: Session, sop_instance_uid: str) -> Sequence[Instance]:
    """Rows whose blob was coded against the slice."""
    return session.scalars(select(Instance).where(Instance.reference_uid == sop_instance_uid)).all()


def claim_reference(session: Session, sop_instance_uid: str, blob_sha256: str) -> int:
    """Take the slice as a reference for a blob this transaction names; returns its chain
    depth. ReferenceChanged unless it is still the version the blob was coded against."""
    reference = session.scalars(select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)).first()
    if (
        reference is None
        or reference.state != StorageState.COMPRESSED
        or reference.replaced_by_uid is not None
        or reference.blob_sha256 != blob_sha256
    ):
        raise ReferenceChanged(f"reference slice {sop_instance_uid} changed")
    bumped = session.execute(
        update(Instance)
        .where(Instance.id == reference.id, Instance.version == reference.version)
        .values(version=Instance.version + 1)
        .execution_options(synchronize_session=False)
    )
    if bumped.rowcount != 1:
        raise ReferenceChanged(f"reference slice {sop_instance_uid} changed")
    depth = reference.reference_depth
    session.expire(reference)
    return depth

"""The storage page's figures from the index: bytes received and stored in all, per codec and
per modality, and how far compression has got. Grouped queries only, like /metrics (whose
totals they share), so the page stays quick on a large archive."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from scp_node.index.models import Instance, Series, StorageState
from scp_node.web.monitoring import RECEIVED_SIZE, STORED_SIZE, StorageTotals, storage_totals

# Compression progress: which states count as what.
PENDING = (StorageState.RECEIVED, StorageState.QUEUED)
DONE = (StorageState.COMPRESSED, StorageState.REPLACED, StorageState.DROPPED)


@dataclass(frozen=True)
class Group:
    """One codec's or modality's instances: how many, bytes received and stored."""

    name: str
    instances: int
    received_bytes: int
    stored_bytes: int

    @property
    def ratio(self) -> float:
        return self.received_bytes / self.stored_bytes if self.stored_bytes else 0.0


@dataclass(frozen=True)
class Progress:
    pending: int  # received or queued: a compress job is to run
    compressed: int  # a verified blob holds it (replaced and dropped originals included)
    failed: int  # compression gave up; the spool file serves it

    @property
    def total(self) -> int:
        return self.pending + self.compressed + self.failed


@dataclass(frozen=True)
class StorageFigures:
    totals: StorageTotals
    by_codec: list[Group]
    by_modality: list[Group]
    progress: Progress


def storage_figures(session: Session) -> StorageFigures:
    totals = storage_totals(session)
    states = totals.by_state
    progress = Progress(
        pending=sum(states.get(state, 0) for state in PENDING),
        compressed=sum(states.get(state, 0) for state in DONE),
        failed=states.get(StorageState.FAILED, 0),
    )
    # Per codec: the files its blobs hold now (a lossy copy against the file it was made from).
    held_by_codec = (Instance.codec.is_not(None), Instance.state != StorageState.DROPPED)
    by_codec = _groups(session, Instance.codec, Instance.received_size, held_by_codec)
    by_modality = _groups(session, Series.modality, RECEIVED_SIZE, ())
    return StorageFigures(totals, by_codec, by_modality, progress)


def _groups(
    session: Session, key: ColumnElement, received: ColumnElement, where: tuple[ColumnElement, ...]
) -> list[Group]:
    """Per `key`, largest stored first."""
    statement = (
        select(
            key, func.count(), func.coalesce(func.sum(received), 0), func.coalesce(func.sum(STORED_SIZE), 0)
        )
        .select_from(Instance)
        .join(Instance.series)
        .where(*where)
        .group_by(key)
    )
    groups = [
        Group(name or "(none)", count, int(received_bytes), int(stored_bytes))
        for name, count, received_bytes, stored_bytes in session.execute(statement)
    ]
    return sorted(groups, key=lambda group: (-group.stored_bytes, group.name))

"""Reads and writes of the index that the handlers, jobs and CLI share."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Insert, Select, Update, bindparam, case, func, insert, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from scp_node.index.dicom_values import normalized_date, normalized_datetime, normalized_time
from scp_node.index.models import SERVED, Base, Instance, Patient, Peer, Series, StorageState, Study
from scp_node.index.slices import slice_location

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from scp_node.config import PeerConfig  # only a type here; importing pydicom costs `stats` 0.4 s

log = logging.getLogger(__name__)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value)


def _fitted(ds: Dataset, keyword: str, column: InstrumentedAttribute[str]) -> str:
    """A descriptive value cut to its index column: a sender's over-long description must not
    make the index refuse the instance (the stored file keeps the full value)."""
    return _text(ds, keyword)[: column.type.length]


def _patient_pk(session: Session, ds: Dataset) -> int:
    values = {
        "patient_name": _fitted(ds, "PatientName", Patient.patient_name),
        "birth_date": normalized_date(_text(ds, "PatientBirthDate")),
        "sex": _fitted(ds, "PatientSex", Patient.sex),
    }
    return _kept_current(session, Patient.patient_id, _text(ds, "PatientID"), values, lambda: {})


def _study_pk(session: Session, ds: Dataset) -> int:
    values = {
        "study_date": normalized_date(_text(ds, "StudyDate")),
        "study_time": normalized_time(_text(ds, "StudyTime")),
        "accession_number": _fitted(ds, "AccessionNumber", Study.accession_number),
        "study_id": _fitted(ds, "StudyID", Study.study_id),
        "study_description": _fitted(ds, "StudyDescription", Study.study_description),
        "referring_physician_name": _fitted(ds, "ReferringPhysicianName", Study.referring_physician_name),
    }
    uid = _text(ds, "StudyInstanceUID")
    return _kept_current(
        session, Study.study_instance_uid, uid, values, lambda: {"patient_pk": _patient_pk(session, ds)}
    )


def _series_pk(session: Session, ds: Dataset) -> int:
    """The series row the instance goes under, its values refreshed from `ds`. A new series
    refreshes its study's values and a new study its patient's: later instances of a series
    leave the rows above it be."""
    uid, study_uid = _text(ds, "SeriesInstanceUID"), _text(ds, "StudyInstanceUID")
    values = {
        "modality": _fitted(ds, "Modality", Series.modality),
        "series_number": _fitted(ds, "SeriesNumber", Series.series_number),
        "series_description": _fitted(ds, "SeriesDescription", Series.series_description),
    }
    indexed = session.execute(_series_by_uid(tuple(values)), {"key": uid}).first()
    if indexed is None:
        return _inserted(session, Series, series_instance_uid=uid, study_pk=_study_pk(session, ds), **values)
    pk, indexed_study_uid, *indexed_values = indexed
    if indexed_study_uid != study_uid:
        log.warning(
            "series %s arrived in study %s but is indexed under study %s; kept there",
            uid,
            study_uid,
            indexed_study_uid,
        )
    _write_changes(session, Series, pk, indexed_values, values)
    return pk


def _kept_current(
    session: Session,
    key: InstrumentedAttribute[str],
    value: str,
    values: dict[str, object],
    parent: Callable[[], dict[str, object]],
) -> int:
    """The primary key of the row whose `key` is `value`, with its `values` brought up to
    date; inserted with `parent`'s foreign key when there is none."""
    model = key.class_
    indexed = session.execute(_row_by_key(model, key.key, tuple(values)), {"key": value}).first()
    if indexed is None:
        return _inserted(session, model, **{key.key: value}, **parent(), **values)
    pk, *indexed_values = indexed
    _write_changes(session, model, pk, indexed_values, values)
    return pk


# Index writes of a received instance are Core statements built once: the ORM's unit of work
# and building a statement per call were most of the store handler's index time on slow cores
# (bench/RESULTS.md, issue 15); running a prepared statement costs a third of building it.
@cache
def _series_by_uid(names: tuple[str, ...]) -> Select:
    """Like `_row_by_key`, with the UID of the study the series is indexed under."""
    values = (Series.__table__.c[name] for name in names)
    return (
        select(Series.id, Study.study_instance_uid, *values)
        .join(Study)
        .where(Series.series_instance_uid == bindparam("key"))
    )


@cache
def _row_by_key(model: type[Base], key: str, names: tuple[str, ...]) -> Select:
    table = model.__table__
    return select(table.c.id, *(table.c[name] for name in names)).where(table.c[key] == bindparam("key"))


@cache
def _insert(model: type[Base]) -> Insert:
    return insert(model.__table__)


@cache
def _update_by_pk(model: type[Base]) -> Update:
    return update(model.__table__).where(model.__table__.c.id == bindparam("row_pk"))


def _inserted(session: Session, model: type[Base], **row: object) -> int:
    return session.execute(_insert(model), row).inserted_primary_key[0]


def _write_changes(
    session: Session, model: type[Base], pk: int, indexed: list[object], values: dict[str, object]
) -> None:
    """Update the row where `values` differ from what is indexed: an unchanged row is not
    written, so stores into one study do not queue on its row lock."""
    if indexed != list(values.values()):
        session.execute(_update_by_pk(model), {"row_pk": pk, **values})


def find_instance(session: Session, sop_instance_uid: str) -> Instance | None:
    return session.scalar(_INSTANCE_BY_UID, {"uid": sop_instance_uid})


_INSTANCE_BY_UID = select(Instance).where(Instance.sop_instance_uid == bindparam("uid"))


def unreferenced(session: Session, paths: Iterable[str | Path | None]) -> list[str]:
    """The files among `paths` that no instance row names, as this transaction sees the index.

    Ask after the change that stops naming them is flushed, remove them only after it commits:
    a crash in between leaves a stray file, never a row naming a missing one. Every file has a
    name of its own (`scp_node.storage.durable.unique_path`), so a file no committed row names
    is never named again, and deleting it is safe under any number of workers and machines.
    """
    candidates = {str(path) for path in paths if path}
    if not candidates:
        return []
    session.flush()
    named = set(session.scalars(select(Instance.blob_path).where(Instance.blob_path.in_(candidates))))
    named |= set(session.scalars(select(Instance.spool_path).where(Instance.spool_path.in_(candidates))))
    return sorted(candidates - named)


def record_received(
    session: Session,
    ds: Dataset,
    *,
    transfer_syntax_uid: str,
    calling_ae: str,
    spool_path: str,
    size: int,
    dataset_sha256: str,
    existing: Instance | None,
) -> None:
    """Insert the instance (or replace `existing`) as received and queued: the caller commits,
    then enqueues its compress job (the node re-enqueues queued rows at start).

    A new instance, the common case, is written with Core statements: through the ORM's unit
    of work the index step took 8.1-10.1 ms of CPU per instance, so 4.6-5.8 ms (bench/RESULTS.md,
    issue 15, sixth part). Two stores of one new UID still meet at the unique index; a
    replacement stays an ORM update of the loaded row, so its version column catches a
    concurrent compress job."""
    grid, position = slice_location(ds) or (None, None)
    values = {
        "sop_class_uid": _text(ds, "SOPClassUID"),
        "series_pk": _series_pk(session, ds),
        "instance_number": _fitted(ds, "InstanceNumber", Instance.instance_number),
        "acquisition_datetime": normalized_datetime(
            _text(ds, "AcquisitionDateTime") or _text(ds, "AcquisitionDate") + _text(ds, "AcquisitionTime")
        ),
        "transfer_syntax_uid": transfer_syntax_uid,
        "calling_ae": calling_ae,
        "state": StorageState.QUEUED,
        "received_size": size,
        "dataset_sha256": dataset_sha256,
        "spool_path": spool_path,
        "slice_grid": grid,
        "slice_position": position,
    }
    if existing is None:
        _inserted(session, Instance, sop_instance_uid=_text(ds, "SOPInstanceUID"), version=1, **values)
        return
    for name, value in values.items():
        setattr(existing, name, value)
    existing.codec, existing.codec_fallback = None, False
    existing.pixel_bytes_in = existing.pixel_bytes_out = existing.stored_size = None
    existing.blob_path = existing.blob_sha256 = existing.error = None
    existing.replaced_by_uid = existing.original_expires_at = None  # served again until its job runs
    existing.reference_uid, existing.reference_depth = None, 0


def instances_to_resume(session: Session) -> Sequence[str]:
    """Acknowledged instances whose compress job may never have run (the node stopped)."""
    pending = (StorageState.RECEIVED, StorageState.QUEUED)
    return session.scalars(select(Instance.sop_instance_uid).where(Instance.state.in_(pending))).all()


def instances_for_retrieve(
    session: Session,
    *,
    patient_id: str = "",
    study_uids: Sequence[str] = (),
    series_uids: Sequence[str] = (),
    sop_uids: Sequence[str] = (),
) -> Sequence[Instance]:
    """Served instances matching every given key; an empty key matches anything."""
    query = select(Instance).join(Series).join(Study).join(Patient).where(SERVED)
    if patient_id:
        query = query.where(Patient.patient_id == patient_id)
    if study_uids:
        query = query.where(Study.study_instance_uid.in_(study_uids))
    if series_uids:
        query = query.where(Series.series_instance_uid.in_(series_uids))
    if sop_uids:
        query = query.where(Instance.sop_instance_uid.in_(sop_uids))
    return session.scalars(query.order_by(Instance.id)).all()


@dataclass(frozen=True)
class IndexStats:
    patients: int
    studies: int
    series: int
    instances: int
    by_state: dict[str, int]
    by_codec: dict[str, int]
    codec_fallbacks: int
    received_bytes: int
    stored_bytes: int  # blobs for compressed instances (kept originals too), spool files for the rest
    pixel_bytes_in: int
    pixel_bytes_out: int

    @property
    def compression_ratio(self) -> float:
        return self.received_bytes / self.stored_bytes if self.stored_bytes else 0.0


def stats(session: Session) -> IndexStats:
    def count(model: type) -> int:
        return session.scalar(select(func.count()).select_from(model)) or 0

    def grouped(column) -> dict[str, int]:
        rows = session.execute(select(column, func.count()).group_by(column)).all()
        return {str(key): value for key, value in rows if key is not None}

    def total(expression) -> int:
        return int(session.scalar(select(func.coalesce(func.sum(expression), 0))) or 0)

    return IndexStats(
        patients=count(Patient),
        studies=count(Study),
        series=count(Series),
        instances=count(Instance),
        by_state=_states_checked_on_disk(session, grouped(Instance.state)),
        by_codec=grouped(Instance.codec),
        codec_fallbacks=total(case((Instance.codec_fallback, 1), else_=0)),
        # A lossy copy was made here, not received; a dropped original stores nothing.
        received_bytes=total(case((Instance.derived_from_uid.is_not(None), 0), else_=Instance.received_size)),
        stored_bytes=total(
            case(
                (Instance.state == StorageState.DROPPED, 0),
                else_=func.coalesce(Instance.stored_size, Instance.received_size),
            )
        ),
        pixel_bytes_in=total(Instance.pixel_bytes_in),
        pixel_bytes_out=total(Instance.pixel_bytes_out),
    )


def _states_checked_on_disk(session: Session, by_state: dict[str, int]) -> dict[str, int]:
    """Instances whose file is gone count as "missing", not as the state their row claims: an
    admin reading "compressed 30" must be able to retrieve 30 (`scp-node verify` says which)."""
    rows = session.execute(
        select(Instance.state, func.coalesce(Instance.blob_path, Instance.spool_path)).where(
            Instance.state != StorageState.DROPPED
        )
    )
    for state, path in rows:
        if path is None or not Path(path).exists():
            by_state[state] -= 1
            by_state["missing"] = by_state.get("missing", 0) + 1
    return {state: count for state, count in by_state.items() if count}


def list_peers(session: Session) -> Sequence[Peer]:
    return session.scalars(select(Peer).order_by(Peer.ae_title)).all()


def find_peer(session: Session, ae_title: str) -> Peer | None:
    return session.scalar(select(Peer).where(Peer.ae_title == ae_title))


def save_peer(session: Session, entry: PeerConfig) -> bool:
    """Write `entry` as the peer table's row for its AE title, replacing what was there
    (config.yaml's peers at start-up, `scp-node ae add`); True when the row is new. The
    caller commits."""
    peer = find_peer(session, entry.ae_title)
    is_new = peer is None
    peer = peer or Peer(ae_title=entry.ae_title)
    peer.host, peer.port, peer.check_host = entry.host, entry.port, entry.check_host
    peer.tls, peer.commitment_report = entry.tls, entry.commitment_report
    peer.permissions = ",".join(entry.permissions)
    session.add(peer)
    return is_new


def remove_peer(session: Session, ae_title: str) -> bool:
    """Delete the peer table's row for `ae_title` (`scp-node ae remove`, the web console);
    False when there is none. The caller commits."""
    peer = find_peer(session, ae_title)
    if peer is None:
        return False
    session.delete(peer)
    return True

"""Patient / study / series / instance rows, the storage state of each instance, and peers."""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class StorageState(enum.StrEnum):
    RECEIVED = "received"  # spooled and acknowledged, no job yet
    QUEUED = "queued"  # a compress job was enqueued
    COMPRESSED = "compressed"  # a verified blob holds the instance; the spool file is gone
    FAILED = "failed"  # compression gave up; the spool file still holds the instance
    # An original that a rule replaced with a lossy copy (replaced_by_uid); never served.
    REPLACED = "replaced"  # its blob keeps it until original_expires_at
    DROPPED = "dropped"  # its data is deleted; the row records what the copy replaced


def utcnow() -> datetime:
    return datetime.now(UTC)


class Patient(Base):
    __tablename__ = "patient"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    __tablename__ = "study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(16), default="")
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_id: Mapped[str] = mapped_column(String(16), default="")
    study_description: Mapped[str] = mapped_column(String(64), default="")
    referring_physician_name: Mapped[str] = mapped_column(String(324), default="")

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="", index=True)
    series_number: Mapped[str] = mapped_column(String(12), default="")
    series_description: Mapped[str] = mapped_column(String(64), default="")

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    instance_number: Mapped[str] = mapped_column(String(12), default="")
    # AcquisitionDateTime (or AcquisitionDate + Time), normalised for DT range matching.
    acquisition_datetime: Mapped[str] = mapped_column(String(26), default="")
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    state: Mapped[str] = mapped_column(String(16), default=StorageState.RECEIVED, index=True)
    # Part-10 file as received; its data set's SHA-256 is what byte-exact retrieval must match.
    received_size: Mapped[int] = mapped_column(BigInteger)
    dataset_sha256: Mapped[str] = mapped_column(String(64))
    spool_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Filled when a verified blob replaced the spool file.
    codec: Mapped[str | None] = mapped_column(String(32), nullable=True)
    codec_fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    pixel_bytes_in: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    pixel_bytes_out: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    stored_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    blob_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    blob_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Lossy copies: the copy names its original, the original its copy (and is then not served).
    derived_from_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    replaced_by_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    original_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Series mode (index/slices.py): the slice's grid (same value: same size, pixel format and
    # orientation) and its position along the slice normal, from ingest; and the stored slice
    # whose pixels the blob was coded against, with the length of that chain of slices.
    slice_grid: Mapped[str | None] = mapped_column(String(16), nullable=True)
    slice_position: Mapped[float | None] = mapped_column(Float, nullable=True)
    reference_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    reference_depth: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Optimistic locking: a store and a compress job (or two stores of the same UID) that both
    # update the row cannot silently overwrite each other; the later commit fails and retries.
    version: Mapped[int] = mapped_column(Integer, default=1)

    series: Mapped[Series] = relationship(back_populates="instances")

    __mapper_args__ = {"version_id_col": version}


# Instances that queries and retrievals see: not originals replaced by a lossy copy.
SERVED = Instance.replaced_by_uid.is_(None)


class Peer(Base):
    """A remote AE the node knows: who may do what, and where C-MOVE may send."""

    __tablename__ = "peer"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int] = mapped_column(Integer, default=104)
    permissions: Mapped[str] = mapped_column(String(128), default="echo,store,get")
    # When set, associations from this AE title must come from an address `host` resolves to.
    check_host: Mapped[bool] = mapped_column(Boolean, default=False)
    # Associations the node opens to this peer (C-MOVE, commitment reports) use DICOM TLS.
    tls: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Where storage commitment results go: "same_association" (falling back to a new one when
    # the peer has released it) or "new_association" (what every SCU must accept, PS3.4 J.3.3).
    commitment_report: Mapped[str] = mapped_column(
        String(16), default="same_association", server_default="same_association"
    )

    @property
    def permission_set(self) -> set[str]:
        return {p for p in self.permissions.split(",") if p}

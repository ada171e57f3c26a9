"""repository.record_received on its own, on SQLite and PostgreSQL: the patient / study / series
rows a received instance goes under, written as Core statements, and a replacement of a stored
instance through its loaded row."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import Engine, event, select

from scp_node.index.database import create_index_engine, session_factory, upgrade
from scp_node.index.models import Instance, Patient, Series, StorageState, Study
from scp_node.index.repository import find_instance, record_received


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    upgrade(database_url)
    engine = create_index_engine(database_url)
    yield engine
    engine.dispose()


def _instance(study: str, series: str, **values: str) -> Dataset:
    ds = Dataset()
    ds.PatientID, ds.PatientName = "P1", "Doe^John"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
    ds.SOPClassUID, ds.Modality, ds.SeriesDescription = "1.2.840.10008.5.1.4.1.1.2", "CT", "Chest"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _record(engine: Engine, ds: Dataset, *, sha256: str = "0" * 64) -> None:
    with session_factory(engine)() as session:
        record_received(
            session,
            ds,
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            calling_ae="MODALITY",
            spool_path=f"/spool/{ds.SOPInstanceUID}-{sha256[:8]}",
            size=1000,
            dataset_sha256=sha256,
            existing=find_instance(session, str(ds.SOPInstanceUID)),
        )
        session.commit()


def _writes(engine: Engine) -> list[str]:
    """The INSERT / UPDATE statements the engine runs from now on."""
    statements: list[str] = []

    def seen(_conn, _cursor, statement: str, *_args) -> None:
        words = statement.split()
        if words[0] == "INSERT":  # INSERT INTO <table>
            statements.append(f"INSERT {words[2]}")
        elif words[0] == "UPDATE":  # UPDATE <table> SET
            statements.append(f"UPDATE {words[1]}")

    event.listen(engine, "before_cursor_execute", seen)
    return statements


def test_instances_of_one_series_share_its_rows_and_only_a_change_is_written(engine: Engine) -> None:
    study, series = generate_uid(), generate_uid()
    writes = _writes(engine)
    _record(engine, _instance(study, series))
    assert writes == ["INSERT patient", "INSERT study", "INSERT series", "INSERT instance"]

    writes.clear()
    _record(engine, _instance(study, series))
    assert writes == ["INSERT instance"], "an unchanged series row is not written (no row lock per store)"

    writes.clear()
    _record(engine, _instance(study, series, SeriesDescription="Chest 1mm"))
    assert writes == ["UPDATE series", "INSERT instance"]

    with session_factory(engine)() as session:
        assert session.scalar(select(Series.series_description)) == "Chest 1mm"
        assert session.scalar(select(Study.study_instance_uid)) == study
        assert session.scalar(select(Patient.patient_name)) == "Doe^John"
        instances = session.scalars(select(Instance)).all()
        assert len(instances) == 3
        assert {instance.series.series_instance_uid for instance in instances} == {series}
        assert {(instance.state, instance.version) for instance in instances} == {(StorageState.QUEUED, 1)}


def test_a_new_series_refreshes_its_study_and_a_new_study_its_patient(engine: Engine) -> None:
    study = generate_uid()
    _record(engine, _instance(study, generate_uid(), StudyDescription="CT chest"))
    _record(
        engine, _instance(study, generate_uid(), StudyDescription="CT chest/abdomen", PatientName="Doe^J")
    )
    with session_factory(engine)() as session:
        assert session.scalars(select(Study.study_description)).all() == ["CT chest/abdomen"]
        assert session.scalars(select(Patient.patient_name)).all() == ["Doe^John"]
    _record(engine, _instance(generate_uid(), generate_uid(), PatientName="Doe^J"))
    with session_factory(engine)() as session:
        assert session.scalars(select(Patient.patient_name)).all() == ["Doe^J"]
        assert len(session.scalars(select(Study.id)).all()) == 2


def test_a_series_sent_under_another_study_stays_where_it_is_indexed(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    first_study, other_study, series = generate_uid(), generate_uid(), generate_uid()
    _record(engine, _instance(first_study, series))
    with caplog.at_level(logging.WARNING, logger="scp_node.index.repository"):
        _record(engine, _instance(other_study, series))
    assert (
        f"series {series} arrived in study {other_study} but is indexed under study {first_study}"
        in caplog.text
    )
    with session_factory(engine)() as session:
        assert session.scalars(select(Study.study_instance_uid)).all() == [first_study]
        assert len(session.scalars(select(Instance.id)).all()) == 2


def test_a_replaced_instance_keeps_its_row_and_is_queued_again(engine: Engine) -> None:
    ds = _instance(generate_uid(), generate_uid())
    _record(engine, ds, sha256="a" * 64)
    with session_factory(engine)() as session:
        stored = find_instance(session, str(ds.SOPInstanceUID))
        assert stored is not None
        stored.state, stored.codec, stored.blob_path = StorageState.COMPRESSED, "jpegxl", "/blobs/x"
        session.commit()
        row_id = stored.id
    _record(engine, ds, sha256="b" * 64)
    with session_factory(engine)() as session:
        replaced = find_instance(session, str(ds.SOPInstanceUID))
        assert replaced is not None
        assert (replaced.id, replaced.state, replaced.dataset_sha256) == (
            row_id,
            StorageState.QUEUED,
            "b" * 64,
        )
        assert (replaced.codec, replaced.blob_path, replaced.version) == (None, None, 3)

"""scp_node.index.query on its own: identifiers checked against the model, matching done in
SQL, responses built from the rows; an index written with repository.record_received, no
DICOM association involved."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from scp_node.index.database import create_index_engine, session_factory, upgrade
from scp_node.index.query import InvalidQuery, Query, matches
from scp_node.index.repository import record_received

STUDIES = {
    "A": {"PatientID": "P1", "PatientName": "Doe^John", "StudyDate": "20200115", "Modality": "CT"},
    "B": {"PatientID": "P2", "PatientName": "ROE^Jane", "StudyDate": "20210301", "Modality": "MR"},
    "C": {"PatientID": "P2", "PatientName": "ROE^Jane", "StudyDate": "20210302", "Modality": "MR"},
}


@pytest.fixture
def index(tmp_path: Path) -> Iterator[tuple[Session, dict[str, str]]]:
    """Three studies of two patients, one series each, two instances per series."""
    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    upgrade(url)
    engine = create_index_engine(url)
    uids: dict[str, str] = {}
    with session_factory(engine)() as session:
        for label, values in STUDIES.items():
            uids[label], uids[f"{label}/series"] = generate_uid(), generate_uid()
            for number in (1, 2):
                ds = Dataset()
                for keyword, value in values.items():
                    setattr(ds, keyword, value)
                ds.StudyInstanceUID, ds.SeriesInstanceUID = uids[label], uids[f"{label}/series"]
                ds.SOPInstanceUID = uids[f"{label}/{number}"] = generate_uid()
                ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
                ds.InstanceNumber = str(number)
                record_received(
                    session,
                    ds,
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    calling_ae="MODALITY",
                    spool_path=f"/spool/{ds.SOPInstanceUID}",
                    size=1000,
                    dataset_sha256="0" * 64,
                    existing=None,
                )
        session.commit()
        yield session, uids
    engine.dispose()


def _identifier(level: str, **keys: object) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    return identifier


def test_names_match_case_insensitively_with_wildcards_and_dates_by_range(index) -> None:
    session, uids = index
    query = Query.parse(
        "study", _identifier("STUDY", PatientName="roe*", StudyDate="20210302-", StudyInstanceUID="")
    )
    assert [r.StudyInstanceUID for r in matches(session, query)] == [uids["C"]]


def test_counts_and_modalities_in_study_come_with_the_responses(index) -> None:
    session, uids = index
    identifier = _identifier(
        "STUDY", PatientID="P2", StudyInstanceUID="", ModalitiesInStudy="", NumberOfStudyRelatedInstances=""
    )
    responses = list(matches(session, Query.parse("patient", identifier)))
    assert sorted(
        (r.StudyInstanceUID, r.ModalitiesInStudy, r.NumberOfStudyRelatedInstances) for r in responses
    ) == sorted([(uids["B"], "MR", 2), (uids["C"], "MR", 2)])


def test_counts_of_the_levels_above_come_with_series_and_image_responses(index) -> None:
    """Each count is of its own level's row: a SERIES response can carry its study's and its
    patient's counts, an IMAGE response its series' count."""
    session, uids = index
    series = _identifier(
        "SERIES",
        PatientID="P2",
        StudyInstanceUID=uids["B"],
        SeriesInstanceUID="",
        NumberOfPatientRelatedStudies="",
        NumberOfPatientRelatedInstances="",
        NumberOfStudyRelatedSeries="",
        NumberOfStudyRelatedInstances="",
        NumberOfSeriesRelatedInstances="",
    )
    (response,) = matches(session, Query.parse("patient", series))
    counts = [
        response.NumberOfPatientRelatedStudies,
        response.NumberOfPatientRelatedInstances,
        response.NumberOfStudyRelatedSeries,
        response.NumberOfStudyRelatedInstances,
        response.NumberOfSeriesRelatedInstances,
    ]
    assert (response.SeriesInstanceUID, counts) == (uids["B/series"], [2, 4, 1, 2, 2])
    image = _identifier(
        "IMAGE",
        StudyInstanceUID=uids["A"],
        SeriesInstanceUID=uids["A/series"],
        SOPInstanceUID="",
        NumberOfSeriesRelatedInstances="",
        NumberOfStudyRelatedSeries="",
    )
    responses = list(matches(session, Query.parse("study", image)))
    assert sorted(
        (r.SOPInstanceUID, r.NumberOfSeriesRelatedInstances, r.NumberOfStudyRelatedSeries) for r in responses
    ) == sorted([(uids["A/1"], 2, 1), (uids["A/2"], 2, 1)])


def test_uid_lists_match_any_of_them(index) -> None:
    session, uids = index
    identifier = _identifier(
        "IMAGE", StudyInstanceUID=uids["A"], SeriesInstanceUID=uids["A/series"], SOPInstanceUID=[uids["A/2"]]
    )
    assert [r.SOPInstanceUID for r in matches(session, Query.parse("study", identifier))] == [uids["A/2"]]


@pytest.mark.parametrize(
    ("model", "level", "keys"),
    [
        ("study", "SERIES", {"SeriesInstanceUID": ""}),  # no StudyInstanceUID
        ("study", "IMAGE", {"SOPInstanceUID": ""}),
        ("patient", "STUDY", {"StudyInstanceUID": ""}),  # no PatientID
        ("study", "SERIES", {"StudyInstanceUID": "1.2.*"}),  # a wildcard is not a unique key
    ],
)
def test_hierarchical_queries_need_the_unique_keys_above_and_relational_ones_do_not(
    index, model: str, level: str, keys: dict
) -> None:
    session, _uids = index
    with pytest.raises(InvalidQuery):
        Query.parse(model, _identifier(level, **keys))
    if "1.2.*" not in str(keys.values()):
        assert list(matches(session, Query.parse(model, _identifier(level, **keys), relational=True)))


def test_relational_series_query_returns_the_series_with_their_study(index) -> None:
    session, uids = index
    query = Query.parse("study", _identifier("SERIES", Modality="MR", SeriesInstanceUID=""), relational=True)
    found = sorted((r.StudyInstanceUID, r.SeriesInstanceUID) for r in matches(session, query))
    assert found == sorted([(uids["B"], uids["B/series"]), (uids["C"], uids["C/series"])])


@pytest.mark.parametrize(
    "keys",
    [
        {"QueryRetrieveLevel": "FOO"},
        {"QueryRetrieveLevel": "PATIENT", "PatientID": ""},  # Study Root has no PATIENT level
        {"QueryRetrieveLevel": "STUDY", "StudyDate": "2020-01-01-"},
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.*"},
    ],
)
def test_invalid_identifiers_raise_invalid_query(index, keys: dict) -> None:
    session, _uids = index
    keys = dict(keys)
    with pytest.raises(InvalidQuery):
        list(matches(session, Query.parse("study", _identifier(keys.pop("QueryRetrieveLevel"), **keys))))

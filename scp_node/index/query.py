"""C-FIND against the index: DICOM matching (PS3.4 C.2.2.2) turned into SQL, and the values of
the return keys for each matching row.

Each query level has a table of the attributes the index holds: their column (or count) and
how they match. Matching is done in SQL on SQLite and PostgreSQL alike: single value, universal
(empty or '*'), wildcards (* and ?; PN case-insensitive, everything else case-sensitive), UID
lists, lists of values, and DA / TM / DT ranges on values stored in a sortable spelling.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import ColumnElement, Select, and_, false, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from scp_node.index.dicom_values import InvalidValue, TemporalVR, period, split_range
from scp_node.index.errors import IndexingError
from scp_node.index.models import SERVED, Instance, Patient, Series, Study

Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
Model = Literal["patient", "study"]
MatchKind = Literal["text", "pn", "uid", "DA", "TM", "DT", "modalities", "count"]

LEVELS: tuple[Level, ...] = ("PATIENT", "STUDY", "SERIES", "IMAGE")
ENTITY = {"PATIENT": Patient, "STUDY": Study, "SERIES": Series, "IMAGE": Instance}
UNIQUE_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}


class InvalidQuery(IndexingError):
    """The identifier breaks the rules of the information model (answered 0xA900)."""


@dataclass(frozen=True)
class Attribute:
    level: Level
    kind: MatchKind
    column: ColumnElement | InstrumentedAttribute | None = None  # None: computed per row


_STUDY_SERIES = Series.study_pk == Study.id


def _count_below(
    owner: type[Patient | Study | Series], counted: Literal["studies", "series", "instances"]
) -> ColumnElement[int]:
    """The number of `counted` (served instances only) under the outer query's `owner` row.
    The counted tables are aliases correlated with `owner` alone: a SERIES or IMAGE query has
    Study and Series in its own FROM, which would otherwise swallow the count's."""
    study, series, instance = aliased(Study), aliased(Series), aliased(Instance)
    if counted == "studies":
        statement = select(func.count(study.id))
    elif counted == "series":
        statement = select(func.count(series.id)).join(study, series.study_pk == study.id)
    else:
        statement = (
            select(func.count(instance.id))
            .join(series, instance.series_pk == series.id)
            .join(study, series.study_pk == study.id)
            .where(instance.replaced_by_uid.is_(None))  # SERVED, on the alias
        )
    belongs = {
        Patient: study.patient_pk == Patient.id,
        Study: study.id == Study.id,
        Series: series.id == Series.id,
    }[owner]
    return statement.where(belongs).correlate(owner).scalar_subquery()


ATTRIBUTES: dict[str, Attribute] = {
    "PatientName": Attribute("PATIENT", "pn", Patient.patient_name),
    "PatientID": Attribute("PATIENT", "text", Patient.patient_id),
    "PatientBirthDate": Attribute("PATIENT", "DA", Patient.birth_date),
    "PatientSex": Attribute("PATIENT", "text", Patient.sex),
    "NumberOfPatientRelatedStudies": Attribute("PATIENT", "count", _count_below(Patient, "studies")),
    "NumberOfPatientRelatedSeries": Attribute("PATIENT", "count", _count_below(Patient, "series")),
    "NumberOfPatientRelatedInstances": Attribute("PATIENT", "count", _count_below(Patient, "instances")),
    "StudyInstanceUID": Attribute("STUDY", "uid", Study.study_instance_uid),
    "StudyDate": Attribute("STUDY", "DA", Study.study_date),
    "StudyTime": Attribute("STUDY", "TM", Study.study_time),
    "AccessionNumber": Attribute("STUDY", "text", Study.accession_number),
    "StudyID": Attribute("STUDY", "text", Study.study_id),
    "StudyDescription": Attribute("STUDY", "text", Study.study_description),
    "ReferringPhysicianName": Attribute("STUDY", "pn", Study.referring_physician_name),
    "ModalitiesInStudy": Attribute("STUDY", "modalities"),
    "NumberOfStudyRelatedSeries": Attribute("STUDY", "count", _count_below(Study, "series")),
    "NumberOfStudyRelatedInstances": Attribute("STUDY", "count", _count_below(Study, "instances")),
    "SeriesInstanceUID": Attribute("SERIES", "uid", Series.series_instance_uid),
    "Modality": Attribute("SERIES", "text", Series.modality),
    "SeriesNumber": Attribute("SERIES", "text", Series.series_number),
    "SeriesDescription": Attribute("SERIES", "text", Series.series_description),
    "NumberOfSeriesRelatedInstances": Attribute("SERIES", "count", _count_below(Series, "instances")),
    "SOPInstanceUID": Attribute("IMAGE", "uid", Instance.sop_instance_uid),
    "SOPClassUID": Attribute("IMAGE", "uid", Instance.sop_class_uid),
    "InstanceNumber": Attribute("IMAGE", "text", Instance.instance_number),
    "AcquisitionDateTime": Attribute("IMAGE", "DT", Instance.acquisition_datetime),
}


@dataclass(frozen=True)
class Query:
    model: Model
    level: Level
    identifier: Dataset

    @classmethod
    def parse(cls, model: Model, identifier: Dataset, *, relational: bool = False) -> Query:
        """Check the identifier against the hierarchical model (PS3.4 C.4.1.2.1), or, for a
        relational query (C.4.1.2.2), let the levels above be matched on any key or none."""
        level = str(identifier.get("QueryRetrieveLevel", "")).upper()
        if level not in LEVELS:
            raise InvalidQuery(f"QueryRetrieveLevel {level!r} is not PATIENT, STUDY, SERIES or IMAGE")
        if model == "study" and level == "PATIENT":
            raise InvalidQuery("the Study Root model has no PATIENT level")
        query = cls(model, level, identifier)
        if relational:
            return query
        for upper in query.levels_above:
            value = identifier.get(UNIQUE_KEY[upper])
            if not value or isinstance(value, MultiValue) or "*" in str(value) or "?" in str(value):
                raise InvalidQuery(f"{level} level needs a single {UNIQUE_KEY[upper]}")
        return query

    @property
    def levels_above(self) -> tuple[Level, ...]:
        """Levels whose unique key must be given as a single value."""
        first = 0 if self.model == "patient" else 1
        return LEVELS[first : LEVELS.index(self.level)]

    @property
    def levels_joined(self) -> tuple[Level, ...]:
        """The query level and those above it: their attributes can be matched and returned
        (Study Root folds the patient attributes into its STUDY level)."""
        return LEVELS[: LEVELS.index(self.level) + 1]

    def requested_keys(self) -> list[str]:
        """Requested keys the index holds, at or above the query level."""
        allowed = self.levels_joined
        return [
            element.keyword
            for element in self.identifier
            if element.keyword in ATTRIBUTES and ATTRIBUTES[element.keyword].level in allowed
        ]

    def statement(self) -> Select:
        """One row per matching entity at the query level, with its ancestors."""
        entity = ENTITY[self.level]
        statement = select(*(ENTITY[level] for level in self.levels_joined)).select_from(entity)
        for parent in reversed(self.levels_joined[:-1]):
            statement = statement.join(ENTITY[parent])
        for keyword in self.requested_keys():
            condition = _condition(ATTRIBUTES[keyword], self.identifier[keyword].value)
            if condition is not None:
                statement = statement.where(condition)
        if self.level == "IMAGE":
            statement = statement.where(SERVED)
        return statement.order_by(entity.id)


def _values(value: object) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, MultiValue | list) else [value]
    return [str(item) for item in items if str(item) != ""]


def _condition(attribute: Attribute, value: object) -> ColumnElement | None:
    """The SQL condition a query value asks for; None for universal matching."""
    values = _values(value)
    if not values or values == ["*"] or attribute.kind == "count":
        return None
    if attribute.kind == "modalities":
        modality = select(Series.id).where(_STUDY_SERIES, Series.modality.in_(values))
        return modality.exists()
    column = attribute.column
    if attribute.kind == "uid":
        if any("*" in v or "?" in v for v in values):
            raise InvalidQuery("wildcards are not allowed in UIDs")
        return column.in_(values)
    conditions = [_single(attribute.kind, column, v) for v in values]
    return or_(*conditions) if len(conditions) > 1 else conditions[0]


def _single(kind: MatchKind, column: ColumnElement, value: str) -> ColumnElement:
    if kind in ("DA", "TM", "DT"):
        return _temporal(kind, column, value)
    if "*" in value or "?" in value:
        pattern = _like_pattern(value)
        return column.ilike(pattern, escape="\\") if kind == "pn" else column.like(pattern, escape="\\")
    if kind == "pn":
        return func.lower(column) == value.lower()
    return column == value


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _temporal(vr: TemporalVR, column: ColumnElement, value: str) -> ColumnElement:
    try:
        bounds = split_range(vr, value)
        if bounds is None:
            first, last = period(vr, value)
            return column.between(first, last) if first != last else column == first
        lower, upper = bounds
        conditions = [column != ""]
        if lower:
            conditions.append(column >= period(vr, lower)[0])
        if upper:
            conditions.append(column <= period(vr, upper)[1])
        if lower and upper and period(vr, lower)[0] > period(vr, upper)[1]:
            return false()
        return and_(*conditions)
    except InvalidValue as exc:
        raise InvalidQuery(str(exc)) from exc


def matches(session: Session, query: Query, batch: int = 500) -> Iterator[Dataset]:
    """Response identifiers: the requested keys (unknown ones empty) filled from each row."""
    keys = query.requested_keys()
    counted = [k for k in keys if ATTRIBUTES[k].kind == "count"]
    count_columns = [ATTRIBUTES[k].column.label(k) for k in counted]
    statement = query.statement().add_columns(*count_columns)
    for row in session.execute(statement.execution_options(yield_per=batch)):
        entities = dict(zip(query.levels_joined, row, strict=False))
        yield _response(session, query, entities, {k: getattr(row, k) for k in counted})


def _response(session: Session, query: Query, entities: dict, counts: dict[str, int]) -> Dataset:
    response = Dataset()
    for element in query.identifier:
        if element.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet"):
            continue
        response.add_new(element.tag, element.VR, None)
    response.QueryRetrieveLevel = query.level
    for level in (*query.levels_above, query.level):
        setattr(response, UNIQUE_KEY[level], _value_of(UNIQUE_KEY[level], entities))
    for keyword in query.requested_keys():
        attribute = ATTRIBUTES[keyword]
        if attribute.kind == "count":
            setattr(response, keyword, counts[keyword])
        elif attribute.kind == "modalities":
            setattr(response, keyword, _modalities(session, entities["STUDY"].id))
        else:
            setattr(response, keyword, _value_of(keyword, entities))
    if any(not str(element.value or "").isascii() for element in response if element.VR in _TEXT_VRS):
        response.SpecificCharacterSet = "ISO_IR 192"
    return response


_TEXT_VRS = {"PN", "LO", "SH", "CS", "LT", "ST", "UT"}
_COLUMN_NAME = {
    keyword: attribute.column.key
    for keyword, attribute in ATTRIBUTES.items()
    if attribute.kind not in ("count", "modalities")
}


def _value_of(keyword: str, entities: dict) -> str:
    return getattr(entities[ATTRIBUTES[keyword].level], _COLUMN_NAME[keyword]) or ""


def _modalities(session: Session, study_id: int) -> list[str]:
    rows = session.scalars(
        select(Series.modality).distinct().where(Series.study_pk == study_id, Series.modality != "")
    )
    return sorted(rows)

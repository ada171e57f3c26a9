"""QIDO-RS (PS3.18 10.6): search parameters turned into a C-FIND identifier and answered by the
same matching as C-FIND (scp_node.index.query), so both services find the same instances.

Every search is a Study Root query that may match on any level's keys (a relational query, as
QIDO allows searching /series or /instances across studies). `includefield`, `limit` and
`offset` shape the answer; `fuzzymatching` is accepted and ignored (matching is exact, as the
response's Warning header says).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag
from sqlalchemy.orm import Session

from scp_node.index.query import ATTRIBUTES, InvalidQuery, Level, Query, matches
from scp_node.web.errors import HttpProblem

# Attributes each level returns without includefield (PS3.18 Tables 10.6.3-3 to 10.6.3-5, those
# the index holds). A search not scoped to a study (or series) also returns that level's keys.
STUDY_KEYS: tuple[str, ...] = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_KEYS = (
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesInstanceUID",
    "NumberOfSeriesRelatedInstances",
)
INSTANCE_KEYS = ("SOPClassUID", "SOPInstanceUID", "InstanceNumber")
CONTROL_PARAMETERS = {"includefield", "limit", "offset", "fuzzymatching"}
NOT_FUZZY = '299 scp-node "fuzzymatching is not supported: matching is exact"'


@dataclass
class Search:
    """One QIDO-RS request: the identifier for C-FIND matching and the page asked for."""

    level: Level
    identifier: Dataset
    limit: int | None = None
    offset: int = 0
    warnings: list[str] = field(default_factory=list)

    def results(self, session: Session) -> Iterator[Dataset]:
        """The matches of this page, as C-FIND would answer them; 400 for an invalid query."""
        try:
            query = Query.parse("study", self.identifier, relational=True)
            found = matches(session, query)
            stop = None if self.limit is None else self.offset + self.limit
            for response in islice(found, self.offset, stop):
                del response.QueryRetrieveLevel
                yield response
        except InvalidQuery as exc:
            raise HttpProblem(400, f"invalid search: {exc}") from exc


def parse_search(level: Level, params: list[tuple[str, str]], scope: Mapping[str, str]) -> Search:
    """A Search from the query string's (name, value) pairs; `scope` holds the UIDs of the path
    (/studies/{study}/series...). Bad parameters are a 400 naming them."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    search = Search(level, identifier)
    keys = _default_keys(level, scope)
    for name, value in params:
        if name == "includefield":
            keys += _included(value, level)
        elif name in ("limit", "offset"):
            setattr(search, name, _count(name, value))
        elif name == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise HttpProblem(400, f"fuzzymatching={value!r}: expected true or false")
            if value.lower() == "true":
                search.warnings.append(NOT_FUZZY)
        else:
            _set_match(identifier, _tag(name), value)
    for keyword, uid in scope.items():
        _set_match(identifier, Tag(tag_for_keyword(keyword)), uid)
    ignored = [
        element.keyword
        for element in identifier
        if element.value not in (None, "") and element.keyword not in (*ATTRIBUTES, "QueryRetrieveLevel")
    ]
    if ignored:
        search.warnings.append(f'299 scp-node "not supported for matching, ignored: {",".join(ignored)}"')
    for keyword in keys:
        if keyword not in identifier:
            identifier.add_new(Tag(tag_for_keyword(keyword)), dictionary_VR(tag_for_keyword(keyword)), None)
    return search


def _default_keys(level: Level, scope: Mapping[str, str]) -> list[str]:
    keys = ["StudyInstanceUID"] if "StudyInstanceUID" in scope and level != "STUDY" else list(STUDY_KEYS)
    if level in ("SERIES", "IMAGE"):
        keys += (
            ["SeriesInstanceUID"] if "SeriesInstanceUID" in scope and level == "IMAGE" else list(SERIES_KEYS)
        )
    if level == "IMAGE":
        keys += INSTANCE_KEYS
    return keys


def _included(value: str, level: Level) -> list[str]:
    """includefield: a comma list of attributes, or `all` (every attribute the index holds)."""
    if value == "all":
        order = ("PATIENT", "STUDY", "SERIES", "IMAGE")
        allowed = order[: order.index(level) + 1]
        return [keyword for keyword, attribute in ATTRIBUTES.items() if attribute.level in allowed]
    return [keyword_for_tag(_tag(name)) for name in value.split(",") if name.strip()]


def _count(name: str, value: str) -> int:
    if not value.isdigit():
        raise HttpProblem(400, f"{name}={value!r}: expected a non-negative integer")
    return int(value)


def _tag(name: str) -> BaseTag:
    """An attribute named by keyword or as 8 hex digits; sequences and private tags are refused."""
    name = name.strip()
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        tag = Tag(int(name, 16))
        if not keyword_for_tag(tag):
            raise HttpProblem(400, f"unknown attribute {name!r}")
        return tag
    number = tag_for_keyword(name)
    if number is None:
        raise HttpProblem(400, f"unknown attribute {name!r}: use a DICOM keyword or 8 hex digits")
    return Tag(number)


def _set_match(identifier: Dataset, tag: BaseTag, value: str) -> None:
    """The match value in the identifier; UID lists may be separated by commas (PS3.18 8.3.4.1)."""
    vr = dictionary_VR(tag)
    if vr == "SQ" or " or " in vr:
        raise HttpProblem(400, f"cannot match on {keyword_for_tag(tag)} ({vr})")
    if vr == "UI":
        value = value.replace(",", "\\")
    identifier.add_new(tag, vr, value)

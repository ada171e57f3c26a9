"""The studies browser: search (patient name or ID, study date, modality), a study's series,
a series' instances with thumbnails and how each is stored.

Searches go through QIDO-RS's parsing and C-FIND's matching (scp_node.web.qido over
scp_node.index.query), so the console finds what a viewer or a PACS would. The storage
details of an instance (state, codec, sizes) come from its index row; thumbnails are the
rendered endpoint's images, behind the console's login instead of HTTP credentials.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scp_node.index.models import SERVED, Instance, Series, StorageState
from scp_node.index.query import Level
from scp_node.web.console.pages import render
from scp_node.web.console.visitors import Console, require
from scp_node.web.errors import HttpProblem
from scp_node.web.qido import parse_search
from scp_node.web.rendered import render as render_frame
from scp_node.web.wado import Target, native

PAGE_SIZE = 50
THUMBNAIL = (128, 128)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")  # what <input type="date"> sends
_MODALITY = re.compile(r"^[A-Z0-9_]{1,16}$")


@dataclass(frozen=True)
class StudySearch:
    """The search form's fields, as typed."""

    patient_name: str = ""
    patient_id: str = ""
    date_from: str = ""
    date_to: str = ""
    modality: str = ""
    offset: int = 0

    @classmethod
    def from_query(cls, request: Request) -> StudySearch:
        params = request.query_params
        offset = params.get("offset", "0")
        if not offset.isdigit():
            raise HttpProblem(400, f"offset={offset!r}: expected a non-negative integer")
        return cls(
            patient_name=params.get("patient_name", "").strip(),
            patient_id=params.get("patient_id", "").strip(),
            date_from=params.get("date_from", "").strip(),
            date_to=params.get("date_to", "").strip(),
            modality=params.get("modality", "").strip().upper(),
            offset=int(offset),
        )

    def qido_parameters(self) -> list[tuple[str, str]]:
        """The QIDO-RS query: names and IDs match anywhere unless they hold wildcards already."""
        params = [("limit", str(PAGE_SIZE + 1)), ("offset", str(self.offset))]
        for keyword, value in (("PatientName", self.patient_name), ("PatientID", self.patient_id)):
            if value:
                params.append((keyword, value if "*" in value or "?" in value else f"*{value}*"))
        if self.date_from or self.date_to:
            params.append(("StudyDate", f"{_da(self.date_from)}-{_da(self.date_to)}"))
        if self.modality:
            if not _MODALITY.match(self.modality):
                raise HttpProblem(400, f"modality {self.modality!r}: expected a code such as CT or MR")
            params.append(("ModalitiesInStudy", self.modality))
        return params


def _da(date: str) -> str:
    if not date:
        return ""
    match = _DATE.match(date)
    if match is None:
        raise HttpProblem(400, f"date {date!r}: expected YYYY-MM-DD")
    return "".join(match.groups())


def _texts(ds: Dataset) -> dict[str, str]:
    """A QIDO answer as the page shows it: each attribute's value as text (lists joined,
    dates as YYYY-MM-DD)."""
    texts = {}
    for element in ds:
        value = element.value
        if isinstance(value, MultiValue | list):
            text = ", ".join(str(item) for item in value)
        else:
            text = "" if value is None else str(value)
        if element.VR == "DA" and len(text) == 8 and text.isdigit():
            text = f"{text[:4]}-{text[4:6]}-{text[6:]}"
        texts[element.keyword] = text
    return texts


def _uid(text: str) -> str:
    if len(text) > 64 or not _UID.match(text):
        raise HttpProblem(400, f"{text[:80]!r} is not a UID")
    return text


class StudyPages:
    def __init__(self, console: Console) -> None:
        self.console = console

    def routes(self) -> list[Route]:
        series = "/studies/{study}/series/{series}"
        return [
            Route("/studies", self.search),
            Route("/studies/{study}", self.study),
            Route(series, self.series),
            Route(series + "/instances/{instance}/thumbnail", self.thumbnail),
        ]

    def search(self, request: Request) -> Response:
        require(request, "find")
        search = StudySearch.from_query(request)
        try:
            found = self._qido("STUDY", search.qido_parameters(), {})
        except HttpProblem as exc:
            if exc.status != 400:
                raise
            return render(
                request, "studies.html", status=400, search=search, studies=[], more=False, error=exc.reason
            )
        return render(
            request,
            "studies.html",
            search=search,
            studies=found[:PAGE_SIZE],
            more=len(found) > PAGE_SIZE,
            next_offset=search.offset + PAGE_SIZE,
            error="",
        )

    def study(self, request: Request) -> Response:
        require(request, "find")
        uid = _uid(request.path_params["study"])
        (study,) = self._one("STUDY", {"StudyInstanceUID": uid}, f"no study {uid}")
        series = self._qido("SERIES", [], {"StudyInstanceUID": uid})
        first: dict[str, str] = {}  # series UID -> its first served instance, for a thumbnail
        with self.console.context.sessions() as session:
            rows = session.execute(
                select(Series.series_instance_uid, Instance.sop_instance_uid)
                .join(Instance.series)
                .where(Series.series_instance_uid.in_([row["SeriesInstanceUID"] for row in series]), SERVED)
                .order_by(Instance.id)
            )
            for series_uid, sop_uid in rows:
                first.setdefault(series_uid, sop_uid)
        return render(request, "study.html", study=study, series=series, first=first)

    def series(self, request: Request) -> Response:
        require(request, "find")
        study_uid, series_uid = _uid(request.path_params["study"]), _uid(request.path_params["series"])
        (study,) = self._one("STUDY", {"StudyInstanceUID": study_uid}, f"no study {study_uid}")
        scope = {"StudyInstanceUID": study_uid, "SeriesInstanceUID": series_uid}
        (series,) = self._one("SERIES", scope, f"no series {series_uid} in study {study_uid}")
        with self.console.context.sessions() as session:
            rows = session.scalars(
                select(Instance)
                .join(Instance.series)
                .where(Series.series_instance_uid == series_uid)
                .order_by(Instance.id)
            ).all()
            instances = [InstanceRow.of(row) for row in rows]
        instances.sort(key=lambda row: int(row.number) if row.number.isdigit() else sys.maxsize)  # stable
        return render(request, "series.html", study=study, series=series, instances=instances)

    def thumbnail(self, request: Request) -> Response:
        require(request, "get")
        target = Target(*(_uid(request.path_params[name]) for name in ("study", "series", "instance")))
        (instance,) = target.instances(self.console.context)
        image = render_frame(native(instance, self.console.context), 1, "image/png", THUMBNAIL)
        return Response(image, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    def _qido(
        self, level: Level, params: list[tuple[str, str]], scope: dict[str, str]
    ) -> list[dict[str, str]]:
        search = parse_search(level, params, scope)
        with self.console.context.sessions() as session:
            return [_texts(ds) for ds in search.results(session)]

    def _one(self, level: Level, scope: dict[str, str], missing: str) -> list[dict[str, str]]:
        found = self._qido(level, [], scope)
        if not found:
            raise HttpProblem(404, missing)
        return found[:1]


@dataclass(frozen=True)
class InstanceRow:
    """How one instance is stored, as its index row says."""

    sop_uid: str
    number: str
    state: str
    served: bool  # False: an original a lossy copy replaced (not served, kept for a while)
    transfer_syntax: str
    codec: str
    fallback: bool
    received_bytes: int
    stored_bytes: int | None
    pixel_bytes_in: int | None
    pixel_bytes_out: int | None
    calling_ae: str
    received_at: str
    error: str
    derived_from: str
    replaced_by: str
    reference: str  # series mode: the slice the blob was coded against

    @classmethod
    def of(cls, row: Instance) -> InstanceRow:
        return cls(
            sop_uid=row.sop_instance_uid,
            number=row.instance_number,
            state=row.state,
            served=row.replaced_by_uid is None,
            transfer_syntax=UID(row.transfer_syntax_uid).name,
            codec=row.codec or "",
            fallback=row.codec_fallback,
            received_bytes=row.received_size,
            stored_bytes=None
            if row.state == StorageState.DROPPED
            else (row.stored_size or row.received_size),
            pixel_bytes_in=row.pixel_bytes_in,
            pixel_bytes_out=row.pixel_bytes_out,
            calling_ae=row.calling_ae,
            received_at=row.received_at.strftime("%Y-%m-%d %H:%M:%S") if row.received_at else "",
            error=row.error or "",
            derived_from=row.derived_from_uid or "",
            replaced_by=row.replaced_by_uid or "",
            reference=row.reference_uid or "",
        )

    @property
    def ratio(self) -> float | None:
        """Received bytes per stored byte, once a blob holds the instance."""
        if not self.codec or not self.stored_bytes:
            return None
        return self.received_bytes / self.stored_bytes

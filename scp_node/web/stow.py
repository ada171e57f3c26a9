"""STOW-RS (PS3.18 10.5): each application/dicom part of an upload goes through the same ingest
step as a C-STORE (scp_node.handlers.store.ingest): durable and indexed before the response,
the duplicate policy applied, nothing kept of a part that fails.

The response data set lists each stored instance (Referenced SOP Sequence, with its RetrieveURL)
and each failed one with its Failure Reason, a DIMSE status (Failed SOP Sequence); the reasons
in words go in Warning headers and the log. HTTP status: 200 all stored, 202 some failed, 409
none stored.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from scp_node.context import NodeContext
from scp_node.handlers import status
from scp_node.handlers.store import Ingested, ingest
from scp_node.imaging.dicom_layout import InvalidDicomFile, read_layout
from scp_node.web.errors import HttpProblem
from scp_node.web.multipart import Part
from workers.queue import JobQueue

log = logging.getLogger(__name__)

DICOM = "application/dicom"


@dataclass(frozen=True)
class Outcome:
    sop_class: str
    sop_instance: str
    study: str
    series: str
    result: Ingested


def check_parts(parts: list[Part]) -> None:
    """Only application/dicom parts are stored (DICOM JSON with bulk data is not); a request
    with another kind of part is refused whole (415) before anything is stored."""
    for number, part in enumerate(parts, start=1):
        if part.content_type not in ("", DICOM):
            raise HttpProblem(415, f"part {number} is {part.content_type}: only {DICOM} parts are stored")


def store_part(
    part: Part, context: NodeContext, queue: JobQueue, *, sender: str, study: str | None
) -> Outcome:
    """Ingest one part; its outcome (a failure is an outcome, not an error)."""
    try:
        ds = read_layout(part.body).dataset
    except InvalidDicomFile as exc:
        log.warning("STOW-RS from %s: part is not a DICOM file: %s", sender, exc)
        return Outcome("", "", "", "", Ingested(status.CANNOT_UNDERSTAND, f"not a DICOM Part-10 file: {exc}"))
    uids = [str(ds.get(keyword, "")) for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID")]
    outcome = Outcome(*uids, str(ds.get("SeriesInstanceUID", "")), Ingested(status.SUCCESS))
    if study is not None and outcome.study != study:
        reason = f"Study Instance UID {outcome.study!r} is not the study of the request URL {study!r}"
        log.warning("STOW-RS of %s from %s rejected: %s", outcome.sop_instance, sender, reason)
        return _with(outcome, Ingested(status.DATASET_DOES_NOT_MATCH_SOP_CLASS, reason))
    received = _incoming_file(context, part.body)
    result = ingest(
        context,
        queue,
        received,
        sop_uid=outcome.sop_instance,
        sop_class=outcome.sop_class,
        sender=sender,
        service="STOW-RS",
    )
    return _with(outcome, result)


def _with(outcome: Outcome, result: Ingested) -> Outcome:
    return Outcome(outcome.sop_class, outcome.sop_instance, outcome.study, outcome.series, result)


def _incoming_file(context: NodeContext, data: bytes) -> Path:
    """The part's bytes as a file under incoming/, where ingest takes received files from
    (a crash leaves it there for the start-up sweep, as a half-received C-STORE)."""
    handle, name = tempfile.mkstemp(dir=context.spool.incoming, prefix="stow-", suffix=".dcm")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    return Path(name)


def warnings(outcomes: list[Outcome]) -> list[str]:
    """The reason of each failure, for Warning headers (the data set has only the status)."""
    return [
        f'299 scp-node "{o.sop_instance or "part"}: {o.result.reason.replace(chr(34), chr(39))}"'
        for o in outcomes
        if o.result.status != status.SUCCESS
    ]


def response(outcomes: list[Outcome], base_url: str) -> tuple[int, Dataset]:
    """The HTTP status and the STOW-RS response data set (PS3.18 Table 10.5.3-1)."""
    ds = Dataset()
    stored = [o for o in outcomes if o.result.status == status.SUCCESS]
    failed = [o for o in outcomes if o.result.status != status.SUCCESS]
    if stored:
        ds.ReferencedSOPSequence = [_reference(o, _url(o, base_url)) for o in stored]
        studies = {o.study for o in stored}
        if len(studies) == 1:
            ds.RetrieveURL = f"{base_url}/studies/{studies.pop()}"
    if failed:
        sequence = []
        for outcome in failed:
            item = _reference(outcome, None)
            item.FailureReason = outcome.result.status
            sequence.append(item)
        ds.FailedSOPSequence = sequence
    http_status = 200 if not failed else 202 if stored else 409
    return http_status, ds


def _reference(outcome: Outcome, url: str | None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = outcome.sop_class
    item.ReferencedSOPInstanceUID = outcome.sop_instance
    if url:
        item.RetrieveURL = url
    return item


def _url(outcome: Outcome, base_url: str) -> str:
    return f"{base_url}/studies/{outcome.study}/series/{outcome.series}/instances/{outcome.sop_instance}"

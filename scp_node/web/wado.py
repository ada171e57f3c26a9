"""WADO-RS (PS3.18 10.4): stored instances back to web clients under the retrieval contract of
C-GET (scp_node.retrieve): an instance received uncompressed and asked for in the syntax it came
in goes out byte-identical; any other syntax is converted from the verified pixels.

The transfer syntax comes from the Accept header: `transfer-syntax=UID` asks for that syntax,
`*` for the one it was received in (then Explicit VR Little Endian), and none for the received
syntax when it is uncompressed, else Explicit VR Little Endian.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from scp_node.context import NodeContext
from scp_node.imaging.errors import ImagingError
from scp_node.index.models import Instance
from scp_node.index.repository import find_instance, instances_for_retrieve
from scp_node.negotiation import UNCOMPRESSED
from scp_node.retrieve import (
    NotConvertible,
    RetrieveError,
    StoredFile,
    file_to_send,
    load_stored_file,
    stored_or_converted,
)
from scp_node.web.errors import HttpProblem
from scp_node.web.multipart import MediaType, covers

log = logging.getLogger(__name__)
T = TypeVar("T")

ANY_SYNTAX = "*"


@dataclass(frozen=True)
class Target:
    """The study, series or instance a WADO-RS path names (series and instance may be empty)."""

    study: str
    series: str = ""
    instance: str = ""

    def instances(self, context: NodeContext) -> list[Instance]:
        """The served instances it names, in index order; 404 when there are none."""
        with context.sessions() as session:
            found = list(
                instances_for_retrieve(
                    session,
                    study_uids=[self.study],
                    series_uids=[self.series] if self.series else [],
                    sop_uids=[self.instance] if self.instance else [],
                )
            )
        if not found:
            raise HttpProblem(404, f"no such {self.level}: {self.instance or self.series or self.study}")
        return found

    @property
    def level(self) -> str:
        return "instance" if self.instance else "series" if self.series else "study"


def requested_syntaxes(accept: str | None, part_type: str) -> list[str | None]:
    """The transfer-syntax parameters of the Accept entries that allow `part_type` parts, best
    quality first (None: the entry names none); 406 when no entry allows them."""
    if not accept:
        return [None]
    ranked = []
    for position, entry in enumerate(accept.split(",")):
        media = MediaType.parse(entry)
        wanted = media.name == "multipart/related" and covers(media.params.get("type", part_type), part_type)
        if wanted or media.name in ("*/*", "multipart/*", part_type):
            ranked.append((-media.quality, position, media.params.get("transfer-syntax")))
    if not ranked:
        raise HttpProblem(
            406, f'cannot answer {accept!r}: this resource is multipart/related; type="{part_type}"'
        )
    return [syntax for *_, syntax in sorted(ranked)]


def syntax_choices(requested: list[str | None], received: UID) -> list[UID]:
    """The syntaxes to try for one instance, in order."""
    choices: list[UID] = []
    for syntax in requested:
        if syntax == ANY_SYNTAX:
            choices += [received, ExplicitVRLittleEndian]
        elif syntax is None:
            choices += [received] if received in UNCOMPRESSED else []
            choices.append(ExplicitVRLittleEndian)
        else:
            choices.append(UID(syntax))
    return list(dict.fromkeys(choices))


def load(instance: Instance, context: NodeContext) -> StoredFile:
    """The stored file, digest-checked; 404 when the instance went meanwhile, 500 when it cannot
    be read (logged)."""
    return _from_current_row(
        instance,
        context,
        lambda row: load_stored_file(row, context.codecs, context.instance_file, context.recent_files),
    )


def instance_file(instance: Instance, context: NodeContext, choices: list[UID]) -> tuple[bytes, UID]:
    """The instance as a Part-10 file in the first choice the node can produce, and its syntax,
    as C-GET sends it (`file_to_send`: a stored JPEG-LS / JPEG XL blob's frames go out as they
    are where that syntax is asked for first); 406 when none can be."""
    return _from_current_row(
        instance,
        context,
        lambda row: file_to_send(row, choices, context.codecs, context.instance_file, context.recent_files),
    )


def _from_current_row(instance: Instance, context: NodeContext, produce: Callable[[Instance], T]) -> T:
    """`produce` from the instance's row as it is now (the listing that named it may be older)."""
    uid = instance.sop_instance_uid
    try:
        try:
            return _produce_current(uid, context, produce)
        except FileNotFoundError:  # a compress job replaced the file after the row was read
            return _produce_current(uid, context, produce)
    except NotConvertible as exc:
        raise HttpProblem(406, str(exc)) from exc
    except (RetrieveError, ImagingError, OSError) as exc:
        log.error("WADO-RS: %s cannot be read: %s", uid, exc)
        raise HttpProblem(500, f"instance {uid} cannot be read: {exc}") from exc


def _produce_current(uid: str, context: NodeContext, produce: Callable[[Instance], T]) -> T:
    with context.sessions() as session:
        current = find_instance(session, uid)
        if current is None:
            raise HttpProblem(404, f"instance {uid} is no longer stored")
        return produce(current)


def part_10(stored: StoredFile, choices: list[UID]) -> tuple[bytes, UID]:
    """The loaded file in the first choice the node can produce, and its syntax: the received
    bytes unchanged where they are what was asked for; 406 when none can be."""
    try:
        return stored_or_converted(stored, choices)
    except RetrieveError as exc:
        raise HttpProblem(406, str(exc)) from exc
    except ImagingError as exc:
        raise HttpProblem(500, f"cannot convert: {exc}") from exc


def instance_parts(
    instances: list[Instance], context: NodeContext, requested: list[str | None]
) -> Iterator[tuple[bytes, str]]:
    """(Part-10 bytes, part content type) per instance. Instances after the first that cannot be
    produced are logged and left out: the response has started by then."""
    for index, instance in enumerate(instances):
        try:
            choices = syntax_choices(requested, UID(instance.transfer_syntax_uid))
            data, syntax = instance_file(instance, context, choices)
        except HttpProblem as exc:
            if index == 0:
                raise
            log.error("WADO-RS: %s left out of the response: %s", instance.sop_instance_uid, exc.reason)
            continue
        yield data, f"application/dicom; transfer-syntax={syntax}"


def metadata(instance: Instance, context: NodeContext, base_url: str) -> dict:
    """The instance's data set as DICOM JSON; Pixel Data as a BulkDataURI naming its frames."""
    stored = load(instance, context)
    ds = dcmread(io.BytesIO(stored.data), stop_before_pixels=True)
    document = ds.to_json_dict()
    series_url = f"{base_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
    instance_url = f"{series_url}/instances/{ds.SOPInstanceUID}"
    if "Rows" in ds and "Columns" in ds:
        frames = int(ds.get("NumberOfFrames") or 1)
        numbers = ",".join(str(number) for number in range(1, frames + 1))
        vr = "OW" if int(ds.get("BitsAllocated") or 8) > 8 else "OB"
        document["7FE00010"] = {"vr": vr, "BulkDataURI": f"{instance_url}/frames/{numbers}"}
    return document


def native(instance: Instance, context: NodeContext) -> Dataset:
    """The instance in Explicit VR Little Endian, pixels decoded (frames and rendering)."""
    part, _ = part_10(load(instance, context), [ExplicitVRLittleEndian])
    return dcmread(io.BytesIO(part))

"""C-FIND matching, C-GET / C-MOVE counts, failures and cancel, with pynetdicom and dcmtk clients.

One archive per database (SQLite, PostgreSQL) is built from real images whose patient / study
attributes are rewritten to a known layout, so every expected answer is written out below.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.pdu_primitives import SOPClassExtendedNegotiation
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from scp_node import retrieve
from scp_node.context import NodeContext
from scp_node.handlers.find import RelationalQueries, handle_find
from scp_node.handlers.outbound import matching_instances
from scp_node.imaging.dicom_layout import dataset_offset
from scp_node.index.models import Instance, Peer
from tests.support import (
    RunningNode,
    free_port,
    getscu,
    make_config,
    movescu,
    pydicom_test_file,
    start_node,
    storescu,
    temporary_database,
)
from workers import jobs

PATIENT_FIND = PatientRootQueryRetrieveInformationModelFind
STUDY_FIND = StudyRootQueryRetrieveInformationModelFind
BULK_INSTANCES = 60


class Archive:
    """The node plus what was stored in it: files by SOP Instance UID, UIDs by label."""

    def __init__(self, node: RunningNode, tmp: Path) -> None:
        self.node = node
        self.tmp = tmp
        self.files: dict[str, Path] = {}
        self.uid: dict[str, str] = {}

    def add(
        self, source: str, label: str, patient: tuple[str, str], study: dict, series: dict, **extra
    ) -> str:
        ds = dcmread(pydicom_test_file(source))
        ds.PatientName, ds.PatientID = patient
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        for keyword, value in {**study, **series, **extra}.items():
            setattr(ds, keyword, value)
        ds.StudyInstanceUID = self.uid.setdefault(study["StudyID"], generate_uid())
        ds.SeriesInstanceUID = self.uid.setdefault(
            f"{study['StudyID']}/{series['SeriesNumber']}", generate_uid()
        )
        ds.SOPInstanceUID = self.uid[label] = generate_uid()
        path = self.tmp / f"{label}.dcm"
        ds.save_as(path, enforce_file_format=True)
        self.files[ds.SOPInstanceUID] = path
        return ds.SOPInstanceUID

    def store_all(self, *, wait_for_jobs: bool = True) -> None:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        ae.add_requested_context(MRImageStorage)
        assoc = ae.associate("127.0.0.1", self.node.port, ae_title="SCP_NODE")
        assert assoc.is_established
        for path in self.files.values():
            assert assoc.send_c_store(path).Status == 0x0000
        assoc.release()
        if wait_for_jobs:
            self.node.wait_for_jobs()


S1 = {"StudyID": "S1", "StudyDate": "20200115", "StudyTime": "101500", "AccessionNumber": "ACC1"}
S2 = {"StudyID": "S2", "StudyDate": "20210301", "StudyTime": "083000", "AccessionNumber": "ACC2"}
S3 = {"StudyID": "S3", "StudyDate": "20210302", "StudyTime": "230000", "AccessionNumber": "ACC3"}
S4 = {"StudyID": "S4", "StudyDate": "", "StudyTime": "", "AccessionNumber": ""}
S5 = {"StudyID": "S5", "StudyDate": "20220101", "StudyTime": "120000", "AccessionNumber": "BULK"}
S6 = {"StudyID": "S6", "StudyDate": "20220202", "StudyTime": "120000", "AccessionNumber": "FAIL"}
DOE, ROE, MULLER, BULK = ("Doe^John", "PA1"), ("Roe^Jane", "PB2"), ("Müller^Jürgen", "PC3"), ("Bulk^B", "PD4")


def _series(number: str, modality: str) -> dict:
    return {"SeriesNumber": number, "Modality": modality, "SpecificCharacterSet": "ISO_IR 192"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archive(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    tmp = tmp_path_factory.mktemp(request.param)
    with temporary_database(request.param, tmp) as url:
        # No recent files in memory: every retrieval rebuilds from disk, so a damaged blob fails.
        node = start_node(make_config(tmp, url, **{"storage.recent_files_mb": 0}))
        try:
            archive = Archive(node, tmp)
            for i in range(3):
                archive.add(
                    "CT_small.dcm",
                    f"s1-ct-{i}",
                    DOE,
                    S1,
                    _series("1", "CT"),
                    InstanceNumber=str(i + 1),
                    AcquisitionDateTime=f"2020011510{16 + i}00",
                )
            archive.add("CT_small.dcm", "s1-ct2", DOE, S1, _series("2", "CT"))
            archive.add("MR_small.dcm", "s2-mr-0", ROE, S2, _series("1", "MR"))
            archive.add("MR_small.dcm", "s2-mr-1", ROE, S2, _series("1", "MR"))
            archive.add("CT_small.dcm", "s3-ct", ROE, S3, _series("1", "CT"))
            archive.add("MR_small.dcm", "s3-mr", ROE, S3, _series("2", "MR"))
            archive.add("CT_small.dcm", "s4-ct", MULLER, S4, _series("1", "CT"))
            for i in range(BULK_INSTANCES):
                archive.add("CT_small.dcm", f"s5-{i}", BULK, S5, _series("1", "CT"), InstanceNumber=str(i))
            for i in range(3):
                archive.add("MR_small.dcm", f"s6-{i}", BULK, S6, _series("1", "MR"))
            archive.store_all()
            _corrupt(archive, archive.uid["s6-1"])
            yield archive
        finally:
            node.stop()


def _corrupt(archive: Archive, sop_uid: str) -> None:
    """Damage one stored blob so that retrieving that instance must fail."""
    with archive.node.context.sessions() as session:
        instance = session.query(Instance).filter_by(sop_instance_uid=sop_uid).one()
        stored = Path(instance.blob_path or instance.spool_path)
    stored.write_bytes(stored.read_bytes()[:-100] + b"\0" * 100)


def _find(
    archive: Archive, model: str, level: str, *, relational: bool = False, **keys: object
) -> tuple[int, list[Dataset]]:
    """C-FIND with pynetdicom; `relational` negotiates relational queries (PS3.4 C.5.1.1)."""
    identifier = Dataset()
    identifier.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(identifier, keyword, value)
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(model)
    ext_neg = []
    if relational:
        item = SOPClassExtendedNegotiation()
        item.sop_class_uid, item.service_class_application_information = model, b"\x01"
        ext_neg.append(item)
    assoc = ae.associate("127.0.0.1", archive.node.port, ae_title="SCP_NODE", ext_neg=ext_neg)
    assert assoc.is_established
    responses, final = [], None
    for status, found in assoc.send_c_find(identifier, model):
        if status.Status in (0xFF00, 0xFF01):
            responses.append(found)
        else:
            final = status.Status
    assoc.release()
    return final, responses


def _values(responses: list[Dataset], keyword: str) -> list[str]:
    return sorted(str(r.get(keyword, "")) for r in responses)


def test_patient_level_matching_and_counts(archive: Archive) -> None:
    status, found = _find(archive, PATIENT_FIND, "PATIENT", PatientName="", PatientID="")
    assert status == 0x0000
    assert _values(found, "PatientID") == ["PA1", "PB2", "PC3", "PD4"]
    assert _values(found, "PatientName") == sorted(["Doe^John", "Roe^Jane", "Müller^Jürgen", "Bulk^B"])

    for query, expected in [
        ("Doe*", ["PA1"]),  # wildcard
        ("*^Jane", ["PB2"]),
        ("D?e^John", ["PA1"]),
        ("doe^john", ["PA1"]),  # PN matches case-insensitively
        ("Doe^Joh", []),  # single value matching is exact
        ("Müller*", ["PC3"]),  # non-ASCII, ISO_IR 192 in the request
        ("*", ["PA1", "PB2", "PC3", "PD4"]),
    ]:
        status, found = _find(
            archive,
            PATIENT_FIND,
            "PATIENT",
            PatientName=query,
            PatientID="",
            SpecificCharacterSet="ISO_IR 192",
        )
        assert (status, _values(found, "PatientID")) == (0x0000, expected), query

    status, found = _find(
        archive,
        PATIENT_FIND,
        "PATIENT",
        PatientID="PB2",
        NumberOfPatientRelatedStudies="",
        NumberOfPatientRelatedSeries="",
        NumberOfPatientRelatedInstances="",
        OtherPatientIDs="",  # not indexed: returned empty
    )
    assert len(found) == 1
    assert (
        found[0].NumberOfPatientRelatedStudies,
        found[0].NumberOfPatientRelatedSeries,
        found[0].NumberOfPatientRelatedInstances,
    ) == (2, 3, 4)
    assert "OtherPatientIDs" in found[0] and not found[0].OtherPatientIDs

    status, found = _find(archive, PATIENT_FIND, "PATIENT", PatientID="PC3", PatientName="")
    assert found[0].SpecificCharacterSet == "ISO_IR 192" and found[0].PatientName == "Müller^Jürgen"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"StudyDate": "20210301-"}, ["S2", "S3", "S5", "S6"]),  # open upper bound
        ({"StudyDate": "-20200131"}, ["S1"]),  # open lower bound; S4 has no date: no match
        ({"StudyDate": "20210301-20210302"}, ["S2", "S3"]),  # closed range
        ({"StudyDate": "20210302"}, ["S3"]),  # single date
        ({"StudyDate": "20200115\\20220202"}, ["S1", "S6"]),  # list of dates
        ({"StudyTime": "0800-0900"}, ["S2"]),
        ({"StudyTime": "-1015"}, ["S1", "S2"]),  # 10:15 includes 10:15:00
        ({"StudyDate": "20210301-", "StudyTime": "2200-"}, ["S3"]),  # both must match
        ({"AccessionNumber": "ACC?"}, ["S1", "S2", "S3"]),
        ({"AccessionNumber": "acc1"}, []),  # case-sensitive outside PN
        ({"ModalitiesInStudy": "MR"}, ["S2", "S3", "S6"]),
        ({"PatientName": "Roe*"}, ["S2", "S3"]),  # Study Root carries patient attributes
        ({"StudyDate": "", "AccessionNumber": "*"}, ["S1", "S2", "S3", "S4", "S5", "S6"]),  # universal
    ],
)
def test_study_level_matching(archive: Archive, keys: dict, expected: list[str]) -> None:
    status, found = _find(archive, STUDY_FIND, "STUDY", StudyInstanceUID="", StudyID="", **keys)
    assert status == 0x0000
    assert _values(found, "StudyID") == expected


def test_study_level_return_keys(archive: Archive) -> None:
    status, found = _find(
        archive,
        STUDY_FIND,
        "STUDY",
        StudyInstanceUID=archive.uid["S3"],
        ModalitiesInStudy="",
        NumberOfStudyRelatedSeries="",
        NumberOfStudyRelatedInstances="",
        StudyDate="",
        StudyTime="",
        PatientID="",
        RetrieveAETitle="",
    )
    assert status == 0x0000 and len(found) == 1
    study = found[0]
    assert list(study.ModalitiesInStudy) == ["CT", "MR"]
    assert (study.NumberOfStudyRelatedSeries, study.NumberOfStudyRelatedInstances) == (2, 2)
    assert (study.StudyDate, study.StudyTime, study.PatientID) == ("20210302", "230000", "PB2")
    assert study.QueryRetrieveLevel == "STUDY"

    status, found = _find(
        archive, PATIENT_FIND, "STUDY", PatientID="PA1", StudyInstanceUID="", NumberOfStudyRelatedInstances=""
    )
    assert [(s.StudyInstanceUID, s.NumberOfStudyRelatedInstances) for s in found] == [(archive.uid["S1"], 4)]


def test_series_and_image_levels(archive: Archive) -> None:
    status, found = _find(
        archive,
        STUDY_FIND,
        "SERIES",
        StudyInstanceUID=archive.uid["S1"],
        SeriesInstanceUID="",
        Modality="CT",
        NumberOfSeriesRelatedInstances="",
    )
    assert status == 0x0000
    assert sorted((s.SeriesInstanceUID, s.NumberOfSeriesRelatedInstances) for s in found) == sorted(
        [(archive.uid["S1/1"], 3), (archive.uid["S1/2"], 1)]
    )
    assert all(s.StudyInstanceUID == archive.uid["S1"] for s in found)

    def series_images(model: str, **keys: object) -> tuple[int, list[Dataset]]:
        """IMAGE level in the first CT series of S1 (Patient Root also needs the PatientID)."""
        patient = {"PatientID": "PA1"} if model == PATIENT_FIND else {}
        s1 = {"StudyInstanceUID": archive.uid["S1"], "SeriesInstanceUID": archive.uid["S1/1"]}
        return _find(archive, model, "IMAGE", **patient, **s1, **keys)

    wanted = [archive.uid["s1-ct-0"], archive.uid["s1-ct-2"]]
    status, found = series_images(STUDY_FIND, SOPInstanceUID=wanted, SOPClassUID="", InstanceNumber="")
    assert sorted(i.SOPInstanceUID for i in found) == sorted(wanted)  # list of UIDs
    assert {i.SOPClassUID for i in found} == {CTImageStorage}

    # DT ranges with an invalid bound: month 21; 16 digits
    for invalid in ("20202115101700-20200115101759", "20200115101700-2020011510175959"):
        status, found = series_images(PATIENT_FIND, SOPInstanceUID="", AcquisitionDateTime=invalid)
        assert status == 0xA900, invalid
    status, found = series_images(
        PATIENT_FIND, SOPInstanceUID="", AcquisitionDateTime="202001151017-202001151018"
    )
    assert sorted(i.SOPInstanceUID for i in found) == sorted([archive.uid["s1-ct-1"], archive.uid["s1-ct-2"]])


@pytest.mark.parametrize(
    ("model", "keys"),
    [
        (PATIENT_FIND, {"QueryRetrieveLevel": "FOO"}),
        (STUDY_FIND, {"QueryRetrieveLevel": "PATIENT", "PatientID": ""}),  # no PATIENT level in Study Root
        (STUDY_FIND, {"QueryRetrieveLevel": "SERIES", "SeriesInstanceUID": ""}),  # StudyInstanceUID missing
        (PATIENT_FIND, {"QueryRetrieveLevel": "STUDY", "PatientID": "P*", "StudyInstanceUID": ""}),
        (STUDY_FIND, {"QueryRetrieveLevel": "STUDY", "StudyDate": "2020-01-01-"}),
        (STUDY_FIND, {"QueryRetrieveLevel": "STUDY", "StudyTime": "25x"}),
        (STUDY_FIND, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.*"}),
    ],
)
def test_invalid_identifiers_fail_with_a900(archive: Archive, model: str, keys: dict) -> None:
    keys = dict(keys)
    level = keys.pop("QueryRetrieveLevel")
    status, found = _find(archive, model, level, **keys)
    assert (status, found) == (0xA900, [])


def test_relational_queries_are_answered_when_negotiated(archive: Archive) -> None:
    """SERIES level without the StudyInstanceUID, IMAGE level with only the SOPInstanceUID:
    viewers send these after negotiating relational queries."""
    status, found = _find(archive, STUDY_FIND, "SERIES", relational=True, Modality="MR", StudyInstanceUID="")
    assert status == 0x0000
    series = {(s.StudyInstanceUID, s.SeriesInstanceUID) for s in found}
    assert {(archive.uid["S2"], archive.uid["S2/1"]), (archive.uid["S3"], archive.uid["S3/2"])} <= series
    assert {s.Modality for s in found} == {"MR"}

    wanted = archive.uid["s3-mr"]
    status, found = _find(
        archive, STUDY_FIND, "IMAGE", relational=True, SOPInstanceUID=wanted, SeriesInstanceUID=""
    )
    assert status == 0x0000
    assert [(i.SOPInstanceUID, i.SeriesInstanceUID) for i in found] == [(wanted, archive.uid["S3/2"])]

    status, found = _find(archive, PATIENT_FIND, "STUDY", relational=True, AccessionNumber="ACC3")
    assert (status, [s.StudyInstanceUID for s in found]) == (0x0000, [archive.uid["S3"]])
    # Not negotiated: the hierarchical model holds (0xA900, as test_invalid_identifiers_fail_with_a900).
    assert _find(archive, STUDY_FIND, "IMAGE", SOPInstanceUID=wanted)[0] == 0xA900


def test_relational_queries_without_negotiation_when_configured(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}", **{"query.relational_without_negotiation": True}
    )
    node = start_node(config)
    try:
        lenient = Archive(node, tmp_path)
        uid = lenient.add("MR_small.dcm", "mr", ROE, S2, _series("1", "MR"))
        lenient.store_all()
        status, found = _find(lenient, STUDY_FIND, "IMAGE", SOPInstanceUID=uid)
        assert (status, [i.SOPInstanceUID for i in found]) == (0x0000, [uid])
    finally:
        node.stop()


def _cx_id(assoc, abstract_syntax: str) -> int:
    return next(cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == abstract_syntax)


class _StandInAssociation:
    """What the find handler reads of an association (a class, so it can be weakly referenced)."""

    requestor = SimpleNamespace(ae_title="VIEWER", address="127.0.0.1")


class _CancellingFindEvent:
    """Stands in for pynetdicom's C-FIND event: C-CANCEL arrives once `cancel_after` responses
    were taken. Over the network the node answers 60 matches faster than a cancel comes back,
    so this is where stopping at the cancel is checked deterministically."""

    def __init__(self, identifier: Dataset, cancel_after: int) -> None:
        self.identifier = identifier
        self.request = SimpleNamespace(AffectedSOPClassUID=STUDY_FIND)
        self.assoc = _StandInAssociation()
        self.taken = 0
        self.cancel_after = cancel_after

    @property
    def is_cancelled(self) -> bool:
        return self.taken >= self.cancel_after


def test_find_cancel_stops_responses(archive: Archive) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "IMAGE"
    identifier.StudyInstanceUID = archive.uid["S5"]
    identifier.SeriesInstanceUID = archive.uid["S5/1"]
    identifier.SOPInstanceUID = ""
    event = _CancellingFindEvent(identifier, cancel_after=3)
    statuses = []
    for status, _found in handle_find(event, archive.node.context, RelationalQueries(lenient=False)):
        statuses.append(status)
        event.taken += 1
    assert statuses == [0xFF00, 0xFF00, 0xFF00, 0xFE00]


def _get(archive: Archive, identifier: Dataset, *, delay_s: float = 0.0, cancel_after: int = 0):
    """C-GET with pynetdicom; returns (final status dataset, identifier, received UIDs)."""
    received: list[str] = []

    def on_store(event) -> int:
        received.append(event.dataset.SOPInstanceUID)
        time.sleep(delay_s)
        return 0x0000

    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in (CTImageStorage, MRImageStorage):
        ae.add_requested_context(sop_class)
    roles = [build_role(c, scp_role=True) for c in (CTImageStorage, MRImageStorage)]
    assoc = ae.associate(
        "127.0.0.1",
        archive.node.port,
        ae_title="SCP_NODE",
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    final = final_identifier = None
    pending = 0
    for status, found in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet, msg_id=11):
        if status.Status == 0xFF00:
            pending += 1
            if pending == cancel_after:
                assoc.send_c_cancel(11, _cx_id(assoc, StudyRootQueryRetrieveInformationModelGet))
        else:
            final, final_identifier = status, found
    assoc.release()
    return final, final_identifier, received


def _study(uid: str) -> Dataset:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = uid
    return identifier


def test_get_partial_failure_reports_counts_and_failed_uids(archive: Archive) -> None:
    final, identifier, received = _get(archive, _study(archive.uid["S6"]))
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
    assert list(_as_list(identifier.FailedSOPInstanceUIDList)) == [archive.uid["s6-1"]]
    assert sorted(received) == sorted([archive.uid["s6-0"], archive.uid["s6-2"]])


def _as_list(value: object) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def test_get_cancel(archive: Archive) -> None:
    final, _identifier, received = _get(archive, _study(archive.uid["S5"]), delay_s=0.05, cancel_after=2)
    assert final.Status == 0xFE00
    assert final.NumberOfRemainingSuboperations > 0
    assert len(received) < BULK_INSTANCES


def _outgoing_in_memory() -> list[str]:
    """The in-memory files this process holds for instances being sent (the node runs here)."""
    found = []
    for descriptor in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{descriptor}")
        except FileNotFoundError:  # the listing's own descriptor, closed meanwhile
            continue
        if link.startswith("/memfd:scp-node-"):
            found.append(link)
    return found


def test_retrieval_sends_from_memory_in_order_and_frees_it(archive: Archive) -> None:
    """Sub-operations are prepared ahead on threads, yet arrive in the index's order; no file
    is written for them (outgoing/ was a temporary copy per instance), and every in-memory copy
    is freed after a complete retrieve and after a cancelled one."""
    final, _identifier, received = _get(archive, _study(archive.uid["S5"]))
    assert final.Status == 0x0000 and len(received) == BULK_INSTANCES
    matches = matching_instances(archive.node.context, _study(archive.uid["S5"]))
    assert received == [match.sop_instance_uid for match in matches]
    _get(archive, _study(archive.uid["S5"]), delay_s=0.02, cancel_after=3)
    assert not (archive.node.config.storage.data_dir / "outgoing").exists()
    assert _outgoing_in_memory() == []


class StoreSCP:
    """A pynetdicom Storage SCP as a C-MOVE destination, optionally slow."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.received: list[str] = []
        self.port = free_port()
        ae = AE(ae_title="DEST")
        ae.supported_contexts = StoragePresentationContexts
        handlers = [(evt.EVT_C_STORE, self._on_store)]
        self.delay_s = delay_s
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)

    def _on_store(self, event) -> int:
        self.received.append(event.dataset.SOPInstanceUID)
        time.sleep(self.delay_s)
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


def _move(archive: Archive, identifier: Dataset, destination: str, *, cancel_after: int = 0):
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", archive.node.port, ae_title="SCP_NODE")
    final = final_identifier = None
    pending = 0
    model = StudyRootQueryRetrieveInformationModelMove
    for status, found in assoc.send_c_move(identifier, destination, model, msg_id=13):
        if status.Status == 0xFF00:
            pending += 1
            if pending == cancel_after:
                assoc.send_c_cancel(13, _cx_id(assoc, model))
        else:
            final, final_identifier = status, found
    assoc.release()
    return final, final_identifier


def _add_peer(archive: Archive, ae_title: str, port: int) -> None:
    with archive.node.context.sessions() as session:
        peer = session.query(Peer).filter_by(ae_title=ae_title).one_or_none() or Peer(ae_title=ae_title)
        peer.host, peer.port, peer.permissions = "127.0.0.1", port, "echo,store"
        session.add(peer)
        session.commit()


def test_move_counts_partial_failure_unknown_destination_and_cancel(archive: Archive) -> None:
    final, _ = _move(archive, _study(archive.uid["S1"]), "NOWHERE")
    assert final.Status == 0xA801

    destination = StoreSCP()
    try:
        _add_peer(archive, "DEST", destination.port)
        final, _ = _move(archive, _study(archive.uid["S1"]), "DEST")
        assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (
            0x0000,
            4,
            0,
        )
        s1 = [archive.uid[f"s1-ct-{i}"] for i in range(3)] + [archive.uid["s1-ct2"]]
        assert sorted(destination.received) == sorted(s1)

        final, identifier = _move(archive, _study(archive.uid["S6"]), "DEST")
        assert final.Status == 0xB000
        assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 1)
        assert _as_list(identifier.FailedSOPInstanceUIDList) == [archive.uid["s6-1"]]
    finally:
        destination.stop()

    slow = StoreSCP(delay_s=0.05)
    try:
        _add_peer(archive, "DEST", slow.port)
        final, _ = _move(archive, _study(archive.uid["S5"]), "DEST", cancel_after=2)
        assert final.Status == 0xFE00
        assert final.NumberOfRemainingSuboperations > 0
        assert len(slow.received) < BULK_INSTANCES
    finally:
        slow.stop()


def _dataset_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return data[dataset_offset(data) :]


def test_dcmtk_findscu_getscu_movescu(archive: Archive, dcmtk: None, tmp_path: Path) -> None:
    port = archive.node.port
    found_dir = tmp_path / "find"
    found_dir.mkdir()
    result = subprocess.run(
        [
            *("findscu", "-S", "-aet", "VIEWER", "-aec", "SCP_NODE", "-X", "-od", str(found_dir)),
            *(
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                "StudyInstanceUID",
                "-k",
                "StudyDate=20210301-20210302",
            ),
            *("-k", "ModalitiesInStudy", "-k", "NumberOfStudyRelatedInstances", "127.0.0.1", str(port)),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    studies = sorted(
        (str(r.StudyInstanceUID), r.NumberOfStudyRelatedInstances)
        for r in (dcmread(p) for p in found_dir.glob("rsp*.dcm"))
    )
    assert studies == sorted([(archive.uid["S2"], 2), (archive.uid["S3"], 2)])

    result = getscu(
        port, tmp_path / "get", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": archive.uid["S3"]}
    )
    assert result.returncode == 0, result.stderr
    got = {str(dcmread(p).SOPInstanceUID): p for p in (tmp_path / "get").iterdir()}
    assert set(got) == {archive.uid["s3-ct"], archive.uid["s3-mr"]}
    for uid, path in got.items():
        assert _dataset_bytes(path) == _dataset_bytes(archive.files[uid])

    move_port = free_port()
    moved_dir = tmp_path / "moved"
    moved_dir.mkdir()
    _add_peer(archive, "STORESCP", move_port)
    keys = {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": archive.uid["S1"]}
    result = movescu(port, move_port, moved_dir, {**keys, "SeriesInstanceUID": archive.uid["S1/1"]})
    assert result.returncode == 0, result.stderr
    moved = {str(dcmread(p).SOPInstanceUID): p for p in moved_dir.iterdir()}
    assert set(moved) == {archive.uid[f"s1-ct-{i}"] for i in range(3)}
    for uid, path in moved.items():
        assert _dataset_bytes(path) == _dataset_bytes(archive.files[uid])


def test_get_with_patient_root(archive: Archive) -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "PATIENT"
    identifier.PatientID = "PC3"
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    received: list[str] = []
    assoc = ae.associate(
        "127.0.0.1",
        archive.node.port,
        ae_title="SCP_NODE",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, lambda e: received.append(e.dataset.SOPInstanceUID) or 0x0000)],
    )
    statuses = [
        s.Status for s, _ in assoc.send_c_get(identifier, PatientRootQueryRetrieveInformationModelGet)
    ]
    assoc.release()
    assert statuses[-1] == 0x0000 and received == [archive.uid["s4-ct"]]


def test_retrieve_follows_an_instance_its_compress_job_moved(
    tmp_path: Path, database_url: str, dcmtk: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The compress job commits the blob and removes the spool file between the retrieve's
    read of the row and its open of the file: the retrieve reads the row again, and sends."""
    node = start_node(make_config(tmp_path, database_url, **{"queue.in_process_workers": 0}))
    try:
        source = pydicom_test_file("CT_small.dcm")
        assert storescu(node.port, [source]).returncode == 0
        uid = str(dcmread(source).SOPInstanceUID)
        load = retrieve.load_stored_file

        def compressed_meanwhile(instance: Instance, *args: object) -> object:
            monkeypatch.setattr(retrieve, "load_stored_file", load)
            assert jobs.compress_instance(node.context, uid) == "jpegxl"
            return load(instance, *args)

        monkeypatch.setattr(retrieve, "load_stored_file", compressed_meanwhile)
        result = getscu(node.port, tmp_path / "got", {"QueryRetrieveLevel": "IMAGE", **_keys(source)})
        assert result.returncode == 0, result.stderr
        (got,) = (tmp_path / "got").iterdir()
        with node.context.sessions() as session:
            ingested = session.query(Instance).filter_by(sop_instance_uid=uid).one().dataset_sha256
        assert hashlib.sha256(_dataset_bytes(got)).hexdigest() == ingested
    finally:
        node.stop()


def _keys(path: Path) -> dict[str, str]:
    ds = dcmread(path)
    return {
        "StudyInstanceUID": ds.StudyInstanceUID,
        "SeriesInstanceUID": ds.SeriesInstanceUID,
        "SOPInstanceUID": ds.SOPInstanceUID,
    }


@pytest.mark.parametrize("compressed_by", ["the node", "another process"])
def test_retrieval_soon_after_a_push_sends_the_stored_files_without_decoding(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, compressed_by: str
) -> None:
    """The files the node has just received stay in its memory (storage.recent_files_mb): a
    C-GET right after the push sends them without decoding a blob, whether its own compress
    threads or another process (an RQ worker, another serve process) made the blobs; a later
    version of an instance is never answered with the earlier one's file."""
    workers = 2 if compressed_by == "the node" else 0
    node = start_node(make_config(tmp_path, database_url, **{"queue.in_process_workers": workers}))
    worker = NodeContext.open(node.config, migrate=False)  # what an RQ worker process opens
    try:
        archive = Archive(node, tmp_path)
        for i in range(4):
            archive.add("CT_small.dcm", f"ct-{i}", DOE, S1, _series("1", "CT"), InstanceNumber=str(i + 1))

        def store_and_compress() -> None:
            archive.store_all(wait_for_jobs=workers > 0)
            if compressed_by == "another process":
                for label in ("ct-0", "ct-1", "ct-2", "ct-3"):
                    assert jobs.compress_instance(worker, archive.uid[label]) == "jpegxl"

        store_and_compress()
        decodes: list[object] = []
        decode = retrieve.decode_instance
        monkeypatch.setattr(retrieve, "decode_instance", lambda *a: decodes.append(a) or decode(*a))
        final, _identifier, received = _get(archive, _study(archive.uid["S1"]))
        assert final.Status == 0x0000 and len(received) == 4
        assert decodes == []

        replaced = archive.files[archive.uid["ct-0"]]
        ds = dcmread(replaced)
        ds.PatientComments = "second version"
        ds.save_as(replaced)
        store_and_compress()
        context = node.context
        with context.sessions() as session:
            instance = session.query(Instance).filter_by(sop_instance_uid=archive.uid["ct-0"]).one()
            assert instance.blob_path is not None
            stored = retrieve.load_stored_file(
                instance, context.codecs, context.instance_file, context.recent_files
            )
        assert dcmread(io.BytesIO(stored.data)).PatientComments == "second version"
    finally:
        worker.close()
        node.stop()


def _delayed_acks() -> int:
    """Linux's count of ACKs its TCP held back waiting for data to ride along (all sockets)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))["DelayedACKs"]
    raise AssertionError("no TcpExt line in /proc/net/netstat")


# Held ACKs add one per sub-operation to every attempt; the other test worker's traffic added
# up to 22 to the machine's counter in CI, 18 to the fewest of three attempts.
_FEW_DELAYED_ACKS = BULK_INSTANCES // 2


def _fewest_delayed_acks(retrieve_into: Callable[[Path], None], tmp_path: Path, attempts: int = 3) -> int:
    """The fewest delayed ACKs counted over up to `attempts` retrievals: the counter is the
    machine's, and the other test worker's traffic adds to it in bursts; held ACKs add to
    every attempt."""
    counts = []
    for attempt in range(attempts):
        before = _delayed_acks()
        retrieve_into(tmp_path / str(attempt))
        counts.append(_delayed_acks() - before)
        if counts[-1] < _FEW_DELAYED_ACKS:
            break
    return min(counts)


@pytest.mark.skipif(not Path("/proc/net/netstat").is_file(), reason="counts delayed ACKs the Linux way")
def test_dcmtk_retrieval_is_not_held_by_delayed_acks(archive: Archive, dcmtk: None, tmp_path: Path) -> None:
    """getscu and storescp write each C-STORE response in two pieces with Nagle on: the second
    waits until the node acknowledges the first, and Linux delays that ACK (40 ms per
    sub-operation) unless the node asks for it at once."""
    keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": archive.uid["S5"]}
    move_port = free_port()
    _add_peer(archive, "STORESCP", move_port)

    def get_into(folder: Path) -> None:
        result = getscu(archive.node.port, folder, keys)
        assert result.returncode == 0, result.stderr
        assert len(list(folder.iterdir())) == BULK_INSTANCES

    def move_into(folder: Path) -> None:
        result = movescu(archive.node.port, move_port, folder, keys)
        assert result.returncode == 0, result.stderr
        assert len(list(folder.iterdir())) == BULK_INSTANCES

    assert _fewest_delayed_acks(get_into, tmp_path / "get") < _FEW_DELAYED_ACKS
    assert _fewest_delayed_acks(move_into, tmp_path / "moved") < _FEW_DELAYED_ACKS

"""Access control at association, DICOM TLS, duplicate policies, and many associations at once."""

from __future__ import annotations

import hashlib
import logging
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    BasicGrayscalePrintManagementMeta,
    CTImageStorage,
    ModalityWorklistInformationFind,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from scp_node.imaging.dicom_layout import dataset_offset
from scp_node.index.models import Instance
from scp_node.retrieve import load_stored_file
from scp_node.storage.recent_files import RecentFiles
from tests.support import RunningNode, free_port, make_config, pydicom_test_file, start_node

PEERS = [
    {"ae_title": "VIEWER", "permissions": ["find"]},
    {"ae_title": "MODALITY", "permissions": ["echo", "store"]},
    {"ae_title": "PINNED", "host": "127.0.0.2", "check_host": True, "permissions": ["echo"]},
    {"ae_title": "LOCAL", "host": "127.0.0.1", "check_host": True, "permissions": ["echo"]},
    {"ae_title": "MOVER", "permissions": ["move"]},
]


def _associate(port: int, calling_ae: str, *contexts: str, **kwargs):
    ae = AE(ae_title=calling_ae)
    for context in contexts or (Verification,):
        ae.add_requested_context(context)
    return ae.associate("127.0.0.1", port, ae_title="SCP_NODE", **kwargs)


@pytest.fixture
def locked_node(tmp_path: Path) -> RunningNode:
    config = make_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        **{"access.unknown_peer_permissions": [], "access.peers": PEERS},
    )
    node = start_node(config)
    yield node
    node.stop()


def test_unknown_and_misplaced_peers_are_refused_at_association(
    locked_node: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="scp_node.access")
    stranger = _associate(locked_node.port, "STRANGER")
    assert stranger.is_rejected
    assert "STRANGER at 127.0.0.1 refused" in caplog.text

    assert _associate(locked_node.port, "PINNED").is_rejected  # not from 127.0.0.2
    assert "PINNED connected from 127.0.0.1, not from its host 127.0.0.2" in caplog.text

    local = _associate(locked_node.port, "LOCAL")
    assert local.is_established and local.send_c_echo().Status == 0x0000
    local.release()

    echoscu = subprocess.run(
        ["echoscu", "-aet", "STRANGER", "-aec", "SCP_NODE", "127.0.0.1", str(locked_node.port)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert echoscu.returncode != 0 and "Association Rejected" in echoscu.stdout + echoscu.stderr


def test_permissions_limit_services_within_an_association(
    locked_node: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="scp_node")
    viewer = _associate(
        locked_node.port, "VIEWER", Verification, StudyRootQueryRetrieveInformationModelFind, CTImageStorage
    )
    assert viewer.is_established
    accepted = {cx.abstract_syntax for cx in viewer.accepted_contexts}
    assert accepted == {StudyRootQueryRetrieveInformationModelFind, CTImageStorage}
    assert "VIEWER at 127.0.0.1: echo not permitted" in caplog.text
    store = viewer.send_c_store(dcmread(pydicom_test_file("CT_small.dcm")))
    assert store.Status == 0x0124  # no 'store' permission
    assert "C-STORE of" in caplog.text and "refused for VIEWER at 127.0.0.1" in caplog.text
    viewer.release()

    modality = _associate(
        locked_node.port, "MODALITY", CTImageStorage, StudyRootQueryRetrieveInformationModelGet
    )
    assert {cx.abstract_syntax for cx in modality.accepted_contexts} == {CTImageStorage}
    assert modality.send_c_store(dcmread(pydicom_test_file("CT_small.dcm"))).Status == 0x0000
    modality.release()


def test_associations_share_the_node_contexts_instead_of_copying_them(locked_node: RunningNode) -> None:
    """pynetdicom deep-copies the acceptor's contexts for every association (90 ms of CPU for
    the node's 196); the node hands each association the same, read-only contexts."""
    modality = _associate(locked_node.port, "MODALITY", CTImageStorage)
    try:
        (served,) = locked_node.server.active_associations
        shared = {id(cx) for cx in locked_node.server.contexts}
        assert served.acceptor.supported_contexts
        assert all(id(cx) in shared for cx in served.acceptor.supported_contexts)
    finally:
        modality.release()


def test_peer_added_with_the_cli_is_admitted_without_restart(
    locked_node: RunningNode, tmp_path: Path
) -> None:
    assert _associate(locked_node.port, "NEWPEER").is_rejected
    config_file = tmp_path / "config.yaml"
    config = locked_node.config
    config_file.write_text(
        yaml.safe_dump(
            {
                "storage": {
                    "data_dir": str(config.storage.data_dir),
                    "database_url": config.storage.database_url,
                }
            }
        )
    )
    cli = [sys.executable, "-m", "scp_node.cli", "--config", str(config_file)]
    subprocess.run(
        [*cli[:3], "ae", "add", "NEWPEER", "--permissions", "echo", *cli[3:]], check=True, timeout=60
    )
    assoc = _associate(locked_node.port, "NEWPEER")
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assoc.release()


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


def test_tls_serves_dicom_over_tls_only(tmp_path: Path) -> None:
    key, cert = _self_signed(tmp_path, "node")
    client_key, client_cert = _self_signed(tmp_path, "client")
    config = make_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        **{
            "network.tls": {
                "cert_file": str(cert),
                "key_file": str(key),
                "ca_file": str(client_cert),
                "require_client_cert": True,
            }
        },
    )
    node = start_node(config)
    try:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        client.load_cert_chain(str(client_cert), str(client_key))
        assoc = _associate(node.port, "MODALITY", Verification, tls_args=(client, "localhost"))
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
        assoc.release()

        assert not _associate(node.port, "MODALITY").is_established  # plain TCP
        anonymous = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        assert not _associate(node.port, "MODALITY", tls_args=(anonymous, "localhost")).is_established

        echoscu = subprocess.run(
            [
                *(
                    "echoscu",
                    "-aet",
                    "MODALITY",
                    "-aec",
                    "SCP_NODE",
                    "+tls",
                    str(client_key),
                    str(client_cert),
                ),
                *("+cf", str(cert), "127.0.0.1", str(node.port)),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert echoscu.returncode == 0, echoscu.stdout + echoscu.stderr
    finally:
        node.stop()


def test_move_to_a_tls_peer_goes_over_tls(tmp_path: Path) -> None:
    """A C-MOVE destination that serves TLS only: reached with its peer entry's `tls`, mutual
    (the node presents its certificate; the destination's must chain to ca_file), and not
    reached without it."""
    node_key, node_cert = _self_signed(tmp_path, "node")
    dest_key, dest_cert = _self_signed(tmp_path, "destination")
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(node_cert.read_bytes() + dest_cert.read_bytes())
    destination_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    destination_tls.load_cert_chain(str(dest_cert), str(dest_key))
    destination_tls.load_verify_locations(str(node_cert))
    destination_tls.verify_mode = ssl.CERT_REQUIRED
    received: list[str] = []
    destination = AE(ae_title="ARCHIVE")
    destination.add_supported_context(CTImageStorage)
    port = free_port()
    server = destination.start_server(
        ("127.0.0.1", port),
        block=False,
        ssl_context=destination_tls,
        evt_handlers=[(evt.EVT_C_STORE, lambda event: received.append(event.dataset.SOPInstanceUID) or 0)],
    )
    peers = [
        {"ae_title": "VIEWER", "permissions": ["move"]},
        {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": port, "tls": True, "permissions": []},
        {"ae_title": "PLAIN", "host": "127.0.0.1", "port": port, "permissions": []},
    ]
    tls = {"cert_file": str(node_cert), "key_file": str(node_key), "ca_file": str(bundle)}
    config = make_config(
        tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}", **{"access.peers": peers, "network.tls": tls}
    )
    node = start_node(config)
    to_node = {"tls_args": (ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(node_cert)), None)}
    to_node["tls_args"][0].check_hostname = False
    try:
        ct = dcmread(pydicom_test_file("CT_small.dcm"))
        sender = _associate(node.port, "MODALITY", CTImageStorage, **to_node)
        assert sender.send_c_store(ct).Status == 0x0000
        sender.release()
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ct.StudyInstanceUID
        statuses = {}
        for target in ("ARCHIVE", "PLAIN"):
            mover = _associate(node.port, "VIEWER", StudyRootQueryRetrieveInformationModelMove, **to_node)
            responses = mover.send_c_move(query, target, StudyRootQueryRetrieveInformationModelMove)
            statuses[target] = [int(status.Status) for status, _ in responses if status][-1]
            mover.release()
    finally:
        node.stop()
        server.shutdown()
    assert received == [ct.SOPInstanceUID]
    assert statuses["ARCHIVE"] == 0x0000
    assert statuses["PLAIN"] != 0x0000  # a plain association to a TLS-only port fails


def _variant(tmp_path: Path, name: str, sop_uid: str, patient_name: str) -> tuple[Path, str]:
    """A real CT file with a given UID and patient name; returns it and its data set digest."""
    ds = dcmread(pydicom_test_file("CT_small.dcm"))
    ds.SOPInstanceUID, ds.PatientName = sop_uid, patient_name
    path = tmp_path / f"{name}.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    return path, hashlib.sha256(data[dataset_offset(data) :]).hexdigest()


def _stored_digest(node: RunningNode, sop_uid: str) -> str:
    with node.context.sessions() as session:
        instance = session.query(Instance).filter_by(sop_instance_uid=sop_uid).one()
        context = node.context
        stored = load_stored_file(instance, context.codecs, context.instance_file, RecentFiles(0))
        return hashlib.sha256(stored.data[stored.dataset_offset :]).hexdigest()


def _send(port: int, calling_ae: str, path: Path) -> int:
    assoc = _associate(port, calling_ae, CTImageStorage, MRImageStorage)
    try:
        return assoc.send_c_store(path).Status
    finally:
        assoc.release()


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # (status of: same content again, changed by the same sender, changed by another sender), winner
        ("reject", (0x0000, 0x0111, 0x0111, "original")),
        ("keep", (0x0000, 0x0000, 0x0000, "original")),
        ("overwrite", (0x0000, 0x0000, 0x0000, "by_other")),
        ("overwrite_same_sender", (0x0000, 0x0000, 0x0111, "by_sender")),
    ],
)
def test_duplicate_policies(tmp_path: Path, policy: str, expected: tuple) -> None:
    node = start_node(
        make_config(
            tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}", **{"storage.duplicate_policy": policy}
        )
    )
    try:
        uid = generate_uid()
        files = {name: _variant(tmp_path, name, uid, name) for name in ("original", "by_sender", "by_other")}
        assert _send(node.port, "MODALITY", files["original"][0]) == 0x0000
        statuses = (
            _send(node.port, "MODALITY", files["original"][0]),
            _send(node.port, "MODALITY", files["by_sender"][0]),
            _send(node.port, "OTHER", files["by_other"][0]),
        )
        node.wait_for_jobs()
        assert (*statuses, _winner(node, uid, files)) == expected
        _assert_no_orphans(node, 1)
    finally:
        node.stop()


def _winner(node: RunningNode, uid: str, files: dict[str, tuple[Path, str]]) -> str:
    digest = _stored_digest(node, uid)
    return next(name for name, (_path, file_digest) in files.items() if file_digest == digest)


def _assert_no_orphans(node: RunningNode, instances: int) -> None:
    """Every stored file belongs to exactly one indexed instance."""
    data_dir = node.config.storage.data_dir
    files = [p for folder in ("spool", "blobs") for p in (data_dir / folder).rglob("*") if p.is_file()]
    with node.context.sessions() as session:
        referenced = {p for i in session.query(Instance) for p in (i.spool_path, i.blob_path) if p}
        assert session.query(Instance).count() == instances
    assert sorted(map(str, files)) == sorted(referenced)
    assert not list((data_dir / "incoming").iterdir())


@pytest.mark.parametrize("policy", ["reject", "overwrite"])
def test_concurrent_stores_of_one_uid_leave_one_consistent_instance(
    tmp_path: Path, database_url: str, policy: str
) -> None:
    node = start_node(make_config(tmp_path, database_url, **{"storage.duplicate_policy": policy}))
    rounds = 8
    uids = [generate_uid() for _ in range(rounds)]
    variants = {
        side: [_variant(tmp_path, f"{side}{i}", uid, f"{side}^{i}") for i, uid in enumerate(uids)]
        for side in ("A", "B")
    }
    results: dict[str, list[int]] = {}
    barrier = threading.Barrier(2)

    def sender(side: str) -> None:
        assoc = _associate(node.port, "MODALITY", CTImageStorage)
        statuses = []
        for path, _digest in variants[side]:
            barrier.wait(timeout=30)
            statuses.append(assoc.send_c_store(path).Status)
        assoc.release()
        results[side] = statuses

    try:
        threads = [threading.Thread(target=sender, args=(side,)) for side in ("A", "B")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        node.wait_for_jobs()
        for i, uid in enumerate(uids):
            stored = _stored_digest(node, uid)
            succeeded = {side for side in "AB" if results[side][i] == 0x0000}
            if policy == "reject":
                assert len(succeeded) == 1, (results, i)  # the first commit wins, the other is refused
                assert stored == variants[succeeded.pop()][i][1]
            else:
                assert succeeded == {"A", "B"}
                assert stored in {variants["A"][i][1], variants["B"][i][1]}
        _assert_no_orphans(node, rounds)
    finally:
        node.stop()


def test_many_associations_store_and_retrieve_at_once(tmp_path: Path, database_url: str) -> None:
    senders, per_sender, retrievers = 10, 5, 4
    node = start_node(make_config(tmp_path, database_url, **{"network.max_associations": 16}))
    try:
        study_uid = generate_uid()
        stored = _make_study(tmp_path / "stored", study_uid, 8)
        for path in stored.values():
            assert _send(node.port, "MODALITY", path) == 0x0000
        incoming = {
            n: _make_study(tmp_path / f"sender{n}", generate_uid(), per_sender) for n in range(senders)
        }
        barrier = threading.Barrier(senders + retrievers)
        errors: list[str] = []
        retrieved: list[dict[str, bytes]] = []

        def send(n: int) -> None:
            assoc = _associate(node.port, "MODALITY", CTImageStorage, MRImageStorage)
            barrier.wait(timeout=30)
            for path in incoming[n].values():
                status = assoc.send_c_store(path).Status
                if status != 0x0000:
                    errors.append(f"sender {n}: {path.name} -> 0x{status:04X}")
            assoc.release()

        def retrieve() -> None:
            barrier.wait(timeout=30)
            try:
                retrieved.append(_c_get_study(node.port, study_uid))
            except AssertionError as exc:
                errors.append(f"C-GET: {exc}")

        threads = [threading.Thread(target=send, args=(n,)) for n in range(senders)]
        threads += [threading.Thread(target=retrieve) for _ in range(retrievers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert errors == []
        expected = {uid: _dataset_bytes(path) for uid, path in stored.items()}
        assert len(retrieved) == retrievers and all(r == expected for r in retrieved)
        node.wait_for_jobs()
        with node.context.sessions() as session:
            assert session.query(Instance).count() == len(stored) + senders * per_sender
        for files in incoming.values():
            for uid, path in files.items():
                assert _stored_digest(node, uid) == hashlib.sha256(_dataset_bytes(path)).hexdigest()
    finally:
        node.stop()


def _make_study(folder: Path, study_uid: str, count: int) -> dict[str, Path]:
    folder.mkdir(parents=True)
    files = {}
    series_uids = {modality: generate_uid() for modality in ("CT", "MR")}
    for i in range(count):
        ds = dcmread(pydicom_test_file("CT_small.dcm" if i % 2 else "MR_small.dcm"))
        ds.StudyInstanceUID, ds.SOPInstanceUID = study_uid, generate_uid()
        ds.SeriesInstanceUID = series_uids[ds.Modality]
        files[ds.SOPInstanceUID] = folder / f"{i}.dcm"
        ds.save_as(files[ds.SOPInstanceUID], enforce_file_format=True)
    return files


def _dataset_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return data[dataset_offset(data) :]


def _c_get_study(port: int, study_uid: str) -> dict[str, bytes]:
    """C-GET a study; the data set bytes of each instance exactly as they came off the wire."""
    received: dict[str, bytes] = {}

    def on_store(event) -> int:
        received[event.request.AffectedSOPInstanceUID] = _dataset_bytes(Path(event.dataset_path))
        return 0x0000

    identifier = Dataset()
    identifier.QueryRetrieveLevel, identifier.StudyInstanceUID = "STUDY", study_uid
    assoc = _associate(
        port,
        "VIEWER",
        StudyRootQueryRetrieveInformationModelGet,
        CTImageStorage,
        MRImageStorage,
        ext_neg=[build_role(c, scp_role=True) for c in (CTImageStorage, MRImageStorage)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    statuses = [s.Status for s, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)]
    assoc.release()
    assert statuses[-1] == 0x0000, statuses
    return received


def test_config_peers_win_over_the_table_on_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path, f"sqlite:///{tmp_path / 'index.sqlite'}", **{"access.peers": PEERS})
    start_node(config).stop()
    edited = [
        {**peer, "permissions": ["echo", "find"]} if peer["ae_title"] == "VIEWER" else peer for peer in PEERS
    ]
    node = start_node(
        make_config(
            tmp_path,
            config.storage.database_url,
            **{"access.peers": edited, "network.port": config.network.port},
        )
    )
    try:
        viewer = _associate(node.port, "VIEWER", Verification)
        assert viewer.is_established and viewer.send_c_echo().Status == 0x0000
        viewer.release()
    finally:
        node.stop()


def test_log_lines_name_what_happened(locked_node: RunningNode, caplog: pytest.LogCaptureFixture) -> None:
    """A refused service is named once; classes a client offers in passing (print, worklist)
    are DEBUG; a class the node does not know (a private one) is INFO; a move to a peer without an address
    says that, not "unknown destination"."""
    caplog.set_level(logging.DEBUG, logger="scp_node")
    private_class = "1.2.826.0.1.3680043.2.1143.999.7"
    viewer = _associate(
        locked_node.port,
        "VIEWER",
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelGet,
        BasicGrayscalePrintManagementMeta,
        ModalityWorklistInformationFind,
        private_class,
    )
    assert viewer.is_established
    viewer.release()
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert "association from VIEWER at 127.0.0.1: get not permitted" in info
    assert not any("Basic Grayscale Print" in line or "Worklist" in line for line in info), info
    assert not any("result" in line for line in info), info
    assert any(private_class in line and "SOP class not supported" in line for line in info), info
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("Basic Grayscale Print" in line and "SOP class not supported" in line for line in debug)

    mover = _associate(locked_node.port, "MOVER", StudyRootQueryRetrieveInformationModelMove)
    assert mover.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = "1.2.3"
    statuses = [
        status.Status
        for status, _ in mover.send_c_move(query, "VIEWER", StudyRootQueryRetrieveInformationModelMove)
        if status
    ]
    mover.release()
    assert statuses == [0xA801]
    assert "C-MOVE from MOVER to 'VIEWER' refused: peer VIEWER has no host and port to send to" in caplog.text

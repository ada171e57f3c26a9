"""DICOMweb against a running node, with dicomweb-client (PyPI) and plain HTTP: STOW-RS then
QIDO-RS answers as C-FIND does, WADO-RS gives back the data set as sent, rendered and frames,
access refusals, bad uploads that store nothing, concurrent uploads, `serve --http-port`."""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import io
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import requests
import yaml
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from PIL import Image
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from sqlalchemy import func, select

from scp_node.imaging.dicom_layout import dataset_offset
from scp_node.index.models import Instance
from scp_node.web.auth import hash_password, new_token
from tests.support import (
    RunningNode,
    free_port,
    make_config,
    pydicom_test_file,
    record_stored_file_loads,
    start_node,
)

ADMIN, PASSWORD = "admin", "correct horse"
TOKEN, TOKEN_SHA256 = new_token()
ADMIN_HASH = hash_password(PASSWORD)
MAX_BODY = 400_000
VIEWER_ORIGIN = "https://viewer.example.org"
DICOM_IN = 'multipart/related; type="application/dicom"'
JPEG_LS_LOSSLESS, JPEG_BASELINE = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.50"
FILES = ("CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "SC_rgb.dcm")


@pytest.fixture
def web(tmp_path: Path, database_url: str) -> Iterator[RunningNode]:
    users = [
        {"name": ADMIN, "password_hash": ADMIN_HASH, "permissions": ["find", "get", "store", "admin"]},
        {"name": "viewer", "token_sha256": TOKEN_SHA256, "permissions": ["find", "get"]},
    ]
    settings = {"http.users": users, "http.max_body_bytes": MAX_BODY, "http.cors_origins": [VIEWER_ORIGIN]}
    config = make_config(tmp_path, database_url, **settings)
    node = start_node(config, http=True)
    yield node
    node.stop()


def _url(node: RunningNode) -> str:
    return f"http://127.0.0.1:{node.config.http.port}"


def _client(node: RunningNode, user: str = ADMIN, password: str = PASSWORD) -> DICOMwebClient:
    session = create_session_from_user_pass(user, password)
    return DICOMwebClient(f"{_url(node)}/dicom-web", session=session)


def _viewer(node: RunningNode) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    return session


def _datasets(*names: str) -> list[Dataset]:
    return [dcmread(pydicom_test_file(name)) for name in names]


def _sent_digest(ds: Dataset) -> str:
    """The SHA-256 of the data set as dicomweb-client encodes it for STOW-RS."""
    buffer = io.BytesIO()
    dcmwrite(buffer, ds)
    data = buffer.getvalue()
    return hashlib.sha256(data[dataset_offset(data) :]).hexdigest()


def _parts(response: requests.Response) -> list[bytes]:
    """The parts of a multipart/related response, split by the standard library's MIME parser."""
    head = f"Content-Type: {response.headers['Content-Type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + response.content)
    return [part.get_payload(decode=True) for part in message.iter_parts()]


def _count(node: RunningNode) -> int:
    with node.context.sessions() as session:
        return session.scalar(select(func.count()).select_from(Instance)) or 0


def _files(node: RunningNode, folder: str) -> list[Path]:
    return [path for path in (node.config.storage.data_dir / folder).rglob("*") if path.is_file()]


def _c_find(node: RunningNode, identifier: Dataset) -> list[Dataset]:
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="SCP_NODE")
    assert assoc.is_established
    try:
        found = [
            ds
            for status, ds in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
            if status and status.Status == 0xFF00
        ]
    finally:
        assoc.release()
    return found


STUDY_KEYS = ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "NumberOfStudyRelatedInstances")


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"PatientName": "compressed*"},
        {"StudyDate": "20040101-20041231"},
        {"ModalitiesInStudy": "MR"},
        {"PatientID": "1CT1\\4MR1"},
    ],
    ids=["all", "wildcard", "date-range", "modality", "list"],
)
def test_stow_then_qido_finds_what_c_find_finds(web: RunningNode, filters: dict[str, str]) -> None:
    client = _client(web)
    stored = client.store_instances(_datasets(*FILES))
    assert len(stored.ReferencedSOPSequence) == len(FILES) and "FailedSOPSequence" not in stored
    assert _count(web) == len(FILES)  # indexed before the response

    found = client.search_for_studies(search_filters=filters, fields=list(STUDY_KEYS))
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    for keyword in STUDY_KEYS:
        setattr(identifier, keyword, filters.get(keyword, ""))
    for keyword, value in filters.items():
        setattr(identifier, keyword, value)
    expected = _c_find(web, identifier)
    assert found, filters
    as_qido = sorted(tuple(str(Dataset.from_json(item).get(k, "")) for k in STUDY_KEYS) for item in found)
    as_c_find = sorted(tuple(str(ds.get(k, "")) for k in STUDY_KEYS) for ds in expected)
    assert as_qido == as_c_find


def test_qido_levels_paging_and_parameters(web: RunningNode) -> None:
    client = _client(web)
    client.store_instances(_datasets(*FILES))
    studies = client.search_for_studies()
    assert len(studies) == len(FILES)
    first, rest = client.search_for_studies(limit=2), client.search_for_studies(offset=2)
    uids = lambda items: [Dataset.from_json(i).StudyInstanceUID for i in items]  # noqa: E731
    assert uids(first) + uids(rest) == uids(studies) and len(first) == 2

    ct = _datasets("CT_small.dcm")[0]
    series = client.search_for_series(study_instance_uid=ct.StudyInstanceUID)
    assert [Dataset.from_json(s).Modality for s in series] == ["CT"]
    instances = client.search_for_instances(search_filters={"Modality": "MR"})
    assert len(instances) == 2 and all("00080018" in item for item in instances)
    everything = client.search_for_studies(fields=["all"], fuzzymatching=True)
    assert "00201208" in everything[0]  # NumberOfStudyRelatedInstances

    session = _viewer(web)
    base = f"{_url(web)}/dicom-web"
    for query, reason in (
        ("limit=-1", "limit"),
        ("NoSuchAttribute=1", "unknown attribute"),
        ("StudyDate=2004xx01", "invalid search"),
        ("StudyInstanceUID=1.2.*", "invalid search"),
        ("fuzzymatching=maybe", "fuzzymatching"),
    ):
        answer = session.get(f"{base}/studies?{query}")
        assert answer.status_code == 400 and reason in answer.text, (query, answer.text)


def test_wado_gives_back_the_data_set_as_sent(web: RunningNode) -> None:
    client = _client(web)
    sent = _datasets("CT_small.dcm", "MR_small_implicit.dcm")
    client.store_instances(sent)
    web.wait_for_jobs()  # retrieval now rebuilds the files from their compressed blobs
    session = _viewer(web)
    for ds in sent:
        url = (
            f"{_url(web)}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        answer = session.get(url, headers={"Accept": DICOM_IN})
        assert answer.status_code == 200, answer.text
        (part,) = _parts(answer)
        assert hashlib.sha256(part[dataset_offset(part) :]).hexdigest() == _sent_digest(ds)

        jpeg_ls = session.get(
            url,
            headers={"Accept": f"{DICOM_IN}; transfer-syntax={JPEG_LS_LOSSLESS}"},
        )
        converted = dcmread(io.BytesIO(_parts(jpeg_ls)[0]))
        assert converted.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.80"
        assert np.array_equal(converted.pixel_array, ds.pixel_array)

    retrieved = client.retrieve_instance(
        sent[0].StudyInstanceUID, sent[0].SeriesInstanceUID, sent[0].SOPInstanceUID
    )
    assert retrieved.PatientName == sent[0].PatientName
    lossy = session.get(
        url,
        headers={"Accept": f"{DICOM_IN}; transfer-syntax={JPEG_BASELINE}"},
    )
    assert lossy.status_code == 406


def test_wado_study_metadata_frames_and_rendered(web: RunningNode) -> None:
    client = _client(web)
    mr = _datasets("MR_small.dcm")[0]
    copies = []
    for number in range(3):  # one series of three instances
        copy = _datasets("MR_small.dcm")[0]
        copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        copy.InstanceNumber = number + 1
        copies.append(copy)
    multiframe, rgb = _datasets("emri_small.dcm", "SC_rgb.dcm")
    client.store_instances([*copies, multiframe, rgb])

    study = client.retrieve_study(mr.StudyInstanceUID)
    assert sorted(ds.SOPInstanceUID for ds in study) == sorted(ds.SOPInstanceUID for ds in copies)
    metadata = client.retrieve_series_metadata(mr.StudyInstanceUID, mr.SeriesInstanceUID)
    assert len(metadata) == 3
    assert metadata[0]["7FE00010"]["BulkDataURI"].endswith("/frames/1")
    assert "Value" not in metadata[0]["7FE00010"]

    ids = (multiframe.StudyInstanceUID, multiframe.SeriesInstanceUID, multiframe.SOPInstanceUID)
    frames = client.retrieve_instance_frames(*ids, frame_numbers=[3, 10])
    assert frames == [multiframe.pixel_array[2].tobytes(), multiframe.pixel_array[9].tobytes()]
    jpeg_ls = client.retrieve_instance_frames(*ids, frame_numbers=[4], media_types=(("image/jls",),))
    assert np.array_equal(imagecodecs.jpegls_decode(jpeg_ls[0]), multiframe.pixel_array[3])
    png = client.retrieve_instance_rendered(*ids, media_types=("image/png",))
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size == (multiframe.Columns, multiframe.Rows)
    assert np.asarray(image).std() > 0  # windowed, not blank
    thumbnail = client.retrieve_instance_rendered(*ids, params={"viewport": "32,32"})
    assert Image.open(io.BytesIO(thumbnail)).format == "JPEG"
    assert max(Image.open(io.BytesIO(thumbnail)).size) == 32
    colour = client.retrieve_instance_rendered(
        rgb.StudyInstanceUID, rgb.SeriesInstanceUID, rgb.SOPInstanceUID, media_types=("image/png",)
    )
    assert Image.open(io.BytesIO(colour)).mode == "RGB"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(colour))), rgb.pixel_array)

    session = _viewer(web)
    base = f"{_url(web)}/dicom-web/studies/{ids[0]}/series/{ids[1]}/instances/{ids[2]}"
    assert session.get(f"{base}/frames/11").status_code == 404
    assert session.get(f"{base}/frames/x").status_code == 400
    assert session.get(f"{base}/rendered", headers={"Accept": "image/gif"}).status_code == 406
    assert session.get(f"{_url(web)}/dicom-web/studies/1.2.3").status_code == 404


def test_access_anonymous_wrong_password_token_and_permissions(
    web: RunningNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="scp_node.web")
    base = _url(web)
    anonymous = requests.get(f"{base}/dicom-web/studies")
    assert anonymous.status_code == 401 and "authentication required" in anonymous.text
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(f"{base}/healthz").json() == {
        "status": "ok",
        "database": "ok",
        "storage": "ok",
        "queue": "ok",
    }
    with pytest.raises(requests.HTTPError) as refused:
        _client(web, password="wrong").search_for_studies()
    assert refused.value.response.status_code == 401
    assert "HTTP login failed for user 'admin' from 127.0.0.1" in caplog.text

    viewer = _viewer(web)
    assert viewer.get(f"{base}/dicom-web/studies").status_code == 200
    upload = viewer.post(
        f"{base}/dicom-web/studies",
        data=b"--b\r\n\r\nx\r\n--b--",
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
    )
    assert upload.status_code == 403 and "lacks the store permission" in upload.text
    assert viewer.get(f"{base}/metrics").status_code == 403
    bad_token = requests.get(f"{base}/dicom-web/studies", headers={"Authorization": "Bearer nope"})
    assert bad_token.status_code == 401

    preflight = requests.options(
        f"{base}/dicom-web/studies",
        headers={
            "Origin": VIEWER_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == VIEWER_ORIGIN
    cross = viewer.get(f"{base}/dicom-web/studies", headers={"Origin": "https://elsewhere.example"})
    assert "Access-Control-Allow-Origin" not in cross.headers

    _client(web).store_instances(_datasets("CT_small.dcm"))
    metrics = requests.get(f"{base}/metrics", auth=(ADMIN, PASSWORD))
    assert metrics.status_code == 200 and metrics.headers["Content-Type"].startswith("text/plain")
    assert 'scp_node_instances{state="queued"} 1' in metrics.text or "scp_node_instances{" in metrics.text
    assert "scp_node_queue_depth " in metrics.text and "scp_node_received_bytes " in metrics.text


def _related(*parts: tuple[str, bytes], boundary: str = "XyZ") -> tuple[bytes, dict[str, str]]:
    body = b"".join(
        f"--{boundary}\r\nContent-Type: {kind}\r\n\r\n".encode() + data + b"\r\n" for kind, data in parts
    )
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    return body + f"--{boundary}--\r\n".encode(), headers


def test_bad_uploads_get_4xx_and_store_nothing(web: RunningNode, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="scp_node")
    url = f"{_url(web)}/dicom-web/studies"
    auth = (ADMIN, PASSWORD)
    good = pydicom_test_file("CT_small.dcm").read_bytes()
    body, headers = _related(("application/dicom", good))

    cut = requests.post(url, data=body[:-20], headers=headers, auth=auth)
    assert cut.status_code == 400 and "malformed multipart" in cut.text
    no_boundary = requests.post(url, data=body, headers={"Content-Type": "multipart/related"}, auth=auth)
    assert no_boundary.status_code == 400 and "boundary" in no_boundary.text
    mixed, mixed_headers = _related(("application/dicom", good), ("text/plain", b"hello"))
    assert requests.post(url, data=mixed, headers=mixed_headers, auth=auth).status_code == 415
    big, big_headers = _related(*[("application/dicom", good)] * (MAX_BODY // len(good) + 1))
    too_big = requests.post(url, data=big, headers=big_headers, auth=auth)
    assert too_big.status_code == 413 and "http.max_body_bytes" in too_big.text
    assert _count(web) == 0

    junk, junk_headers = _related(
        ("application/dicom", b"not DICOM at all"), ("application/dicom", good[:-1000])
    )
    refused = requests.post(url, data=junk, headers=junk_headers, auth=auth)
    assert refused.status_code == 409
    failed = Dataset.from_json(refused.json()).FailedSOPSequence
    assert [item.FailureReason for item in failed] == [0xC000, 0xC000]
    assert "not a DICOM Part-10 file" in refused.headers["Warning"]
    assert _count(web) == 0 and _files(web, "spool") == [] and _files(web, "incoming") == []
    assert "HTTP POST /dicom-web/studies from 127.0.0.1: 400 malformed multipart" in caplog.text

    other_study = _datasets("MR_small.dcm")[0]
    with pytest.raises(requests.HTTPError) as wrong_study:
        _client(web).store_instances([other_study], study_instance_uid="1.2.3.4")
    assert wrong_study.value.response.status_code == 409
    assert _count(web) == 0


def _open_node(tmp_path: Path, anonymous: list[str], **settings: object) -> RunningNode:
    """A SQLite node with HTTP whose anonymous requests may do `anonymous`."""
    config = make_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        **{"http.anonymous_permissions": anonymous, **settings},
    )
    return start_node(config, http=True)


def test_urls_in_answers_start_with_the_public_url_when_one_is_set(tmp_path: Path) -> None:
    """Behind a proxy, the RetrieveURLs and BulkDataURIs a client gets must be the proxy's."""
    public = "https://pacs.example.org/archive"
    node = _open_node(tmp_path, ["find", "get", "store"], **{"http.public_url": public + "/"})
    try:
        client = DICOMwebClient(f"{_url(node)}/dicom-web")
        ct = _datasets("CT_small.dcm")[0]
        client.store_instances([ct])
        (study,) = client.search_for_studies()
        assert Dataset.from_json(study).RetrieveURL == f"{public}/dicom-web/studies/{ct.StudyInstanceUID}"
        (metadata,) = client.retrieve_series_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID)
        assert metadata["7FE00010"]["BulkDataURI"].startswith(f"{public}/dicom-web/studies/")
    finally:
        node.stop()


@pytest.mark.parametrize("policy", ["reject", "overwrite"])
def test_duplicate_policy_applies_to_stow(tmp_path: Path, policy: str) -> None:
    node = _open_node(tmp_path, ["store"], **{"storage.duplicate_policy": policy})
    try:
        client = DICOMwebClient(f"{_url(node)}/dicom-web")
        original = _datasets("CT_small.dcm")[0]
        client.store_instances([original])
        changed = _datasets("CT_small.dcm")[0]
        changed.PatientName = "Changed^Name"
        if policy == "reject":
            with pytest.raises(requests.HTTPError) as refused:
                client.store_instances([changed])
            assert (
                Dataset.from_json(refused.value.response.json()).FailedSOPSequence[0].FailureReason == 0x0111
            )
        else:
            client.store_instances([changed])
        with node.context.sessions() as session:
            (digest,) = session.scalars(select(Instance.dataset_sha256)).all()
        assert digest == _sent_digest(original if policy == "reject" else changed)
    finally:
        node.stop()


def test_concurrent_stow_of_the_same_instances(web: RunningNode) -> None:
    names = ("CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm")
    outcomes: list[object] = []

    def upload() -> None:
        try:
            response = _client(web).store_instances(_datasets(*names))
            outcomes.append(len(response.ReferencedSOPSequence))
        except Exception as exc:  # reported by the assertion below
            outcomes.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert outcomes == [3, 3, 3, 3]
    web.wait_for_jobs()
    assert _count(web) == 3
    with web.context.sessions() as session:
        named = {
            p for row in session.execute(select(Instance.spool_path, Instance.blob_path)) for p in row if p
        }
    on_disk = {str(path) for folder in ("spool", "blobs") for path in _files(web, folder)}
    assert on_disk == named  # one copy each, no orphans


def test_serve_http_port_serves_and_a_taken_port_stops_serve_in_one_line(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    settings = {"network": {"port": free_port()}, "storage": {"data_dir": str(tmp_path / "data")}}
    config_file.write_text(yaml.safe_dump(settings))
    http_port = free_port()
    command = [sys.executable, "-m", "scp_node.cli", "serve", "--config", str(config_file)]
    log_file = tmp_path / "serve.log"
    with open(log_file, "wb") as log:
        node = subprocess.Popen(
            [*command, "--http-port", str(http_port)], stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert node.poll() is None and time.monotonic() < deadline, log_file.read_text()
            try:
                health = requests.get(f"http://127.0.0.1:{http_port}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert requests.get(f"http://127.0.0.1:{http_port}/dicom-web/studies").status_code == 401
        node.send_signal(signal.SIGTERM)
        assert node.wait(timeout=60) == 0
        assert "shut down cleanly" in log_file.read_text()
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        refused = subprocess.run([*command, "--http-port", port], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith("scp-node: HTTP server cannot listen on 127.0.0.1:")
    )


def test_http_tls_serves_https_with_the_dicom_certificate(tmp_path: Path) -> None:
    key, cert = tmp_path / "node.key", tmp_path / "node.pem"
    subprocess.run(
        [
            *(
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
            ),
            *("-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = make_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'index.sqlite'}",
        **{"network.tls": {"cert_file": str(cert), "key_file": str(key)}, "http.tls": True},
    )
    node = start_node(config, http=True)
    try:
        port = config.http.port
        assert requests.get(f"https://localhost:{port}/healthz", verify=str(cert)).status_code == 200
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://localhost:{port}/healthz", timeout=5)
    finally:
        node.stop()


def test_wado_sends_a_stored_jpeg_ls_blobs_frames_to_who_asks_for_jpeg_ls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As C-GET: an unsigned image stored with JPEG-LS goes out as the blob's own frames when
    JPEG-LS is asked for first, nothing decoded; the received bytes when no syntax is asked for."""
    node = _open_node(tmp_path, ["get", "store"], **{"compression.default_codec": "jpegls"})
    try:
        (ds,) = _datasets("emri_small.dcm")
        DICOMwebClient(f"{_url(node)}/dicom-web").store_instances([ds])
        node.wait_for_jobs()
        loaded = record_stored_file_loads(monkeypatch)
        url = (
            f"{_url(node)}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
            f"/instances/{ds.SOPInstanceUID}"
        )
        answer = requests.get(url, headers={"Accept": f"{DICOM_IN}; transfer-syntax={JPEG_LS_LOSSLESS}"})
        assert answer.status_code == 200, answer.text
        copy = dcmread(io.BytesIO(_parts(answer)[0]))
        assert copy.file_meta.TransferSyntaxUID == JPEG_LS_LOSSLESS
        assert np.array_equal(copy.pixel_array, ds.pixel_array)
        assert loaded == []
        (part,) = _parts(requests.get(url, headers={"Accept": DICOM_IN}))
        assert hashlib.sha256(part[dataset_offset(part) :]).hexdigest() == _sent_digest(ds)
        assert loaded == [ds.SOPInstanceUID]
    finally:
        node.stop()

"""What real peers do: dcmtk clients, Orthanc, viewer-style requesters."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

from scp_node.imaging.encapsulation import JPEGXLLossless, encode_pixel_data
from scp_node.index.models import Instance
from tests.support import (
    RunningNode,
    getscu,
    make_config,
    pydicom_data_dir,
    pydicom_test_file,
    record_stored_file_loads,
    start_node,
    storescu,
)


@pytest.mark.dcmtk
def test_retired_storage_classes_are_stored_and_the_next_file_too(
    node: RunningNode, tmp_path: Path, dcmtk: None
) -> None:
    """pydicom-data's color-pl.dcm is retired Ultrasound Image Storage (1.2.840.10008.5.1.4.1.1.6),
    sent by storescu -R between two files of one study: the node offers its context, so it
    must store it, and the file queued behind it."""
    retired = dcmread(pydicom_data_dir() / "color-pl.dcm")
    assert retired.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6"
    study = [dcmread(pydicom_test_file("CT_small.dcm")), retired, dcmread(pydicom_test_file("MR_small.dcm"))]
    paths = []
    for number, ds in enumerate(study):
        ds.StudyInstanceUID = study[0].StudyInstanceUID
        paths.append(tmp_path / f"{number}.dcm")
        ds.save_as(paths[-1], enforce_file_format=True)
    sent = subprocess.run(
        ["storescu", "-aet", "MODALITY", "-aec", "SCP_NODE", "-R", "127.0.0.1", str(node.port), *paths],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stdout + sent.stderr
    node.wait_for_jobs()
    with node.context.sessions() as session:
        stored = {row.sop_instance_uid for row in session.query(Instance)}
    assert stored == {ds.SOPInstanceUID for ds in study}

    out = tmp_path / "out"
    got = getscu(
        node.port, out, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study[0].StudyInstanceUID}
    )
    assert got.returncode == 0, got.stdout + got.stderr
    assert sorted(dcmread(path).SOPClassUID for path in out.iterdir()) == sorted(
        ds.SOPClassUID for ds in study
    )


# What Horos / OsiriX propose for each storage class they retrieve (pynetdicom issue 543).
VIEWER_PROPOSAL = [
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEG2000,
    JPEGBaseline8Bit,
    RLELossless,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
]
# Explicit VR, JPEG-LS lossless, JPEG Lossless SV1 and JPEG 2000 lossless input.
VIEWED = ["CT_small.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEG-LL.dcm", "MR_small_jp2klossless.dcm"]


def _get_study(
    port: int, study_uid: str, contexts: dict[str, list[list[str]]]
) -> tuple[list[int], list[Dataset]]:
    """C-GET a study as a requester that proposes, per storage class, one context per list of
    syntaxes given (and the Storage SCP role); returns the statuses and what it received."""
    received: list[Dataset] = []

    def on_store(event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received.append(ds)
        return 0x0000

    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class, proposals in sorted(contexts.items()):
        for syntaxes in proposals:
            ae.add_requested_context(sop_class, syntaxes)
    roles = [build_role(sop_class, scp_role=True) for sop_class in sorted(contexts)]
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="SCP_NODE", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    statuses = [
        int(status.Status)
        for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
        if status
    ]
    assoc.release()
    return statuses, received


def _store_as_they_are(node: RunningNode, sources: list[Dataset]) -> None:
    """Send each data set in its own syntax, as an instance of its own study (pydicom ships
    one MR instance in several syntaxes under one UID)."""
    for ds in sources:
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ae = AE(ae_title="MODALITY")
    for ds in sources:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    sender = ae.associate("127.0.0.1", node.port, ae_title="SCP_NODE")
    for ds in sources:
        assert sender.send_c_store(ds).Status == 0x0000
    sender.release()
    node.wait_for_jobs()


def _words(ds: Dataset) -> np.ndarray:
    """The decoded pixel words, unsigned (JPEG XL through imagecodecs: pydicom lacks it)."""
    if ds.file_meta.TransferSyntaxUID == JPEGXLLossless:
        frames = [imagecodecs.jpegxl_decode(f) for f in generate_frames(ds.PixelData, number_of_frames=1)]
        array = np.stack(frames)
    else:
        array = ds.pixel_array
    return array.reshape(-1).view(array.dtype.str.replace("i", "u"))


def test_viewer_style_get_receives_every_instance_with_its_pixels(node: RunningNode) -> None:
    """Per storage class one context, compressed syntaxes first: the node must accept for each
    context a syntax it can produce for every instance, and send them all."""
    sources = [dcmread(pydicom_test_file(name)) for name in VIEWED]
    _store_as_they_are(node, sources)
    for source in sources:
        statuses, received = _get_study(
            node.port, source.StudyInstanceUID, {source.SOPClassUID: [VIEWER_PROPOSAL]}
        )
        assert statuses[-1] == 0x0000, [hex(code) for code in statuses]
        (copy,) = [ds for ds in received if ds.SOPInstanceUID == source.SOPInstanceUID]
        assert (copy.pixel_array == source.pixel_array).all()


# 16-bit signed CT, 16-bit MR, 8-bit RGB, multi-frame MR.
PRODUCED_FROM = ["CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm", "emri_small.dcm"]


@pytest.mark.parametrize(
    "syntax",
    [RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1, HTJ2KLossless, JPEGXLLossless],
    ids=lambda uid: UID(uid).keyword or "JPEGXLLossless",
)
def test_every_lossless_syntax_is_produced_with_identical_pixels(node: RunningNode, syntax: str) -> None:
    sources = [dcmread(pydicom_test_file(name)) for name in PRODUCED_FROM]
    _store_as_they_are(node, sources)
    for source in sources:
        statuses, received = _get_study(node.port, source.StudyInstanceUID, {source.SOPClassUID: [[syntax]]})
        assert statuses[-1] == 0x0000, (source.filename, [hex(code) for code in statuses])
        (copy,) = [ds for ds in received if ds.SOPInstanceUID == source.SOPInstanceUID]
        assert copy.file_meta.TransferSyntaxUID == syntax
        assert (_words(copy) == _words(source)).all(), source.filename


# Compressed input the compress job decodes and stores with JPEG XL.
COMPRESSED_INPUT = [
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEG-LL.dcm",
    "MR_small_RLE.dcm",
]


def test_compressed_input_goes_back_in_its_own_syntax_where_accepted(node: RunningNode) -> None:
    """Same elements, same decoded pixels, the syntax it came in: not decoded to Explicit VR."""
    sources = [dcmread(pydicom_test_file(name)) for name in COMPRESSED_INPUT]
    _store_as_they_are(node, sources)
    with node.context.sessions() as session:
        assert {row.codec for row in session.query(Instance)} == {"jpegxl"}
    for source in sources:
        own, explicit = [str(source.file_meta.TransferSyntaxUID)], [ExplicitVRLittleEndian]
        statuses, received = _get_study(
            node.port, source.StudyInstanceUID, {source.SOPClassUID: [explicit, own]}
        )
        assert statuses[-1] == 0x0000
        (copy,) = [ds for ds in received if ds.SOPInstanceUID == source.SOPInstanceUID]
        assert copy.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID, source.filename
        assert (copy.pixel_array == source.pixel_array).all()
        for element in source:
            if element.tag != 0x7FE00010:
                assert copy[element.tag].value == element.value, (source.filename, element.tag)


@pytest.mark.dcmtk
@pytest.mark.parametrize("preference", ["+xs", "+xv", "+xt", "+xr"])
def test_getscu_preferring_a_compressed_syntax_receives_every_instance(
    node: RunningNode, tmp_path: Path, preference: str, dcmtk: None
) -> None:
    files = [pydicom_test_file(name) for name in VIEWED]
    assert storescu(node.port, files).returncode == 0
    node.wait_for_jobs()
    for path in files:
        source = dcmread(path)
        out = tmp_path / preference / str(source.SOPInstanceUID)
        keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": str(source.StudyInstanceUID)}
        got = getscu(node.port, out, keys, preference)
        assert got.returncode == 0, got.stdout + got.stderr
        copies = [dcmread(p) for p in out.iterdir()]
        (copy,) = [ds for ds in copies if ds.SOPInstanceUID == source.SOPInstanceUID]
        assert (copy.pixel_array == source.pixel_array).all(), (path.name, preference)


def _with_encapsulated_icon(ds: Dataset) -> np.ndarray:
    """Give a JPEG Lossless data set an Icon Image Sequence whose thumbnail is JPEG Lossless
    too (as mammography systems write them); returns the thumbnail's pixels."""
    thumbnail = (np.arange(16 * 24, dtype=np.uint16).reshape(16, 24) * 7 % 256).astype(np.uint8)
    icon = Dataset()
    icon.Rows, icon.Columns = thumbnail.shape
    icon.SamplesPerPixel, icon.PhotometricInterpretation = 1, "MONOCHROME2"
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.PixelData = encapsulate([imagecodecs.jpeg8_encode(thumbnail, lossless=True, predictor=1)])
    icon["PixelData"].VR = "OB"
    icon["PixelData"].is_undefined_length = True
    ds.IconImageSequence = [icon]
    return thumbnail


@pytest.mark.dcmtk
def test_nested_pixel_data_follows_the_syntax_it_is_sent_in(
    node: RunningNode, tmp_path: Path, dcmtk: None
) -> None:
    """Decoded for an Explicit VR requester, the thumbnail of an Icon Image Sequence is decoded
    too: a native data set with encapsulated nested Pixel Data is one no peer can read."""
    source = dcmread(pydicom_test_file("JPEG-LL.dcm"))
    thumbnail = _with_encapsulated_icon(source)
    _store_as_they_are(node, [source])
    out = tmp_path / "out"
    got = getscu(node.port, out, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": source.StudyInstanceUID})
    assert got.returncode == 0, got.stdout + got.stderr
    (path,) = out.iterdir()
    assert subprocess.run(["dcmdump", "-q", str(path)], capture_output=True).returncode == 0
    copy = dcmread(path)
    assert copy.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    icon = copy.IconImageSequence[0]
    assert not icon["PixelData"].is_undefined_length
    icon.file_meta = copy.file_meta
    assert (icon.pixel_array == thumbnail).all()
    assert (copy.pixel_array == source.pixel_array).all()


def test_jpeg_xl_input_is_kept_as_sent_and_decoded_for_who_cannot_take_it(node: RunningNode) -> None:
    """DICOM's JPEG XL Lossless syntax on ingest: stored as received (already compressed), sent
    as it came where accepted, and decoded (pydicom lacks JPEG XL: through imagecodecs) for an
    Explicit VR requester."""
    source = dcmread(pydicom_test_file("CT_small.dcm"))
    encode_pixel_data(source, JPEGXLLossless)
    _store_as_they_are(node, [source])
    with node.context.sessions() as session:
        (row,) = session.query(Instance).all()
    assert (row.transfer_syntax_uid, row.codec) == (JPEGXLLossless, "passthrough")
    for syntax in (JPEGXLLossless, ExplicitVRLittleEndian):
        statuses, received = _get_study(node.port, source.StudyInstanceUID, {source.SOPClassUID: [[syntax]]})
        assert statuses[-1] == 0x0000, (syntax, [hex(code) for code in statuses])
        (copy,) = received
        assert copy.file_meta.TransferSyntaxUID == syntax
        assert (_words(copy) == _words(source)).all()


def test_a_requester_offering_only_a_lossy_syntax_gets_already_lossy_instances_as_stored(
    node: RunningNode,
) -> None:
    """Lossy syntaxes come last on a sending context: taken only when nothing else is offered,
    and then used only for instances that arrived lossy (sent as they came)."""
    lossy = dcmread(pydicom_test_file("SC_jpeg_no_color_transform.dcm"))  # JPEG Baseline, kept as sent
    _store_as_they_are(node, [lossy])
    syntax = str(lossy.file_meta.TransferSyntaxUID)
    statuses, received = _get_study(node.port, lossy.StudyInstanceUID, {lossy.SOPClassUID: [[syntax]]})
    assert statuses[-1] == 0x0000, [hex(code) for code in statuses]
    (copy,) = received
    assert copy.file_meta.TransferSyntaxUID == syntax
    assert copy.PixelData == lossy.PixelData
    # Offered with Explicit VR too, Explicit wins: the node prefers what it can always produce.
    proposal = {lossy.SOPClassUID: [[syntax, ExplicitVRLittleEndian]]}
    statuses, received = _get_study(node.port, lossy.StudyInstanceUID, proposal)
    assert statuses[-1] == 0x0000
    (copy,) = received
    assert copy.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (copy.pixel_array == lossy.pixel_array).all()


@pytest.mark.parametrize(("codec", "syntax"), [("jpegls", JPEGLSLossless), ("jpegxl", JPEGXLLossless)])
def test_a_requester_of_the_stored_codecs_syntax_gets_its_bitstreams_undecoded(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch, codec: str, syntax: str
) -> None:
    """Unsigned one-sample images stored with JPEG-LS or JPEG XL go to a requester of that
    syntax as the blob's frames: nothing is decoded or encoded again, and the pixels are the
    received ones. A signed CT (coded minus its minimum) is decoded and encoded instead."""
    node = start_node(make_config(tmp_path, database_url, **{"compression.default_codec": codec}))
    try:
        sources = [
            dcmread(pydicom_test_file(name)) for name in ("emri_small.dcm", "MR2_J2KR.dcm", "CT_small.dcm")
        ]
        _store_as_they_are(node, sources)
        loaded = record_stored_file_loads(monkeypatch)
        for source in sources:
            statuses, received = _get_study(
                node.port, source.StudyInstanceUID, {source.SOPClassUID: [[syntax]]}
            )
            assert statuses[-1] == 0x0000, (source.filename, [hex(code) for code in statuses])
            (copy,) = [ds for ds in received if ds.SOPInstanceUID == source.SOPInstanceUID]
            assert copy.file_meta.TransferSyntaxUID == syntax
            assert (_words(copy) == _words(source)).all(), source.filename
            if syntax == JPEGLSLossless:  # a second decoder: dcmtk's
                assert (_dcmtk_decoded(copy, tmp_path) == source.pixel_array).all(), source.filename
        assert loaded == [sources[2].SOPInstanceUID]
        with node.context.sessions() as session:  # a blob that is not of the data set received
            session.query(Instance).filter_by(sop_instance_uid=sources[0].SOPInstanceUID).update(
                {"dataset_sha256": "0" * 64}
            )
            session.commit()
        statuses, received = _get_study(
            node.port, sources[0].StudyInstanceUID, {sources[0].SOPClassUID: [[syntax]]}
        )
        assert (statuses[-1], received) == (0xA702, [])
    finally:
        node.stop()


def _dcmtk_decoded(ds: Dataset, tmp_path: Path) -> np.ndarray:
    encoded, decoded = tmp_path / "jpeg-ls.dcm", tmp_path / "decoded.dcm"
    ds.save_as(encoded, enforce_file_format=True)
    result = subprocess.run(["dcmdjpls", str(encoded), str(decoded)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return dcmread(decoded).pixel_array

"""The HTTP service's pure parts: multipart/related splitting, Accept negotiation, QIDO-RS
parameters into a C-FIND identifier, password and token checks, rendering windows."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
)

from scp_node.config import HttpConfig, HttpUser
from scp_node.web.auth import Authenticator, hash_password, new_token, password_matches
from scp_node.web.errors import HttpProblem
from scp_node.web.frames import frame_numbers, frame_syntaxes
from scp_node.web.multipart import RelatedWriter, split_related
from scp_node.web.qido import parse_search
from scp_node.web.rendered import render, rendered_media_type, viewport
from scp_node.web.wado import requested_syntaxes, syntax_choices

RELATED = 'multipart/related; type="application/dicom"; boundary="b0"'


def _problem(status: int, call, *args) -> str:
    with pytest.raises(HttpProblem) as raised:
        call(*args)
    assert raised.value.status == status
    return raised.value.reason


# -- multipart ---------------------------------------------------------------------------------


def test_split_related_reads_what_the_writer_writes() -> None:
    writer = RelatedWriter.new("application/dicom")
    bodies = [(b"first\r\n--not-the-boundary", "application/dicom"), (b"", "application/dicom")]
    body = b"preamble\r\n" + b"".join(writer.encode(bodies))
    parts = split_related(body, writer.content_type)
    assert [(part.content_type, part.body) for part in parts] == [(t, b) for b, t in bodies]


def test_a_part_without_headers_takes_the_message_type() -> None:
    (part,) = split_related(b"--b0\r\n\r\nDATA\r\n--b0--", RELATED)
    assert (part.content_type, part.body) == ("", b"DATA")


@pytest.mark.parametrize(
    ("body", "content_type", "status", "reason"),
    [
        (b"--b0\r\n\r\nDATA\r\n", RELATED, 400, "no closing delimiter"),
        (b"--b0\r\n\r\nDATA", RELATED, 400, "no closing delimiter"),
        (b"DATA", RELATED, 400, "no boundary delimiter"),
        (b"--b0--", RELATED, 400, "no parts"),
        (b"--b0\r\nContent-Type application/dicom\r\n\r\nx\r\n--b0--", RELATED, 400, "bad header line"),
        (b"--b0\r\nContent-Type: application/dicom\r\nx\r\n--b0--", RELATED, 400, "no header block"),
        (b"--b0x\r\n\r\nx\r\n--b0--", RELATED, 400, "not followed by CRLF"),
        (b"", "multipart/related", 400, "boundary"),
        (b"", "application/dicom", 415, "expected multipart/related"),
    ],
)
def test_malformed_multipart_is_refused(body: bytes, content_type: str, status: int, reason: str) -> None:
    assert reason in _problem(status, split_related, body, content_type)


# -- WADO-RS negotiation ---------------------------------------------------------------------


def test_accept_entries_rank_by_quality_and_allow_wildcards() -> None:
    accept = (
        'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80; q=0.5, '
        'multipart/related; type="application/*"; transfer-syntax=*, image/png'
    )
    assert requested_syntaxes(accept, "application/dicom") == ["*", "1.2.840.10008.1.2.4.80"]
    assert requested_syntaxes(None, "application/dicom") == [None]
    assert requested_syntaxes("*/*", "application/octet-stream") == [None]
    _problem(406, requested_syntaxes, "image/png", "application/dicom")
    _problem(
        400, requested_syntaxes, 'multipart/related; type="application/dicom"; q=high', "application/dicom"
    )


def test_syntax_choices_keep_the_received_uncompressed_syntax_by_default() -> None:
    assert syntax_choices([None], ImplicitVRLittleEndian) == [ImplicitVRLittleEndian, ExplicitVRLittleEndian]
    assert syntax_choices([None], JPEGLSLossless) == [ExplicitVRLittleEndian]
    assert syntax_choices(["*"], JPEGLSLossless) == [JPEGLSLossless, ExplicitVRLittleEndian]
    assert syntax_choices([str(JPEGLSLossless), None], ExplicitVRLittleEndian) == [
        JPEGLSLossless,
        ExplicitVRLittleEndian,
    ]


def test_frame_syntaxes_follow_the_media_types() -> None:
    assert frame_syntaxes(None) == [ExplicitVRLittleEndian]
    assert frame_syntaxes('multipart/related; type="application/octet-stream"') == [ExplicitVRLittleEndian]
    assert frame_syntaxes('multipart/related; type="image/jls"') == [JPEGLSLossless]
    jp2_then_raw = 'multipart/related; type="image/jp2"; transfer-syntax=1.2.840.10008.1.2.4.90, ' + (
        'multipart/related; type="application/octet-stream"; q=0.1'
    )
    assert frame_syntaxes(jp2_then_raw) == [JPEG2000Lossless, ExplicitVRLittleEndian]
    assert frame_syntaxes("*/*")[0] == ExplicitVRLittleEndian
    _problem(
        406, frame_syntaxes, 'multipart/related; type="image/jls"; transfer-syntax=1.2.840.10008.1.2.4.90'
    )
    _problem(406, frame_syntaxes, 'multipart/related; type="video/mp4"')


def test_frame_lists() -> None:
    assert frame_numbers("1,3, 5") == [1, 3, 5]
    for bad in ("0", "1,,2", "a", "-1"):
        _problem(400, frame_numbers, bad)


# -- QIDO-RS -----------------------------------------------------------------------------------


def test_search_parameters_become_a_c_find_identifier() -> None:
    search = parse_search(
        "SERIES",
        [
            ("Modality", "CT"),
            ("00100010", "Doe*"),
            ("includefield", "StudyDescription,00081030"),
            ("limit", "5"),
            ("offset", "10"),
            ("fuzzymatching", "true"),
        ],
        {"StudyInstanceUID": "1.2.3"},
    )
    ds = search.identifier
    assert ds.QueryRetrieveLevel == "SERIES" and ds.Modality == "CT" and ds.PatientName == "Doe*"
    assert ds.StudyInstanceUID == "1.2.3" and "StudyDescription" in ds and "SeriesInstanceUID" in ds
    assert (search.limit, search.offset) == (5, 10)
    assert any("fuzzymatching" in warning for warning in search.warnings)


def test_uid_lists_take_commas_and_unsupported_keys_are_warned_about() -> None:
    search = parse_search("STUDY", [("StudyInstanceUID", "1.2,1.3"), ("InstitutionName", "X")], {})
    assert list(search.identifier.StudyInstanceUID) == ["1.2", "1.3"]
    assert any("InstitutionName" in warning for warning in search.warnings)


def test_counts_of_upper_levels_come_with_lower_level_searches() -> None:
    """A series search not scoped to a study returns the study's attributes, counts included
    (PS3.18 Table 10.6.3-4), as includefield can ask for them."""
    search = parse_search("SERIES", [("includefield", "NumberOfStudyRelatedSeries")], {})
    assert "NumberOfStudyRelatedSeries" in search.identifier
    assert "NumberOfStudyRelatedSeries" in parse_search("SERIES", [("includefield", "all")], {}).identifier
    assert "NumberOfStudyRelatedInstances" in parse_search("SERIES", [], {}).identifier
    assert not any("not returned" in warning for warning in search.warnings)


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ([("limit", "-1")], "limit"),
        ([("offset", "x")], "offset"),
        ([("NoSuchKeyword", "1")], "unknown attribute"),
        ([("99990010", "1")], "unknown attribute"),
        ([("ReferencedStudySequence", "1")], "cannot match"),
        ([("fuzzymatching", "yes")], "fuzzymatching"),
    ],
)
def test_bad_search_parameters_are_a_400(params: list[tuple[str, str]], reason: str) -> None:
    assert reason in _problem(400, parse_search, "STUDY", params, {})


# -- access ------------------------------------------------------------------------------------


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_passwords_are_salted_scrypt_and_tokens_sha256() -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second and first.startswith("scrypt$")
    assert password_matches("pw", first) and not password_matches("PW", first)
    assert not password_matches("pw", "scrypt$broken")
    token, digest = new_token()
    config = HttpConfig(
        anonymous_permissions=["find"],
        users=[
            HttpUser(name="ann", password_hash=first, permissions=["get"]),
            HttpUser(name="bot", token_sha256=digest, permissions=["admin"]),
        ],
    )
    auth = Authenticator(config)
    assert auth.identify(None, "10.0.0.1").permissions == {"find"}
    assert auth.identify(_basic("ann", "pw"), "10.0.0.1").name == "ann"
    assert auth.identify(_basic("ann", "pw"), "10.0.0.1").name == "ann"  # remembered
    assert auth.identify(f"Bearer {token}", "10.0.0.1").permissions == {"admin"}
    for header in (_basic("ann", "nope"), _basic("who", "pw"), "Bearer nope", "Digest x", "Basic !!"):
        _problem(401, auth.identify, header, "10.0.0.1")
    assert "lacks the store permission" in _problem(
        403, auth.identify(_basic("ann", "pw"), "h").require, "store"
    )
    assert "authentication required" in _problem(401, auth.identify(None, "h").require, "get")


def test_a_user_needs_a_credential() -> None:
    with pytest.raises(ValueError, match="password_hash or token_sha256"):
        HttpUser(name="nobody")


# -- rendered ----------------------------------------------------------------------------------


def _image(pixels: np.ndarray, **attributes: object) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    ds.PixelData = pixels.astype("<u2").tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    from pydicom.dataset import FileMetaDataset

    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_rendering_windows_and_fits() -> None:
    pixels = np.arange(64, dtype=np.uint16).reshape(8, 8) * 100
    plain = np.asarray(Image.open(io.BytesIO(render(_image(pixels), 1, "image/png"))))
    assert plain.min() == 0 and plain.max() == 255  # min-max without a window
    windowed = _image(pixels, WindowCenter=1000, WindowWidth=200)
    shown = np.asarray(Image.open(io.BytesIO(render(windowed, 1, "image/png"))))
    assert shown[0, 0] == 0 and shown[-1, -1] == 255 and 0 < shown[1, 2] < 255
    inverted = np.asarray(
        Image.open(
            io.BytesIO(render(_image(pixels, PhotometricInterpretation="MONOCHROME1"), 1, "image/png"))
        )
    )
    assert inverted[0, 0] == 255
    fitted = Image.open(io.BytesIO(render(_image(pixels), 1, "image/jpeg", (4, 2))))
    assert fitted.format == "JPEG" and fitted.size == (2, 2)
    _problem(404, render, _image(pixels), 2, "image/png")


def test_rendered_media_types_and_viewport() -> None:
    assert rendered_media_type(None) == "image/jpeg"
    assert rendered_media_type("image/png, image/jpeg") == "image/png"
    assert rendered_media_type("*/*") == "image/jpeg"
    _problem(406, rendered_media_type, "image/gif")
    assert viewport("64,48") == (64, 48) and viewport(None) is None
    _problem(400, viewport, "64")

"""Codecs and the blob format on real images of every bit depth, odd sizes, colour, frames."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

from scp_node.imaging.blob import (
    BlobError,
    decode_instance,
    encapsulated_file,
    encode_instance,
    extract_samples,
)
from scp_node.imaging.codecs import ImageDescription, SiteCodecs, create_codec, lossless_codecs
from scp_node.imaging.codecs.base import CodecError
from scp_node.imaging.dicom_layout import PixelFormat, dataset_offset
from scp_node.imaging.encapsulation import JPEGXLLossless, decompress
from scp_node.imaging.pixels import samples_from_words, words_from_samples
from tests.support import pydicom_data_dir, pydicom_test_file
from workers.jobs import encode_verified
from workers.policy import CodecChoice


def _real_frames(bit_depth: int) -> tuple[np.ndarray, ImageDescription]:
    """A real CT slice brought to `bit_depth` bits (10 and 14 bit data keep real structure)."""
    ct = dcmread(pydicom_data_dir() / "693_UNCR.dcm").pixel_array.astype(np.int64)
    ct = ct - ct.min()
    shift = max(0, int(ct.max()).bit_length() - bit_depth)
    values = (ct >> shift)[:, :-1]  # odd width
    desc = ImageDescription(1, values.shape[0], values.shape[1], 1, bit_depth)
    return values.reshape(desc.shape).astype(desc.dtype), desc


@pytest.mark.parametrize("codec_name", lossless_codecs())
@pytest.mark.parametrize("bit_depth", [8, 10, 12, 14, 16])
def test_codec_lossless_every_bit_depth(codec_name: str, bit_depth: int) -> None:
    samples, desc = _real_frames(bit_depth)
    codec = create_codec(codec_name)
    assert np.array_equal(codec.decode(codec.encode(samples, desc), desc), samples)


@pytest.mark.parametrize("codec_name", lossless_codecs())
@pytest.mark.parametrize("name", ["SC_rgb.dcm", "emri_small.dcm", "SC_rgb_small_odd.dcm"])
def test_codec_lossless_colour_and_frames(codec_name: str, name: str) -> None:
    samples, desc = extract_samples(pydicom_test_file(name).read_bytes())
    codec = create_codec(codec_name)
    try:
        payload = codec.encode(samples, desc)
    except CodecError:
        # CharLS refuses some tiny colour images; the compress job must then fall back.
        assert (codec_name, name) == ("jpegls", "SC_rgb_small_odd.dcm")
        encoded, fell_back = encode_verified(
            SiteCodecs(), pydicom_test_file(name).read_bytes(), CodecChoice("jpegls"), "test"
        )
        assert fell_back and encoded.codec == "jpegxl"
        return
    assert np.array_equal(codec.decode(payload, desc), samples)


NATIVE = ["CT_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "SC_rgb.dcm", "emri_small.dcm"]


@pytest.mark.parametrize("name", NATIVE)
def test_native_file_rebuilds_byte_identical(name: str) -> None:
    data = pydicom_test_file(name).read_bytes()
    encoded = encode_instance(data, create_codec("jpegxl"))
    assert encoded.mode == "coded"
    assert encoded.pixel_bytes_out < encoded.pixel_bytes_in
    assert decode_instance(encoded.blob).data == data


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEG-LL.dcm"])
def test_compressed_input_keeps_elements_and_pixels(name: str) -> None:
    path = pydicom_test_file(name)
    data = path.read_bytes()
    rebuilt = decode_instance(encode_instance(data, create_codec("jpegls")).blob)
    original = dcmread(path)
    copy = dcmread(io.BytesIO(rebuilt.data))
    assert copy.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    for element in original:
        if element.tag != 0x7FE00010:
            assert copy[element.tag].value == element.value
    assert np.array_equal(copy.pixel_array, original.pixel_array)


@pytest.mark.parametrize("name", ["JPEG-lossy.dcm", "rtplan.dcm"])
def test_lossy_and_non_image_stored_verbatim(name: str) -> None:
    data = pydicom_test_file(name).read_bytes()
    encoded = encode_instance(data, create_codec("jpegxl"))
    assert encoded.mode == "verbatim"
    assert decode_instance(encoded.blob).data == data


def test_damaged_blob_is_detected() -> None:
    blob = bytearray(encode_instance(pydicom_test_file("CT_small.dcm").read_bytes(), None).blob)
    blob[len(blob) // 2] ^= 0x01
    with pytest.raises(BlobError):
        decode_instance(bytes(blob))


def test_signed_words_with_garbage_high_bits_are_kept() -> None:
    """12-bit signed data whose unused high bits are not a sign extension: code whole words."""
    fmt = PixelFormat(
        rows=5,
        columns=7,
        frames=1,
        samples=1,
        bits_allocated=16,
        bits_stored=12,
        signed=True,
        planar=False,
        photometric="MONOCHROME2",
    )
    rng = np.random.default_rng(0)
    words = rng.integers(0, 1 << 16, size=(1, 5, 7, 1), dtype=np.uint16)
    samples, mapping, desc = samples_from_words(words, fmt)
    assert mapping.whole_words
    assert np.array_equal(words_from_samples(samples, mapping, fmt), words)
    clean = (rng.integers(-2048, 2048, size=(1, 5, 7, 1)) & 0xFFFF).astype(np.uint16)
    samples, mapping, desc = samples_from_words(clean, fmt)
    assert not mapping.whole_words and desc.bit_depth <= 12
    assert np.array_equal(words_from_samples(samples, mapping, fmt), clean)


def test_decode_on_other_thread_count_is_identical() -> None:
    """Standard codecs are single-threaded here; a decode on another thread gives the same bytes."""
    import concurrent.futures

    data = pydicom_data_dir().joinpath("MR2_UNCR.dcm").read_bytes()
    blob = encode_instance(data, create_codec("jpegxl")).blob
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        digests = set(pool.map(lambda _: hashlib.sha256(decode_instance(blob).data).hexdigest(), range(4)))
    assert digests == {hashlib.sha256(data).hexdigest()}
    assert dataset_offset(data) > 0


@pytest.mark.parametrize("codec_name", lossless_codecs())
def test_multi_frame_with_a_dark_frame(codec_name: str) -> None:
    """A 12-bit series whose second frame stays below 256 (JPEG-LS used to code it wrong)."""
    samples, desc = _real_frames(12)
    frames = np.concatenate([samples, samples >> 4])
    desc = ImageDescription(2, desc.rows, desc.columns, 1, 12)
    codec = create_codec(codec_name)
    assert np.array_equal(codec.decode(codec.encode(frames, desc), desc), frames)


def _decoded_pixels(data: bytes) -> np.ndarray:
    """Pixels as a DICOM reader gets them from a Part-10 file (JPEG XL through the node's
    decoder: pydicom does not know that syntax yet)."""
    ds = dcmread(io.BytesIO(data))
    decompress(ds)
    return ds.pixel_array


@pytest.mark.parametrize(("codec_name", "syntax"), [("jpegls", JPEGLSLossless), ("jpegxl", JPEGXLLossless)])
@pytest.mark.parametrize("name", ["emri_small.dcm", "OBXXXX1A.dcm", "MR2_J2KR.dcm"])
def test_blob_bitstreams_go_out_in_that_syntax(codec_name: str, syntax: str, name: str) -> None:
    """Unsigned one-sample images (12-bit multi-frame, 8-bit palette, compressed input): the blob's own
    frame bitstreams are a file in the codec's DICOM syntax with the received pixels."""
    original = pydicom_test_file(name).read_bytes()
    encoded = encode_instance(original, create_codec(codec_name))
    passed = encapsulated_file(encoded.blob, syntax)
    assert passed is not None
    data, digest = passed
    assert digest == hashlib.sha256(encoded.rebuilt.dataset_bytes).hexdigest()
    ds = dcmread(io.BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == syntax
    assert ds.SOPInstanceUID == dcmread(io.BytesIO(original)).SOPInstanceUID
    assert np.array_equal(_decoded_pixels(data), dcmread(io.BytesIO(original)).pixel_array)
    assert encapsulated_file(encoded.blob, JPEG2000Lossless) is None  # not the syntax it codes


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("CT_small.dcm", "signed: coded as values minus their minimum, not as the words"),
        ("SC_rgb.dcm", "three samples"),
        ("MR_small_implicit.dcm", "elements stored in Implicit VR"),
    ],
)
def test_blob_bitstreams_that_are_not_the_pixel_words_are_decoded_instead(name: str, why: str) -> None:
    encoded = encode_instance(pydicom_test_file(name).read_bytes(), create_codec("jpegls"))
    assert encapsulated_file(encoded.blob, JPEGLSLossless) is None, why


def test_a_jpeg_ls_frame_coded_with_8_bit_samples_in_a_16_bit_image_is_decoded_instead() -> None:
    """CharLS codes a 16-bit frame whose values fit in 8 bits with 8-bit samples; a reader of
    16-bit Pixel Data would get bytes, not words."""
    ds = dcmread(pydicom_test_file("emri_small.dcm"))
    words = ds.pixel_array.copy()
    words[3] = np.minimum(words[3], 200)  # one dark frame
    ds.PixelData = words.astype("<u2").tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    encoded = encode_instance(buffer.getvalue(), create_codec("jpegls"))
    assert encapsulated_file(encoded.blob, JPEGLSLossless) is None
    assert encapsulated_file(encode_instance(buffer.getvalue(), create_codec("jpegxl")).blob, JPEGXLLossless)

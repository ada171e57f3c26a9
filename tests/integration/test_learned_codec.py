"""The learned codec: bit-exact on real images of every bit depth and odd sizes, colour and
frames; decode on another thread count than the encode and on the CPU of a GPU encode; series
mode against a reference slice, refused without it; a tile coded whole by the standard codec
where that is smaller; damage, foreign weights and version 1 payloads refused; the node keeps
it only where it beats the standard codecs, and storescu -> learned -> getscu returns every
instance byte for byte."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom import dcmread
from pydicom.uid import generate_uid

from scp_node.imaging.blob import decode_instance, encode_instance, extract_samples
from scp_node.imaging.codecs import ImageDescription, SiteCodecs, create_codec
from scp_node.imaging.codecs.learned import codec as learned_codec
from scp_node.imaging.codecs.learned import zoo
from scp_node.imaging.codecs.learned.codec import LearnedCodec, LearnedDecodeError, LearnedReferenceError
from scp_node.imaging.codecs.learned.model import ModelConfig, PyramidModel
from scp_node.imaging.codecs.learned.zoo import save_weights
from scp_node.imaging.dicom_layout import dataset_offset
from scp_node.index.models import Instance
from tests.support import (
    getscu,
    make_config,
    mammogram_files,
    pydicom_data_dir,
    pydicom_test_file,
    shared_corpus,
    start_node,
    storescu,
)
from workers.jobs import encode_smallest
from workers.policy import CodecChoice

TILE = 64  # small tiles: every test image spans several, with partial edge tiles
TINY = ModelConfig(channels=4, blocks=1, components=2)


def _tiny_weights(path: Path, seed: int, config: ModelConfig = TINY) -> Path:
    """A tiny model whose output layers are random instead of zero, so that its predictions
    depend on every input (the reference slice included): losslessness and determinism must not
    depend on training."""
    torch.manual_seed(seed)
    model = PyramidModel(config)
    for stage in model.stages:
        for head in stage.heads:
            torch.nn.init.normal_(head.project.pointwise.weight, std=0.3)
            if head.skip is not None:
                torch.nn.init.normal_(head.skip.weight, std=0.3)
    save_weights(model, path, {})
    return path


@pytest.fixture(autouse=True)
def learned_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles start from level 1 at least, so that the learned stages code them: the tiny
    untrained model would lose every tile to the standard codec coding it whole."""
    monkeypatch.setattr(learned_codec, "LOWEST_TOP", 1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_weights(tmp_path_factory.mktemp("weights") / "tiny.pt", 0)


def _ct(
    bit_depth: int, rows: int = 131, columns: int = 97, top: int = 200
) -> tuple[np.ndarray, ImageDescription]:
    """A crop of a real CT slice at `bit_depth` bits, odd in both sides."""
    ct = dcmread(pydicom_data_dir() / "693_UNCR.dcm").pixel_array.astype(np.int64)
    ct = ct - ct.min()
    shift = int(ct.max()).bit_length() - bit_depth
    values = ct >> shift if shift >= 0 else ct << -shift
    values = values[top : top + rows, 150 : 150 + columns]
    desc = ImageDescription(1, rows, columns, 1, bit_depth)
    return values.reshape(desc.shape).astype(desc.dtype), desc


@pytest.mark.parametrize("bit_depth", [8, 12, 16])
def test_round_trip_is_exact_at_every_bit_depth(weights: Path, bit_depth: int) -> None:
    samples, desc = _ct(bit_depth)
    codec = LearnedCodec(weights=str(weights), tile=TILE)
    assert np.array_equal(codec.decode(codec.encode(samples, desc), desc), samples)


@pytest.mark.parametrize("bit_depth", [8, 16])
def test_a_model_with_skips_round_trips_on_another_thread_count(tmp_path: Path, bit_depth: int) -> None:
    weights = _tiny_weights(tmp_path / "skips.pt", 1, dataclasses.replace(TINY, residual_skip=True))
    samples, desc = _ct(bit_depth, 150, 120)
    payload = LearnedCodec(weights=str(weights), tile=TILE, threads=1).encode(samples, desc)
    decoder = LearnedCodec(weights=str(weights), tile=TILE, threads=3)
    assert np.array_equal(decoder.decode(payload, desc), samples)


def test_round_trip_is_exact_on_a_real_mammogram(weights: Path) -> None:
    """16 bits stored (MG), a crop across the breast edge, two tile rows and columns, odd sides."""
    samples, desc = extract_samples(mammogram_files()[0].read_bytes())
    crop = np.ascontiguousarray(samples[:, 1500:1621, :99])
    crop_desc = ImageDescription(1, 121, 99, 1, desc.bit_depth)
    codec = LearnedCodec(weights=str(weights), tile=TILE)
    assert np.array_equal(codec.decode(codec.encode(crop, crop_desc), crop_desc), crop)


def test_extreme_values_escape_and_come_back(weights: Path) -> None:
    """Salt and pepper at 0 and 65535 next to smooth content: far outside every prediction."""
    samples, desc = _ct(16, 40, 33)
    samples[0, ::7, ::5, 0] = 65535
    samples[0, 3::11, 2::3, 0] = 0
    codec = LearnedCodec(weights=str(weights), tile=TILE)
    assert np.array_equal(codec.decode(codec.encode(samples, desc), desc), samples)


@pytest.mark.parametrize("name", ["CT_small.dcm", "SC_rgb.dcm", "emri_small.dcm", "SC_rgb_small_odd.dcm"])
def test_instances_rebuild_byte_identical(weights: Path, name: str) -> None:
    """Signed 16-bit CT, 8-bit RGB (three planes), multi-frame MR, a 3 x 5 colour image."""
    data = pydicom_test_file(name).read_bytes()
    encoded = encode_instance(data, LearnedCodec(weights=str(weights), tile=TILE))
    assert encoded.codec == "learned" and encoded.mode == "coded"
    assert decode_instance(encoded.blob).data == data


def test_decode_on_another_thread_count_than_the_encode(weights: Path) -> None:
    """Torch's threads and the codec's tile threads alike: the payload and the pixels do not
    depend on either."""
    samples, desc = _ct(12, 150, 120)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        payload = LearnedCodec(weights=str(weights), tile=TILE, threads=1).encode(samples, desc)
        torch.set_num_threads(2)
        codec = LearnedCodec(weights=str(weights), tile=TILE, threads=3)
        assert np.array_equal(codec.decode(payload, desc), samples)
        assert codec.encode(samples, desc) == payload
    finally:
        torch.set_num_threads(threads)


def _tops(codec: LearnedCodec, payload: bytes) -> list[int]:
    """The level each tile stream of `payload` starts from."""
    return [stream[0] for stream in codec._parse(payload)[0]]


def test_a_tile_is_coded_whole_where_its_learned_stages_lose(
    weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crop of a real CT slice with a flat band pasted in. With whole tiles allowed, tiles
    start at level 0 where that is smaller, the payload shrinks, and it decodes bit-exact
    whatever the encoder's option is at decode time."""
    samples, desc = _ct(12, 150, 120)
    samples[0, :, :60, 0] = 1000
    codec = LearnedCodec(weights=str(weights), tile=TILE)
    staged = codec.encode(samples, desc)
    monkeypatch.setattr(learned_codec, "LOWEST_TOP", 0)
    payload = codec.encode(samples, desc)
    assert 0 not in _tops(codec, staged)
    assert 0 in _tops(codec, payload)
    assert len(payload) < len(staged)
    assert np.array_equal(codec.decode(payload, desc), samples)
    monkeypatch.setattr(learned_codec, "LOWEST_TOP", 1)  # decoding does not depend on it
    assert np.array_equal(codec.decode(payload, desc), samples)


def _slices() -> tuple[np.ndarray, np.ndarray, ImageDescription]:
    """Two neighbouring 12-bit slices of a real CT series, cropped to odd sides."""
    folder = shared_corpus() / "series" / "ct-philips-chest"
    ordered = sorted(
        (dcmread(path) for path in folder.iterdir()),
        key=lambda ds: float(
            np.dot(
                ds.ImagePositionPatient,
                np.cross(ds.ImageOrientationPatient[:3], ds.ImageOrientationPatient[3:]),
            )
        ),
    )
    desc = ImageDescription(1, 75, 91, 1, 12)
    crop = lambda ds: ds.pixel_array[200:275, 180:271].astype(np.uint16).reshape(desc.shape)  # noqa: E731
    return crop(ordered[10]), crop(ordered[11]), desc


def test_series_mode_round_trips_with_its_reference_and_refuses_any_other(
    weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, target, desc = _slices()
    codec = LearnedCodec(weights=str(weights), tile=TILE)
    monkeypatch.setattr(learned_codec, "_smaller", lambda alone, with_reference: with_reference)
    payload = codec.encode(target, desc, reference=reference)
    assert np.array_equal(codec.decode(payload, desc, reference=reference[0]), target)
    with pytest.raises(LearnedDecodeError, match="reference"):
        codec.decode(payload, desc)
    changed = reference.copy()
    changed[0, 5, 5, 0] ^= 1
    with pytest.raises(LearnedDecodeError, match="reference"):
        codec.decode(payload, desc, reference=changed)
    with pytest.raises(LearnedReferenceError):
        codec.encode(target, desc, reference=reference[:, :-1])


def test_series_mode_keeps_the_reference_only_where_it_pays(weights: Path) -> None:
    """Each tile takes the smaller of its streams with and without the reference."""
    reference, target, desc = _slices()
    codec = LearnedCodec(weights=str(weights), tile=TILE)
    alone = codec.encode(target, desc)
    with_reference = codec.encode(target, desc, reference=reference)
    assert len(with_reference) <= len(alone) + 32  # + the reference digest in the header
    assert np.array_equal(codec.decode(with_reference, desc, reference=reference), target)


def test_frames_are_coded_against_the_previous_frame(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference, target, desc = _slices()
    frames = np.concatenate([reference, target])
    frames_desc = ImageDescription(2, desc.rows, desc.columns, 1, desc.bit_depth)
    codec = LearnedCodec(weights=str(weights), tile=TILE)
    monkeypatch.setattr(learned_codec, "_smaller", lambda alone, with_reference: with_reference)
    payload = codec.encode(frames, frames_desc)  # frame 1's tiles all use frame 0
    assert np.array_equal(codec.decode(payload, frames_desc), frames)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_gpu_encode_decodes_on_the_cpu(weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples, desc = _ct(16, 300, 257)
    gpu = LearnedCodec(weights=str(weights), tile=TILE)
    assert gpu.device.type == "cuda"
    payload = gpu.encode(samples, desc)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = LearnedCodec(weights=str(weights), tile=TILE)
    assert cpu.device.type == "cpu"
    assert np.array_equal(cpu.decode(payload, desc), samples)


def test_retrievals_share_one_codec_and_load_weights_once(
    weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = pydicom_test_file("CT_small.dcm").read_bytes()
    blob = encode_instance(data, LearnedCodec(weights=str(weights), tile=TILE)).blob
    loads = []
    original = zoo.load_model
    monkeypatch.setattr(zoo, "load_model", lambda *a: loads.append(a) or original(*a))
    codecs = SiteCodecs()
    assert all(decode_instance(blob, codecs).data == data for _ in range(3))  # as retrieval calls it
    assert len(loads) == 1


def test_damage_and_foreign_weights_fail_loudly(weights: Path, tmp_path: Path) -> None:
    samples, desc = _ct(12)
    codec = LearnedCodec(weights=str(weights), tile=TILE)
    payload = bytearray(codec.encode(samples, desc))
    damaged = bytes(payload[:-200]) + bytes(b ^ 0x5A for b in payload[-200:-100]) + bytes(payload[-100:])
    with pytest.raises(LearnedDecodeError):
        codec.decode(damaged, desc)
    torch.manual_seed(1)
    other = tmp_path / "other.pt"
    _tiny_weights(other, 1)
    with pytest.raises(LearnedDecodeError, match="weights"):
        LearnedCodec(weights=str(other), tile=TILE).decode(bytes(payload), desc)
    with pytest.raises(LearnedDecodeError, match="version 1"):
        codec.decode(b"SEEDB1" + bytes(payload[6:]), desc)
    with pytest.raises(LearnedDecodeError):
        codec.decode(bytes(payload[:-7]), desc)


def test_blobs_of_formerly_shipped_weights_still_decode(
    weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New shipped weights must not strand blobs that the old ones coded."""
    samples, desc = _ct(12)
    monkeypatch.setattr(zoo, "SHIPPED_WEIGHTS", weights)
    payload = LearnedCodec(tile=TILE).encode(samples, desc)
    monkeypatch.setattr(zoo, "SHIPPED_WEIGHTS", _tiny_weights(tmp_path / "new.pt", 7))
    monkeypatch.setattr(zoo, "RETIRED_WEIGHTS", tmp_path / "retired")
    with pytest.raises(LearnedDecodeError, match="weights"):
        LearnedCodec(tile=TILE).decode(payload, desc)
    shipped = tmp_path / "shipped.pt"
    shutil.copy(weights, shipped)
    monkeypatch.setattr(zoo, "SHIPPED_WEIGHTS", shipped)
    zoo.export_checkpoint(_checkpoint_of(tmp_path / "new.pt", tmp_path / "checkpoint.pt"), shipped)
    assert zoo.weights_digest(shipped) != zoo.weights_digest(weights)  # replaced ...
    assert np.array_equal(LearnedCodec(tile=TILE).decode(payload, desc), samples)  # ... old kept
    with pytest.raises(LearnedDecodeError, match="weights"):  # a site's own weights: only those
        LearnedCodec(weights=str(tmp_path / "new.pt"), tile=TILE).decode(payload, desc)


def _checkpoint_of(weights: Path, out: Path) -> Path:
    """A training checkpoint holding these weights, as the training tool writes one."""
    contents = torch.load(weights, weights_only=True)
    state = {
        "model_config": contents["model_config"],
        "model": contents["model"],
        "step": 1,
        "training_config": {},
    }
    torch.save(state, out)
    return out


def test_node_keeps_the_smallest_of_learned_and_the_standard_codecs(weights: Path) -> None:
    data = pydicom_data_dir().joinpath("MR2_UNCR.dcm").read_bytes()
    choice = CodecChoice("learned", {"weights": str(weights), "tile": 256})  # 1024 x 1024: 16 tiles
    kept = encode_smallest(SiteCodecs(), data, choice, "test")
    sizes = {
        name: len(encode_instance(data, create_codec(name, **options)).blob)
        for name, options in [("learned", choice.options), ("jpegxl", {}), ("jpegls", {})]
    }
    assert kept.codec == min(sizes, key=sizes.get)
    assert len(kept.blob) == min(sizes.values())
    forced = encode_smallest(
        SiteCodecs(), data, CodecChoice("learned", {**choice.options, "compete": False}), "test"
    )
    assert forced.codec == "learned"


def _at_bit_depth(source: Path, bit_depth: int, out: Path, study_uid: str) -> Path:
    """The real CT with its pixels brought to `bit_depth` stored bits, as a new instance."""
    dataset = dcmread(source)
    values = dataset.pixel_array.astype(np.int64)
    values = values - values.min()
    values = values >> max(0, int(values.max()).bit_length() - bit_depth)
    dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = bit_depth, bit_depth - 1, 0
    dataset.BitsAllocated = 8 if bit_depth == 8 else 16
    dataset.PixelData = values.astype(np.uint8 if bit_depth == 8 else np.uint16).tobytes()
    dataset.RescaleIntercept, dataset.RescaleSlope = 0, 1
    dataset.StudyInstanceUID, dataset.SeriesInstanceUID = study_uid, generate_uid()
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    path = out / f"ct{bit_depth}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.dcmtk
def test_storescu_learned_getscu_returns_every_bit_depth_byte_identical(
    weights: Path, tmp_path: Path, dcmtk: None
) -> None:
    study_uid = generate_uid()
    sources = tmp_path / "sources"
    sources.mkdir()
    files = [
        _at_bit_depth(pydicom_test_file("CT_small.dcm"), b, sources, study_uid) for b in (8, 10, 12, 14, 16)
    ]
    files.append(pydicom_test_file("CT_small.dcm"))  # signed 16-bit, as sent by the scanner
    options = {"weights": str(weights), "tile": TILE, "compete": False}
    config = make_config(
        tmp_path, "", **{"compression.default_codec": "learned", "compression.default_options": options}
    )
    node = start_node(config)
    try:
        result = storescu(node.port, files)
        assert result.returncode == 0, result.stdout
        node.wait_for_jobs()
        with node.context.sessions() as session:
            stored = {
                row.sop_instance_uid: (row.codec, row.dataset_sha256) for row in session.query(Instance)
            }
        assert {codec for codec, _ in stored.values()} == {"learned"} and len(stored) == len(files)
        received: dict[str, bytes] = {}
        for study in {study_uid, str(dcmread(files[-1]).StudyInstanceUID)}:
            out = tmp_path / "received" / study
            fetched = getscu(node.port, out, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study})
            assert fetched.returncode == 0, fetched.stdout + fetched.stderr
            for path in out.iterdir():
                received[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path.read_bytes()
    finally:
        node.stop()
    # storescu drops trailing padding (FFFC,FFFC): the node returns the data set it received.
    for path in files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        back = received[uid]
        assert hashlib.sha256(back[dataset_offset(back) :]).hexdigest() == stored[uid][1], path.name
        assert np.array_equal(dcmread(io.BytesIO(back)).pixel_array, dcmread(path).pixel_array), path.name

"""Series mode through the node: storescu of a real MR series -> learned codec coding slices
against their stored neighbours -> getscu and C-MOVE return every instance byte for byte, in
any order; chains stay within series_depth; replacing a reference slice re-codes its
dependants first, and everything stays retrievable (SQLite and PostgreSQL, two workers,
the series sent twice)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom import dcmread

from scp_node.imaging.blob import BlobError, ReferenceSlice, decode_instance, encode_instance
from scp_node.imaging.codecs import create_codec
from scp_node.imaging.codecs.learned import codec as learned_codec
from scp_node.imaging.codecs.learned.model import ModelConfig, PyramidModel
from scp_node.imaging.codecs.learned.zoo import save_weights
from scp_node.imaging.dicom_layout import dataset_offset
from scp_node.index.models import Instance
from tests.support import free_port, getscu, make_config, movescu, shared_corpus, start_node, storescu

SERIES_DEPTH = 2
SLICES = 6


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose predictions depend on the reference slice (random output layers)."""
    torch.manual_seed(1)
    model = PyramidModel(ModelConfig(channels=4, blocks=1, components=2))
    for stage in model.stages:
        for head in stage.heads:
            torch.nn.init.normal_(head.project.pointwise.weight, std=0.3)
    path = tmp_path_factory.mktemp("weights") / "tiny.pt"
    save_weights(model, path, {})
    return path


@pytest.fixture
def reference_always_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tile keeps its stream coded against the reference, so that each slice that gets a
    reference depends on it (a trained model keeps it only where it pays)."""
    monkeypatch.setattr(learned_codec, "_smaller", lambda alone, with_reference: with_reference)


def _series() -> list[Path]:
    """Neighbouring slices of a real 1 mm MR series, in slice order."""
    folder = shared_corpus() / "series" / "mr-siemens-memprage"

    def position(path: Path) -> float:
        ds = dcmread(path, stop_before_pixels=True)
        orientation = np.array(ds.ImageOrientationPatient, float)
        return float(
            np.dot(np.cross(orientation[:3], orientation[3:]), np.array(ds.ImagePositionPatient, float))
        )

    return sorted(folder.iterdir(), key=position)[:SLICES]


def _dataset_digest(data: bytes) -> str:
    return hashlib.sha256(data[dataset_offset(data) :]).hexdigest()


def test_blob_names_the_slice_it_depends_on_and_rebuilds_only_with_it(
    weights: Path, reference_always_kept: None
) -> None:
    first, second = (path.read_bytes() for path in _series()[:2])
    codec = create_codec("learned", weights=str(weights), tile=64)
    reference = ReferenceSlice("1.2.3.4", first)
    encoded = encode_instance(second, codec, reference=reference)
    assert encoded.reference_uid == "1.2.3.4"
    asked: list[str] = []

    def files(uid: str) -> bytes:
        asked.append(uid)
        return first

    assert decode_instance(encoded.blob, reference_files=files).data == second
    assert asked == ["1.2.3.4"]
    with pytest.raises(BlobError, match=r"1\.2\.3\.4"):
        decode_instance(encoded.blob)
    with pytest.raises(learned_codec.LearnedDecodeError, match="reference"):
        decode_instance(encoded.blob, reference_files=lambda uid: second)  # another slice's pixels
    alone = encode_instance(
        second, create_codec("learned", weights=str(weights), tile=64, series_depth=0), reference=reference
    )
    assert alone.reference_uid is None
    assert decode_instance(alone.blob).data == second


@pytest.mark.dcmtk
def test_series_stored_against_neighbours_comes_back_byte_identical_after_a_reference_is_replaced(
    weights: Path, reference_always_kept: None, database_url: str, tmp_path: Path, dcmtk: None
) -> None:
    files = _series()
    move_port = free_port()
    options = {"weights": str(weights), "tile": 64, "compete": False, "series_depth": SERIES_DEPTH}
    config = make_config(
        tmp_path,
        database_url,
        **{
            "compression.default_codec": "learned",
            "compression.default_options": options,
            "queue.in_process_workers": 2,
            "access.peers": [
                {"ae_title": "VIEWER", "permissions": ["echo", "store", "find", "get", "move"]},
                {"ae_title": "STORESCP", "host": "127.0.0.1", "port": move_port, "permissions": []},
            ],
        },
    )
    node = start_node(config)
    try:
        for _ in range(2):  # the second send is identical: nothing changes
            result = storescu(node.port, files)
            assert result.returncode == 0, result.stdout
            node.wait_for_jobs()
        rows = _rows(node)
        assert {row["codec"] for row in rows.values()} == {"learned"}
        dependants = {uid: row for uid, row in rows.items() if row["reference_uid"]}
        assert dependants, "no slice was coded against a neighbour"
        for row in dependants.values():
            assert 1 <= row["reference_depth"] <= SERIES_DEPTH
            assert rows[row["reference_uid"]]["reference_depth"] == row["reference_depth"] - 1
        series = str(dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
        expected = {
            str(dcmread(path, stop_before_pixels=True).SOPInstanceUID): path.read_bytes() for path in files
        }
        assert _get_series(node, series, tmp_path / "get1") == {
            uid: _dataset_digest(d) for uid, d in expected.items()
        }

        # Replace a slice others were coded against with different pixels under the same UID.
        reference_uid = next(iter(dependants.values()))["reference_uid"]
        replaced = _with_changed_pixels(expected[reference_uid], tmp_path / "replaced.dcm")
        result = storescu(node.port, [replaced])
        assert result.returncode == 0, result.stdout
        node.wait_for_jobs()
        rows = _rows(node)
        assert all(row["reference_uid"] != reference_uid for row in rows.values())
        expected[reference_uid] = replaced.read_bytes()
        digests = {uid: _dataset_digest(d) for uid, d in expected.items()}
        assert _get_series(node, series, tmp_path / "get2") == digests
        assert _move_series(node, series, move_port, tmp_path / "moved") == digests
    finally:
        node.stop()


def _rows(node) -> dict[str, dict]:
    with node.context.sessions() as session:
        return {
            row.sop_instance_uid: {
                "codec": row.codec,
                "reference_uid": row.reference_uid,
                "reference_depth": row.reference_depth,
            }
            for row in session.query(Instance)
        }


def _with_changed_pixels(data: bytes, out: Path) -> Path:
    ds = dcmread(io.BytesIO(data))
    pixels = ds.pixel_array.copy()
    pixels[40:80, 40:80] = pixels[40:80, 40:80] // 2
    ds.PixelData = pixels.tobytes()
    ds.save_as(out, enforce_file_format=True)
    return out


def _get_series(node, series: str, out: Path) -> dict[str, str]:
    study = _study_of(node, series)
    result = getscu(
        node.port,
        out,
        {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study, "SeriesInstanceUID": series},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return {
        str(dcmread(path, stop_before_pixels=True).SOPInstanceUID): _dataset_digest(path.read_bytes())
        for path in out.iterdir()
    }


def _move_series(node, series: str, move_port: int, out: Path) -> dict[str, str]:
    study = _study_of(node, series)
    keys = {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study, "SeriesInstanceUID": series}
    result = movescu(node.port, move_port, out, keys)
    assert result.returncode == 0, result.stderr
    return {
        str(dcmread(path, stop_before_pixels=True).SOPInstanceUID): _dataset_digest(path.read_bytes())
        for path in out.iterdir()
    }


def _study_of(node, series: str) -> str:
    with node.context.sessions() as session:
        row = session.query(Instance).filter(Instance.series.has(series_instance_uid=series)).first()
        return row.series.study.study_instance_uid

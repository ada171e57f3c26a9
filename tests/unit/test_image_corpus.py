"""The image corpus behind the codec benchmark and the learned codec's training: de-duplication,
noise detection, and a held-out split by patient."""

from __future__ import annotations

from scp_node.research.image_corpus import load_corpus, split_by_patient
from tests.support import pydicom_data_dir, shared_corpus


def test_noise_images_are_flagged_and_real_ones_are_not() -> None:
    corpus = load_corpus([shared_corpus()])
    noise = [image for image in corpus.images if image.is_noise]
    real_ct = [image for image in corpus.images if "ct-covid19-ny-sbu" in str(image.path)]
    assert real_ct and not any(image.is_noise for image in real_ct)
    assert len(noise) >= 40  # mr-multivendor's random test images (61 files, some repeated)
    assert all("mr-multivendor" in str(image.path) for image in noise)


def test_split_holds_out_whole_patients_of_every_modality() -> None:
    corpus = load_corpus([shared_corpus(), pydicom_data_dir()])
    split = split_by_patient(corpus.images)
    train_patients = {image.patient for image in split.train}
    held_patients = {image.patient for image in split.held_out}
    assert not train_patients & held_patients
    assert not any(image.is_noise for image in split.train + split.held_out)
    assert len(split.train) + len(split.held_out) + len(split.noise) == len(corpus.images)
    for modality in ("CT", "MR"):
        assert any(i.modality == modality for i in split.held_out), modality
        assert any(i.modality == modality for i in split.train), modality
    again = split_by_patient(load_corpus([shared_corpus(), pydicom_data_dir()]).images)
    assert [str(i.path) for i in again.held_out] == [str(i.path) for i in split.held_out]  # stable

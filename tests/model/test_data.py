"""Loading labelled folders and the store, the validation split and augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared import dataset
from shared.model.data import (
    AUGMENTATIONS,
    LabelledImages,
    augment,
    augmented_views,
    load_collection_folder,
    load_folder,
    load_store,
    load_store_collections,
    split_validation,
)
from shared.storage import FilesystemStore, layout


def test_a_folder_loads_as_224_pixel_uint8_images_with_labels(dataset_root: Path):
    data = load_folder(dataset_root / "train")
    assert data.pixels.shape == (16, 224, 224, 3) and data.pixels.dtype == np.uint8
    assert data.labels.tolist() == [0] * 8 + [1] * 8
    assert not data.has_diagnoses
    assert len(data.content_hash) == 64


def test_the_store_loader_reads_the_same_images_as_the_folder_loader(dataset_root: Path, tmp_path: Path):
    store = FilesystemStore(tmp_path / "store")
    for path in sorted((dataset_root / "train").glob("*/*")):
        key = layout.dataset_image("ham10000", "train", path.parent.name, path.stem, path.suffix[1:])
        store.put(key, path.read_bytes())
    from_store = load_store(store, "ham10000", "train")
    from_folder = load_folder(dataset_root / "train")
    assert from_store.labels.tolist() == from_folder.labels.tolist()
    assert from_store.content_hash == from_folder.content_hash
    assert set(from_store.collections) == {"ham10000"}


def _images(labels: list[int], groups: list[str], collections: list[str]) -> LabelledImages:
    count = len(labels)
    return LabelledImages(
        pixels=np.zeros((count, 1, 1, 3), np.uint8),
        labels=np.array(labels, np.int8),
        diagnoses=np.full(count, -1, np.int8),
        names=tuple(f"image-{i}" for i in range(count)),
        content_hash="",
        digests=tuple(f"{i:064x}" for i in range(count)),
        collections=tuple(collections),
        groups=tuple(groups),
    )


@pytest.mark.parametrize(
    ("benign", "malignant", "fraction", "expected"), [(80, 20, 0.2, (16, 4)), (50, 50, 0.1, (5, 5))]
)
def test_the_validation_split_is_stratified_disjoint_and_repeatable(benign, malignant, fraction, expected):
    labels = [0] * benign + [1] * malignant
    images = _images(labels, [f"image:{i}" for i in range(len(labels))], ["a"] * len(labels))
    train, validation = split_validation(images, fraction)
    assert (np.sum(validation.labels == 0), np.sum(validation.labels == 1)) == expected
    assert not set(train.names) & set(validation.names) and len(train) + len(validation) == len(labels)
    assert split_validation(images, fraction)[1].names == validation.names


def test_the_validation_split_never_splits_a_patient_and_draws_from_every_collection():
    # 40 patients of 3 images each in one collection, 50 single images in another.
    labels = [i % 2 for i in range(120)] + [0] * 40 + [1] * 10
    groups = [f"patient:{i // 3}" for i in range(120)] + [f"image:{i}" for i in range(50)]
    collections = ["clinic"] * 120 + ["ham"] * 50
    train, validation = split_validation(_images(labels, groups, collections), 0.2)
    assert not set(train.groups) & set(validation.groups)
    assert set(validation.collections) == {"clinic", "ham"}
    assert np.sum(np.array(validation.collections) == "ham") == 10  # 20% of each class: 8 + 2
    assert 30 <= len(validation) <= 40  # whole patients: about 20% of the clinic's 120, and ham's 10


def test_a_flat_folder_is_held_out_by_patient_as_the_store_holds_it_out(tmp_path: Path):
    from tests.model.conftest import write_images

    root = tmp_path / "clinic"
    write_images(root, 20, seed=4)
    rows = ["path,label,patient"]
    for path in sorted(root.glob("*/*")):
        rows.append(f"{path.parent.name}/{path.name},{path.parent.name},P{int(path.stem.split('_')[1]) % 7}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")

    from_folder = load_collection_folder("clinic", root, holdout_fraction=0.3)
    store = FilesystemStore(tmp_path / "store")
    record = dataset.open_collection(store, "clinic", external=False, holdout_fraction=0.3)
    patients = dataset.read_manifest_patients(root / "manifest.csv")
    files = [
        dataset.LabelledFile(
            path.name, path.parent.name, path.read_bytes(), patients[f"{path.parent.name}/{path.name}"]
        )
        for path in sorted(root.glob("*/*.*"))
        if path.parent.name in layout.LABELS
    ]
    dataset.add_images(store, record, files, known=set(), max_bytes=10**7, max_pixels=10**7)
    (from_store,) = load_store_collections(store)

    assert from_folder.test is not None and from_folder.train is not None
    assert set(from_folder.test.groups) & set(from_folder.train.groups) == set()
    assert sorted(from_folder.test.groups) == sorted(from_store.test.groups)
    assert len(from_folder.test) == len(from_store.test) and len(from_folder.train) == len(from_store.train)


def test_an_external_folder_is_held_out_whole(dataset_root: Path):
    external = load_collection_folder("elsewhere", dataset_root, external=True)
    assert external.train is None and len(external.test) == 28


def test_augmentation_is_repeatable_for_a_seed_and_differs_between_views():
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    first = augment(image, np.array([1, 2])).numpy()
    assert first.shape == (224, 224, 3) and first.min() >= 0.0 and first.max() <= 255.0
    assert np.array_equal(first, augment(image, np.array([1, 2])).numpy())
    views = [next(iter(augmented_views(image[None], view, seed=5))).numpy() for view in (0, 1)]
    assert not np.allclose(views[0], views[1])


def test_a_subset_is_identified_by_the_content_of_its_images(dataset_root: Path):
    data = load_folder(dataset_root / "train")
    everything = data.subset(np.arange(len(data))[::-1])
    first_half, second_half = data.subset(np.arange(8)), data.subset(np.arange(8, 16))
    assert everything.content_hash == data.content_hash
    assert first_half.content_hash != second_half.content_hash


@pytest.mark.parametrize("kind", AUGMENTATIONS)
def test_every_augmentation_strength_gives_a_repeatable_image_in_range(kind: str):
    image = np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    first = augment(image, np.array([4, 9]), kind).numpy()
    assert first.shape == (224, 224, 3) and first.min() >= 0.0 and first.max() <= 255.0
    assert np.array_equal(first, augment(image, np.array([4, 9]), kind).numpy())


def test_flips_only_moves_pixels_without_changing_them():
    image = np.random.default_rng(4).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    views = [augment(image, np.array([1, seed]), "flips").numpy() for seed in range(6)]
    for view in views:
        # Same pixel values, rearranged (to float32 rounding of the uint8 -> [0, 1] -> 0..255 trip).
        assert np.allclose(np.sort(view.reshape(-1, 3), axis=0), np.sort(image.reshape(-1, 3), axis=0), atol=1e-3)
    assert any(not np.allclose(view, image, atol=1e-3) for view in views), "some draw flips or rotates"


def test_dermoscopy_augmentation_changes_colours_beyond_the_milder_one():
    image = np.full((224, 224, 3), 150, np.uint8)
    spread = {
        kind: np.std([augment(image, np.array([2, seed]), kind).numpy().mean(axis=(0, 1)) for seed in range(24)])
        for kind in ("colour", "dermoscopy")
    }
    assert spread["dermoscopy"] > spread["colour"]


def test_an_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="augmentation must be one of"):
        augment(np.zeros((224, 224, 3), np.uint8), np.array([1, 2]), "sepia")

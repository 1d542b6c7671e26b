"""Loading labelled folders and the store, the validation split and augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.model.data import AUGMENTATIONS, augment, augmented_views, load_folder, load_store, stratified_split
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
        store.put(layout.dataset_image("train", path.parent.name, path.stem, path.suffix[1:]), path.read_bytes())
    from_store = load_store(store, "train")
    from_folder = load_folder(dataset_root / "train")
    assert from_store.labels.tolist() == from_folder.labels.tolist()
    assert from_store.content_hash == from_folder.content_hash


@pytest.mark.parametrize(
    ("benign", "malignant", "fraction", "expected"), [(80, 20, 0.2, (16, 4)), (50, 50, 0.1, (5, 5))]
)
def test_the_validation_split_is_stratified_disjoint_and_repeatable(benign, malignant, fraction, expected):
    labels = np.array([0] * benign + [1] * malignant)
    train, validation = stratified_split(labels, fraction, seed=3)
    assert (np.sum(labels[validation] == 0), np.sum(labels[validation] == 1)) == expected
    assert not set(train) & set(validation) and len(train) + len(validation) == len(labels)
    assert np.array_equal(validation, stratified_split(labels, fraction, seed=3)[1])


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

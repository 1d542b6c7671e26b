"""Statistics checked against a dataset small enough to compute by hand."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from services.insights.statistics import BINS, entries_frame, image_statistics, summarise
from shared.dataset import DatasetImage
from tests.services.insights.support import LIMITS, png

# Four known images (PNG, so lossless). Bin i of 32 holds levels 8i .. 8i+7.
FLAT_8 = png([[8, 8], [8, 8]])  # 2x2, gray 8 -> bin 1; mean 8, std 0
HALF_BLACK_HALF_WHITE = png([[0, 0], [255, 255]])  # 2x2; bins 0 and 31; mean 127.5, std 127.5
RED_ISH = png([[(255, 0, 16)] * 4] * 2)  # 4x2; gray round(.299*255 + .114*16) = 78 -> bin 9
FLAT_200 = png([[200] * 4] * 2)  # 4x2, gray 200 -> bin 25


def one_hot(bins: dict[int, float]) -> list[float]:
    return [bins.get(index, 0.0) for index in range(BINS)]


Item = tuple[str, str, str, bytes]  # collection, part, label, the image


def dataset(*items: Item) -> tuple[list[DatasetImage], dict[str, dict[str, Any]]]:
    images, entries = [], {}
    for collection, part, label, data in items:
        sha256 = hashlib.sha256(data).hexdigest()
        key = f"datasets/{collection}/{part}/{label}/{sha256}.png"
        images.append(DatasetImage(key, collection, part, label, sha256))
        entries[sha256] = image_statistics(data, **LIMITS)
    return images, entries


def snapshot_of(*items: Item, external: tuple[str, ...] = ()) -> dict[str, Any]:
    images, entries = dataset(*items)
    frame = entries_frame(images, entries)
    return summarise(frame, external=external, computed_at=1.5, work={"computed": len(images), "cached": 0})


HAND_MADE = (
    ("ham10000", "train", "benign", FLAT_8),
    ("ham10000", "train", "benign", HALF_BLACK_HALF_WHITE),
    ("ham10000", "test", "malignant", RED_ISH),
    ("clinic-a", "train", "malignant", FLAT_200),
)


@pytest.mark.parametrize(
    ("data", "width", "height", "histograms", "mean_gray", "std_gray"),
    [
        (FLAT_8, 2, 2, {"gray": {1: 4}, "red": {1: 4}, "green": {1: 4}, "blue": {1: 4}}, 8.0, 0.0),
        (
            HALF_BLACK_HALF_WHITE,
            2,
            2,
            {channel: {0: 2, 31: 2} for channel in ("gray", "red", "green", "blue")},
            127.5,
            127.5,
        ),
        (RED_ISH, 4, 2, {"gray": {9: 8}, "red": {31: 8}, "green": {0: 8}, "blue": {2: 8}}, 78.0, 0.0),
    ],
    ids=["flat", "half_black_half_white", "red_ish"],
)
def test_one_image_gives_its_size_exact_histogram_counts_and_gray_mean_and_std(
    data: bytes, width: int, height: int, histograms: dict[str, dict[int, int]], mean_gray: float, std_gray: float
) -> None:
    entry = image_statistics(data, **LIMITS)
    assert (entry["width"], entry["height"]) == (width, height)
    for channel, bins in histograms.items():
        assert entry[channel] == one_hot(bins), channel
    assert entry["mean_gray"] == pytest.approx(mean_gray)
    assert entry["std_gray"] == pytest.approx(std_gray)


def test_an_unreadable_image_gets_an_error_entry_instead_of_statistics() -> None:
    entry = image_statistics(b"\x89PNG\r\n\x1a\n truncated", **LIMITS)
    assert "error" in entry and "width" not in entry


def test_counts_pool_the_collections_per_part_with_every_part_and_label_zeros_included() -> None:
    snapshot = snapshot_of(*HAND_MADE)
    json.dumps(snapshot, allow_nan=False)  # plain JSON: no numpy types, no NaN
    assert snapshot["image_count"] == 4
    assert snapshot["duplicate_count"] == 0
    assert snapshot["counts"] == {
        "train": {"benign": 2, "malignant": 1},
        "test": {"benign": 0, "malignant": 1},
    }


def test_each_collection_is_counted_on_its_own_by_name_and_says_whether_it_is_external() -> None:
    snapshot = snapshot_of(*HAND_MADE, ("derm7pt", "test", "benign", RED_ISH), external=("derm7pt",))
    assert list(snapshot["collections"]) == ["clinic-a", "derm7pt", "ham10000"]
    assert snapshot["collections"] == {
        "clinic-a": {
            "external": False,
            "counts": {"train": {"benign": 0, "malignant": 1}, "test": {"benign": 0, "malignant": 0}},
        },
        "derm7pt": {
            "external": True,
            "counts": {"train": {"benign": 0, "malignant": 0}, "test": {"benign": 1, "malignant": 0}},
        },
        "ham10000": {
            "external": False,
            "counts": {"train": {"benign": 2, "malignant": 0}, "test": {"benign": 0, "malignant": 1}},
        },
    }
    assert snapshot["counts"]["test"] == {"benign": 1, "malignant": 1}


def test_sizes_give_points_and_width_and_height_histograms() -> None:
    sizes = snapshot_of(*HAND_MADE)["sizes"]
    assert sizes["points"] == [[2, 2, 2], [4, 2, 2]]
    # Two distinct widths: two bins over [2, 4 + 1); one height: one bin over [2, 3).
    assert sizes["width"] == {"edges": [2.0, 3.5, 5.0], "counts": [2, 2]}
    assert sizes["height"] == {"edges": [2.0, 3.0], "counts": [4]}


def test_class_histograms_are_pooled_pixel_counts_over_total_pixels_across_collections_and_parts() -> None:
    intensity = snapshot_of(*HAND_MADE)["intensity"]
    assert intensity["bins"] == BINS
    # benign: 4 pixels at 8, 2 at 0, 2 at 255 (8 pixels)
    assert intensity["benign"]["gray"] == pytest.approx(one_hot({0: 0.25, 1: 0.5, 31: 0.25}))
    assert intensity["benign"]["blue"] == pytest.approx(one_hot({0: 0.25, 1: 0.5, 31: 0.25}))
    # malignant: 8 red-ish pixels (ham10000's test part) and 8 at 200 (clinic-a's train part)
    assert intensity["malignant"]["gray"] == pytest.approx(one_hot({9: 0.5, 25: 0.5}))
    assert intensity["malignant"]["red"] == pytest.approx(one_hot({31: 0.5, 25: 0.5}))
    assert intensity["malignant"]["green"] == pytest.approx(one_hot({0: 0.5, 25: 0.5}))
    assert intensity["malignant"]["blue"] == pytest.approx(one_hot({2: 0.5, 25: 0.5}))


def test_brightness_and_contrast_are_mean_and_std_over_images_of_each_class() -> None:
    snapshot = snapshot_of(*HAND_MADE)
    # benign image means 8 and 127.5; image stds 0 and 127.5 (population stds)
    assert snapshot["brightness"]["benign"] == pytest.approx({"mean": 67.75, "std": 59.75})
    assert snapshot["contrast"]["benign"] == pytest.approx({"mean": 63.75, "std": 63.75})
    assert snapshot["brightness"]["malignant"] == pytest.approx({"mean": 139.0, "std": 61.0})
    assert snapshot["contrast"]["malignant"] == pytest.approx({"mean": 0.0, "std": 0.0})


def test_the_same_content_under_two_keys_counts_both_as_duplicates() -> None:
    snapshot = snapshot_of(
        ("ham10000", "train", "benign", FLAT_8),
        ("clinic-a", "test", "malignant", FLAT_8),
        ("ham10000", "test", "benign", FLAT_200),
    )
    assert snapshot["duplicate_count"] == 2
    assert snapshot["image_count"] == 3


def test_an_unreadable_image_is_counted_but_left_out_of_pixel_statistics() -> None:
    snapshot = snapshot_of(
        ("ham10000", "train", "benign", FLAT_8), ("ham10000", "train", "benign", b"\x89PNG\r\n\x1a\n broken")
    )
    assert snapshot["counts"]["train"]["benign"] == 2
    assert snapshot["sizes"]["points"] == [[2, 2, 1]]
    assert snapshot["brightness"]["benign"] == {"mean": 8.0, "std": 0.0}


def test_an_empty_dataset_gives_zero_counts_empty_sizes_and_null_class_statistics() -> None:
    snapshot = summarise(entries_frame([], {}), computed_at=1.0, work={"computed": 0, "cached": 0})
    assert snapshot["image_count"] == 0
    assert snapshot["counts"] == {"train": {"benign": 0, "malignant": 0}, "test": {"benign": 0, "malignant": 0}}
    assert snapshot["collections"] == {}
    assert snapshot["sizes"] == {
        "points": [],
        "width": {"edges": [], "counts": []},
        "height": {"edges": [], "counts": []},
    }
    assert snapshot["intensity"]["malignant"]["gray"] == [0.0] * BINS
    assert snapshot["brightness"]["benign"] == {"mean": None, "std": None}

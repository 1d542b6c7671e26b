"""The heat map's drawing: positive evidence scaled by its maximum, stretched over the whole
image, coloured over it; the project's decoder and limits; an exact PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.errors import HeatmapUnavailable, ImageTooLarge, PayloadTooLarge
from shared.heatmap import (
    MAX_OPACITY,
    MAX_SIDE,
    class_activation_of,
    encode_png,
    evidence_map,
    overlay,
    overlay_size,
    render_heatmap,
    upsample,
)
from shared.messaging.schemas import PredictionResult
from tests.support.images import encode, grainy_jpeg

LIMITS = {"max_bytes": 10 * 2**20, "max_pixels": 40_000_000}
VIRIDIS_TOP = np.array([253, 231, 37])


def one_hot(row: int, column: int, value: float = 2.0) -> np.ndarray:
    grid = np.full((7, 7), -1.0)
    grid[row, column] = value
    return grid


def decode(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.mode == "RGB"
    return np.asarray(image)


def test_the_evidence_is_the_positive_part_scaled_by_its_maximum() -> None:
    grid = np.linspace(-2.0, 4.0, 49).reshape(7, 7)
    evidence = evidence_map(grid.tolist())
    assert evidence.max() == pytest.approx(1.0)
    assert np.all(evidence[grid <= 0] == 0)
    assert evidence[grid > 0] == pytest.approx(grid[grid > 0] / 4.0)


def test_an_image_without_positive_evidence_has_an_empty_map() -> None:
    assert np.all(evidence_map(np.full((7, 7), -3.0)) == 0)


@pytest.mark.parametrize(
    "grid",
    [np.zeros((6, 7)), np.zeros((7, 7, 1)), np.where(np.eye(7), np.nan, 0.0), [["a"] * 7] * 7, None],
    ids=["six rows", "three axes", "not finite", "not numbers", "none"],
)
def test_a_damaged_class_activation_is_refused(grid: object) -> None:
    with pytest.raises(HeatmapUnavailable):
        evidence_map(grid)  # type: ignore[arg-type]


def test_each_cell_is_centred_on_its_seventh_of_the_whole_image() -> None:
    levels = np.asarray(upsample(evidence_map(one_hot(2, 5)), (700, 350)))
    # Cell (row 2, column 5) covers x 500-600 and y 100-150 of a 700x350 image: full level at its centre
    # (x 550, y 125 lie between pixels, so the four around it are a hair below).
    assert levels[124:126, 549:551].min() >= 250
    row, column = np.unravel_index(np.argmax(levels), levels.shape)
    assert abs(row - 125) <= 1 and abs(column - 550) <= 1
    assert levels[0, 0] == 0 and levels[349, 699] == 0


def test_the_stretch_is_bilinear_between_cell_centres() -> None:
    grid = np.tile(np.arange(7, dtype=np.float64), (7, 1))  # 0..6 from left to right
    levels = np.asarray(upsample(evidence_map(grid), (700, 70)), dtype=np.float64)
    centres = [50 + 100 * column for column in range(7)]
    midway = [100 + 100 * column for column in range(6)]
    assert levels[35, centres] == pytest.approx(np.arange(7) / 6 * 255, abs=1)
    assert levels[35, midway] == pytest.approx((np.arange(6) + 0.5) / 6 * 255, abs=1.5)


def test_where_there_is_no_evidence_the_image_shows_through_untouched() -> None:
    # 315x147: cells of 45x21 pixels, so the first cell's centre (22.5, 10.5) is pixel (22, 10)'s centre.
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (147, 315, 3), dtype=np.uint8))
    drawn = np.asarray(overlay(rgb, evidence_map(one_hot(0, 0))))
    original = np.asarray(rgb)
    assert np.array_equal(drawn[32:, 68:], original[32:, 68:])  # past the next cells' centres
    peak = original[10, 22].astype(float) * (1 - MAX_OPACITY) + VIRIDIS_TOP * MAX_OPACITY
    assert drawn[10, 22] == pytest.approx(peak, abs=1)


def test_the_overlay_has_the_stored_images_size() -> None:
    png = render_heatmap(grainy_jpeg(120, (600, 450)), one_hot(3, 3), **LIMITS)
    assert decode(png).shape == (450, 600, 3)


@pytest.mark.parametrize(("size", "expected"), [((4000, 3000), (1024, 768)), ((1500, 3000), (512, 1024))])
def test_a_camera_sized_image_is_drawn_at_most_max_side_keeping_its_shape(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert overlay_size(*size) == expected and max(expected) == MAX_SIDE
    png = render_heatmap(grainy_jpeg(120, size), one_hot(3, 3), **LIMITS)
    assert decode(png).shape == (expected[1], expected[0], 3)


def test_a_png_upload_is_drawn_over_too() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    png = render_heatmap(encode(Image.fromarray(pixels), "PNG"), np.full((7, 7), -1.0), **LIMITS)
    assert np.array_equal(decode(png), pixels)  # no evidence anywhere: the image itself


@pytest.mark.parametrize(
    ("limits", "error"),
    [
        ({"max_bytes": 100, "max_pixels": 10**8}, PayloadTooLarge),
        ({"max_bytes": 10**8, "max_pixels": 1000}, ImageTooLarge),
    ],
)
def test_the_upload_limits_hold_for_the_drawing_too(limits: dict[str, int], error: type[Exception]) -> None:
    with pytest.raises(error):
        render_heatmap(grainy_jpeg(120, (64, 48)), one_hot(3, 3), **limits)


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (257, 31)])
def test_the_png_writer_is_lossless(size: tuple[int, int]) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    assert np.array_equal(decode(encode_png(Image.fromarray(pixels))), pixels)


def test_a_failed_prediction_or_a_version_without_class_activation_has_no_heat_map() -> None:
    failed = PredictionResult(job_id="j", error={"code": "invalid_image", "message": "damaged"})
    older = PredictionResult(job_id="j", label="benign", model_version="20261206T055921Z-24b0f8")
    with pytest.raises(HeatmapUnavailable, match="failed"):
        class_activation_of(failed)
    with pytest.raises(HeatmapUnavailable, match="not available for model version 20261206T055921Z-24b0f8"):
        class_activation_of(older)
    grid = one_hot(1, 1).tolist()
    assert class_activation_of(PredictionResult(job_id="j", label="benign", class_activation=grid)) == grid

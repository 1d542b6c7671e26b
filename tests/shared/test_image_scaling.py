"""Real-size uploads: the reduced decode gives the model the same input, and refuses the same damage.

The serving path (shared/images.py) decodes a JPEG at 1/2, 1/4 or 1/8 scale in the DCT domain
and box-reduces before the bilinear resize. These tests compare it with what it replaced, a
full-size decode and a direct resize, on camera-sized files made here.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.errors import InvalidImage
from shared.images import (
    MODEL_INPUT_SIZE,
    decode_model_input,
    decode_upload,
    encode_model_input,
    model_input_for_key,
    model_input_from_bytes,
    strip_metadata,
)
from shared.serving.registry import load_production, seed_from_directory
from shared.serving.runtime import ServingModel
from shared.settings import REPO_ROOT
from shared.storage import FilesystemStore
from tests.support.images import exif_rotated_jpeg

LIMITS = {"max_bytes": 64 * 2**20, "max_pixels": 40_000_000}  # equivalence is tested here, not limits
CAMERA_SIZE = (4000, 3000)


@cache
def camera_pixels(seed: int) -> np.ndarray:
    """A 12 MP lesion-like picture: smooth blobs at several scales plus sensor grain."""
    generator = np.random.default_rng(seed)
    coarse = generator.integers(60, 220, (12, 16, 3), np.uint8)
    picture = np.asarray(Image.fromarray(coarse).resize(CAMERA_SIZE, Image.Resampling.BICUBIC), np.float32)
    detail = Image.fromarray(generator.integers(0, 256, (150, 200, 3), np.uint8))
    picture += (np.asarray(detail.resize(CAMERA_SIZE, Image.Resampling.BICUBIC), np.float32) - 128) * 0.25
    picture += generator.normal(0, 5, picture.shape)
    return np.clip(picture, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format, **options)
    return buffer.getvalue()


def full_decode_and_resize(data: bytes) -> np.ndarray:
    """What the serving path did before: every pixel decoded, then one bilinear resize."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return np.asarray(image.convert("RGB").resize(MODEL_INPUT_SIZE, Image.Resampling.BILINEAR), np.uint8)


@pytest.fixture(scope="module")
def shipped_model(tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    store = FilesystemStore(Path(tmp_path_factory.mktemp("models-store")))
    seed_from_directory(store, REPO_ROOT / "models")
    return load_production(store, threads=1)


@pytest.mark.slow  # camera-sized images through the model: ~5-10 s a format
@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_the_reduced_path_gives_the_probability_of_a_full_decode(
    shipped_model: ServingModel, image_format: str
) -> None:
    files = [
        encode(
            camera_pixels(seed), image_format, **({"quality": 92} if image_format == "JPEG" else {"compress_level": 1})
        )
        for seed in range(3)
    ]
    reduced = np.stack([model_input_from_bytes(data, **LIMITS) for data in files])
    full = np.stack([full_decode_and_resize(data) for data in files])
    assert reduced.shape == full.shape == (3, 224, 224, 3)
    assert np.abs(reduced.astype(int) - full.astype(int)).mean() < 2  # close, yet not the same pixels
    difference = np.abs(shipped_model.predict(reduced) - shipped_model.predict(full))
    assert difference.max() <= 0.01


def test_a_camera_jpeg_is_decoded_at_reduced_scale_but_reports_its_full_size() -> None:
    image = decode_upload(encode(camera_pixels(0), "JPEG", quality=92), **LIMITS, reduce_to=MODEL_INPUT_SIZE)
    assert image.reduced and image.rgb.size == (500, 375)  # 1/8 scale: still at least 224 on both sides
    assert (image.width, image.height) == CAMERA_SIZE


def test_a_turned_jpeg_is_decoded_at_full_size_so_it_can_be_stored_upright() -> None:
    data = exif_rotated_jpeg(size=(1600, 1200), orientation=6)
    image = decode_upload(data, **LIMITS, reduce_to=MODEL_INPUT_SIZE)
    assert not image.reduced and (image.width, image.height) == (1200, 1600)
    assert Image.open(io.BytesIO(strip_metadata(data, image))).size == (1200, 1600)


def _damaged(data: bytes, damage: str) -> bytes:
    middle = len(data) // 2
    patches = {
        "cut at 50%": data[:middle],
        "cut at 99%": data[: int(len(data) * 0.99)],
        "end marker cut": data[:-2],
        "16 KB of 0xFF in the scan": data[:middle] + b"\xff" * 16384 + data[middle + 16384 :],
        "16 KB of random bytes in the scan": data[:middle]
        + np.random.default_rng(0).integers(0, 256, 16384, np.uint8).tobytes()
        + data[middle + 16384 :],
        "frame header zeroed": data[:2] + bytes(200) + data[202:],
    }
    return patches[damage]


def _outcome(data: bytes, reduce_to: tuple[int, int] | None) -> str:
    try:
        decode_upload(data, **LIMITS, reduce_to=reduce_to)
    except InvalidImage:
        return "refused"
    return "accepted"


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("damage", ["cut at 50%", "cut at 99%", "frame header zeroed"])
def test_a_reduced_decode_refuses_truncated_camera_jpegs(damage: str, progressive: bool) -> None:
    """Scaling skips inverse-DCT work, not the entropy decoding: every byte is still read."""
    bad = _damaged(encode(camera_pixels(0), "JPEG", quality=92, progressive=progressive), damage)
    assert _outcome(bad, None) == "refused"
    assert _outcome(bad, MODEL_INPUT_SIZE) == "refused"


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("damage", ["end marker cut", "16 KB of 0xFF in the scan", "16 KB of random bytes in the scan"])
def test_a_reduced_decode_answers_other_damage_as_a_full_decode_does(damage: str, progressive: bool) -> None:
    """Whether libjpeg calls these errors or warnings depends on where they land; both paths agree."""
    bad = _damaged(encode(camera_pixels(0), "JPEG", quality=92, progressive=progressive), damage)
    assert _outcome(bad, MODEL_INPUT_SIZE) == _outcome(bad, None)


def test_a_damaged_camera_png_is_refused() -> None:
    data = encode(camera_pixels(0), "PNG", compress_level=1)
    with pytest.raises(InvalidImage):
        model_input_from_bytes(data[: len(data) // 2], **LIMITS)


def test_a_model_copy_round_trips_and_anything_else_under_its_name_is_refused() -> None:
    pixels = model_input_from_bytes(encode(camera_pixels(1), "JPEG", quality=92), **LIMITS)
    copy = encode_model_input(pixels)
    assert np.array_equal(model_input_for_key("uploads/x/20260101-ab.model.npy", copy, **LIMITS), pixels)
    for wrong in [copy[:1000], b"not numpy", encode_model_input(pixels)[:-10]]:
        with pytest.raises(InvalidImage):
            decode_model_input(wrong)
    pickled = io.BytesIO()
    np.save(pickled, np.array([object()], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidImage):
        decode_model_input(pickled.getvalue())

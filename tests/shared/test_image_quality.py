"""The blur and exposure check on the model input (shared/image_quality.py)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from shared.image_quality import assess


def textured(mean: float, seed: int = 0) -> np.ndarray:
    """A 224x224 image with fine texture (like skin under a dermatoscope) around a grey level."""
    noise = np.random.default_rng(seed).normal(0, 25, (224, 224, 1))
    return np.clip(mean + noise + np.zeros((1, 1, 3)), 0, 255).astype(np.uint8)


def test_a_sharp_well_exposed_image_needs_no_retake() -> None:
    quality = assess(textured(140))
    assert not quality.retake and quality.exposure is None
    assert quality.public() == {
        "retake": False,
        "blurred": False,
        "exposure": None,
        "sharpness": round(quality.sharpness, 1),
        "mean_grey": round(quality.mean_grey, 1),
    }


def test_a_blurred_copy_is_flagged_blurred() -> None:
    sharp = textured(140)
    blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(3)))
    quality = assess(blurred)
    assert quality.blurred and quality.retake and quality.exposure is None
    assert quality.sharpness < assess(sharp).sharpness / 10


def test_too_dark_and_too_bright_images_are_flagged_by_their_exposure() -> None:
    assert assess(textured(30)).exposure == "dark"
    assert assess(textured(240)).exposure == "bright"
    washed_out = textured(140)
    washed_out[:100] = 255  # 45% of the pixels clipped white
    assert assess(washed_out).exposure == "bright"


def test_a_dermatoscopes_black_vignette_is_not_a_bad_exposure() -> None:
    image = textured(150)
    rows, columns = np.ogrid[:224, :224]
    image[(rows - 112) ** 2 + (columns - 112) ** 2 > 112**2] = 0  # black outside the circle
    quality = assess(image)
    assert quality.exposure is None and not quality.retake

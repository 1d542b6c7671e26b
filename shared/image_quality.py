"""Is the image sharp and well exposed enough to judge? A check on the model input, with a hint
to retake the image when it is not (issue 23).

Measured by bench/image_quality.py on the 224x224 model input (docs/history/model-decisions.md, "Image quality"):
0.16 ms an image; it flags none of 500 ISIC 2018 test images, 3% of Derm7pt and ISIC 2020,
and every copy of an ISIC 2018 test image blurred by 2 px or darkened to a quarter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ITU-R 601-2 luma, as Pillow's "L".
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Variance of the grey image's Laplacian below which the image is blurred: the 1st percentile of
# HAM10000 training images (dermoscopy is smooth by nature, so the bar comes from real images).
SHARPNESS_BELOW = 14.0
# Exposure in absolute grey levels (0-255): another clinic's darker or brighter dermatoscope is
# not a bad exposure, and a dermatoscope's black vignette makes nearly black pixels normal, so
# only a very dark or very bright mean, or a large share of nearly white pixels, counts.
DARK_BELOW = 50.0
BRIGHT_ABOVE = 230.0
NEARLY_WHITE = 247.0
WHITE_SHARE_ABOVE = 0.3
# Why an image should be taken again (a metric label and the UI's words for it).
RETAKE_REASONS = ("blurred", "dark", "bright")


@dataclass(frozen=True)
class ImageQuality:
    """What the check found; `retake` when the image should be taken again."""

    sharpness: float
    mean_grey: float
    white_share: float

    @property
    def blurred(self) -> bool:
        return self.sharpness < SHARPNESS_BELOW

    @property
    def exposure(self) -> str | None:
        """ "dark", "bright" or None (fine)."""
        if self.mean_grey < DARK_BELOW:
            return "dark"
        if self.mean_grey > BRIGHT_ABOVE or self.white_share > WHITE_SHARE_ABOVE:
            return "bright"
        return None

    @property
    def retake_reason(self) -> str | None:
        """The first of RETAKE_REASONS that holds, or None."""
        return "blurred" if self.blurred else self.exposure

    @property
    def retake(self) -> bool:
        return self.retake_reason is not None

    def public(self) -> dict[str, object]:
        """The answer's `quality` object."""
        return {
            "retake": self.retake,
            "blurred": self.blurred,
            "exposure": self.exposure,
            "sharpness": round(self.sharpness, 1),
            "mean_grey": round(self.mean_grey, 1),
        }


def assess(pixels: np.ndarray) -> ImageQuality:
    """Sharpness, mean grey level and nearly white share of one uint8 RGB model input (H, W, 3)."""
    grey = pixels.astype(np.float32) @ _LUMA
    laplacian = grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1]
    return ImageQuality(
        sharpness=float(laplacian.var()),
        mean_grey=float(grey.mean()),
        white_share=float((grey > NEARLY_WHITE).mean()),
    )

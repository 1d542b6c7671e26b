"""Small synthetic images in every shape the gateway must accept or refuse."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def solid_jpeg(value: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A uniform image: value 230 reads as malignant, 20 as benign with the test model."""
    return encode(Image.new("RGB", size, (value, value, value)))


def noise_png(seed: int = 0, size: tuple[int, int] = (40, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG")

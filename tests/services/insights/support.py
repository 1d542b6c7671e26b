"""Helpers of the insights tests: small images whose pixels are known, dataset uploads."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from shared.dataset import add_image, known_hashes
from shared.storage import ObjectStore

LIMITS = {"max_bytes": 10_000_000, "max_pixels": 10_000_000}


def png(pixels: list[list[int]] | list[list[tuple[int, int, int]]]) -> bytes:
    """A lossless PNG from rows of gray levels or of RGB triples, so every pixel is known."""
    array = np.array(pixels, dtype=np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def distinct_png(index: int, size: int = 8) -> bytes:
    """A different small image for each `index` (distinct bytes, so distinct hashes)."""
    return png(np.random.default_rng(index).integers(0, 256, (size, size)).tolist())


def put_images(store: ObjectStore, images: list[bytes], split: str = "train", label: str = "benign") -> None:
    """Add images to the dataset the way the gateway and the import command do."""
    known = known_hashes(store)
    for number, data in enumerate(images):
        outcome = add_image(store, data, split=split, label=label, filename=f"{number}.png", known=known, **LIMITS)
        assert outcome.status == "added", outcome

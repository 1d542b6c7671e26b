"""Helpers of the insights tests: small images whose pixels are known, dataset uploads."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from shared.dataset import LabelledFile, add_images, known_hashes, open_collection
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


def put_images(
    store: ObjectStore,
    images: list[bytes],
    collection: str = "ham10000",
    part: str | None = "train",
    label: str = "benign",
    *,
    external: bool = False,
) -> None:
    """Add images to a collection the way the gateway and the import command do: to `part`, or
    to the part each is assigned (`part=None`; an external collection's is always `test`)."""
    record = open_collection(store, collection, external=external, holdout_fraction=0.2)
    files = [LabelledFile(f"{number}.png", label, data) for number, data in enumerate(images)]
    outcomes = add_images(store, record, files, part=part, known=known_hashes(store), **LIMITS)
    assert [outcome.status for outcome in outcomes] == ["added"] * len(images), outcomes

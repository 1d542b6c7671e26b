"""The fuzz targets' seed corpus: small valid and invalid images from tests/support/images.py."""

from __future__ import annotations

from pathlib import Path

from tests.support.images import invalid_images, noise_png, solid_jpeg, valid_images


def seed_corpus(folder: Path) -> Path:
    """Write one file per seed image into `folder` (created if needed) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    seeds = {**valid_images(), "solid_jpeg": solid_jpeg(120), "noise_png": noise_png()}
    seeds.update({name: data for name, (data, _) in invalid_images().items() if data})
    for name, data in seeds.items():
        (folder / name).write_bytes(data)
    return folder

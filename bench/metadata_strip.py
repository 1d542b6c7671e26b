"""What stripping metadata costs per upload: `python -m bench.metadata_strip [--data DIR]`.

For each image: the decode every upload already pays (decode_upload), the lossless strip
(segments/chunks filtered), and a re-encode from the upright pixels, which is what a turned
image (EXIF orientation 2-8) costs instead. Uses the JPEGs under --data if given (e.g. the
HAM10000 folder), and a synthetic 12-megapixel phone-sized photo with EXIF. Prints medians.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from shared.image_metadata import reencode
from shared.images import decode_upload, strip_metadata

LIMITS = {"max_bytes": 100_000_000, "max_pixels": 100_000_000}


def median_ms(action: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def phone_photo() -> bytes:
    """4000x3000, smooth with sensor-like noise, EXIF with a GPS position."""
    y, x = np.mgrid[0:3000, 0:4000]
    base = np.stack([(x / 16) % 256, (y / 12) % 256, ((x + y) / 28) % 256], axis=-1)
    noisy = base + np.random.default_rng(0).normal(0, 4, base.shape)
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(0x8825).update({1: "N", 2: (45.0, 45.0, 36.0)})
    buffer = io.BytesIO()
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=92, exif=exif.tobytes())
    return buffer.getvalue()


def measure(name: str, data: bytes, repeat: int) -> tuple[float, float, float]:
    image = decode_upload(data, **LIMITS)
    decode = median_ms(lambda: decode_upload(data, **LIMITS), repeat)
    strip = median_ms(lambda: strip_metadata(data, image), repeat)
    again = median_ms(lambda: reencode(image.upright, image.format), repeat)
    print(
        f"{name}: {image.width}x{image.height}, {len(data) / 1024:.0f} KiB: decode {decode:.1f} ms, "
        f"lossless strip {strip:.2f} ms, re-encode {again:.1f} ms"
    )
    return decode, strip, again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, help="a folder of JPEGs (searched recursively)")
    parser.add_argument("--images", type=int, default=20, help="how many JPEGs of --data to time")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    measure("synthetic phone photo", phone_photo(), args.repeat)
    if args.data:
        rows = [
            measure(path.name, path.read_bytes(), args.repeat)
            for path in sorted(args.data.rglob("*.jpg"))[: args.images]
        ]
        decode, strip, again = (statistics.median(column) for column in zip(*rows, strict=True))
        print(
            f"median of {len(rows)} dataset JPEGs: decode {decode:.1f} ms, lossless strip {strip:.2f} ms, "
            f"re-encode {again:.1f} ms"
        )


if __name__ == "__main__":
    main()

"""What decoding may cost before it starts: structure bounds, the pixels a header announces,
and the process-wide budget of decoded bytes (issue 22)."""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from PIL import Image

from shared import image_metadata
from shared.errors import ImageTooLarge, InvalidImage, Overloaded
from shared.images import DecodeBudget, decode_bytes, decode_upload, open_upload
from shared.settings import available_cpus
from tests.support.images import encode, exif_rotated_jpeg, noise_png, solid_jpeg

LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_pixels": 40_000_000}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_idat_split(pieces: int) -> bytes:
    """A valid 8x8 grey PNG whose compressed pixels are split over `pieces` IDAT chunks."""
    raw = b"".join(b"\0" + bytes(range(8)) for _ in range(8))
    compressed = zlib.compress(raw)
    size = max(1, -(-len(compressed) // pieces))
    idats = [png_chunk(b"IDAT", compressed[i : i + size]) for i in range(0, len(compressed), size)]
    idats += [png_chunk(b"IDAT", b"")] * (pieces - len(idats))
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
    return image_metadata.PNG_SIGNATURE + header + b"".join(idats) + png_chunk(b"IEND", b"")


def jpeg_with_comments(count: int) -> bytes:
    image = solid_jpeg(100)
    comment = b"\xff\xfe\x00\x04hi"
    return image[:2] + comment * count + image[2:]


def test_fill_bytes_segments_and_chunks_are_bounded_before_any_decoder_walks_them() -> None:
    image = solid_jpeg(100)
    with pytest.raises(InvalidImage, match="fill bytes"):
        open_upload(image[:2] + b"\xff" * (image_metadata.MAX_JPEG_FILL_BYTES + 1) + image[2:], **LIMITS)
    with pytest.raises(InvalidImage, match="segments"):
        open_upload(jpeg_with_comments(image_metadata.MAX_JPEG_SEGMENTS), **LIMITS)
    with pytest.raises(InvalidImage, match="chunks"):
        open_upload(png_with_idat_split(image_metadata.MAX_PNG_CHUNKS + 1), **LIMITS)


def test_files_inside_the_bounds_decode_as_before() -> None:
    image = solid_jpeg(100)
    padded = image[:2] + b"\xff" * 1000 + image[2:]
    assert decode_upload(padded, **LIMITS).rgb.getpixel((0, 0)) == decode_upload(image, **LIMITS).rgb.getpixel((0, 0))
    assert decode_upload(jpeg_with_comments(100), **LIMITS).width == 64
    assert decode_upload(png_with_idat_split(2000), **LIMITS).rgb.size == (8, 8)


def test_stripping_drops_fill_bytes_in_one_step_each() -> None:
    image = solid_jpeg(100)
    assert image_metadata.strip_jpeg(image[:2] + b"\xff" * 5000 + image[2:]) == image_metadata.strip_jpeg(image)


def test_the_header_says_what_decoding_costs() -> None:
    assert decode_bytes("RGB", (100, 10), turned=False) == 4000  # Pillow holds RGB as 4 bytes a pixel
    assert decode_bytes("L", (100, 10), turned=False) == 5000  # grey, then its RGB copy
    assert decode_bytes("RGB", (100, 10), turned=True) == 8000  # and the turned copy
    bomb = encode(Image.new("RGB", (4000, 3000)), "PNG")
    assert open_upload(bomb, **LIMITS).decode_bytes == 48_000_000
    # A JPEG is decoded at the model's scale: a 12 MP photo costs its reduced pixels only.
    photo = encode(Image.new("RGB", (4000, 3000), (90, 60, 40)), "JPEG")
    assert open_upload(photo, **LIMITS, reduce_to=(224, 224)).decode_bytes == 500 * 375 * 4


def test_a_png_turned_by_an_exif_chunk_after_its_pixels_is_found_without_decoding_it() -> None:
    plain = noise_png(size=(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    iend = plain.rindex(b"IEND") - 4
    turned = plain[:iend] + png_chunk(b"eXIf", exif.tobytes()[6:]) + plain[iend:]
    opened = open_upload(turned, **LIMITS)
    assert opened.orientation == 6 and opened.image._im is None  # nothing decoded yet
    assert decode_upload(turned, **LIMITS).rgb.size == (20, 40)
    assert open_upload(exif_rotated_jpeg(), **LIMITS).orientation == 6


def test_the_budget_refuses_what_can_never_fit_and_makes_the_rest_wait_their_turn() -> None:
    budget = DecodeBudget(100)
    with pytest.raises(ImageTooLarge, match="decodes to"), budget.reserve(101, wait_s=1):
        pass
    entered = threading.Event()
    second_started: list[float] = []

    def second() -> None:
        with budget.reserve(60, wait_s=10):
            second_started.append(time.monotonic())

    with budget.reserve(60, wait_s=1):
        entered.set()
        waiting = threading.Thread(target=second)
        waiting.start()
        time.sleep(0.3)
        assert second_started == []  # 60 + 60 > 100: it waits
        with pytest.raises(Overloaded), budget.reserve(50, wait_s=0.1):
            pass
        released_at = time.monotonic()
    waiting.join(timeout=10)
    assert second_started and second_started[0] >= released_at
    with budget.reserve(100, wait_s=1):  # everything given back
        pass


def test_available_cpus_follows_the_containers_quota(tmp_path: Path) -> None:
    cores = float(len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == min(0.5, cores)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == cores
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(v1) == min(1.5, cores)
    assert available_cpus(tmp_path / "missing") == cores


def test_a_decoded_image_of_a_file_opened_from_bytes_keeps_its_size() -> None:
    data = encode(Image.new("RGB", (640, 480), (1, 2, 3)), "JPEG")
    decoded = decode_upload(io.BytesIO(data).getvalue(), **LIMITS, reduce_to=(224, 224))
    assert (decoded.width, decoded.height) == (640, 480) and decoded.reduced

"""Image checks: what is accepted, what is refused and why, how pixels come out."""

from __future__ import annotations

import numpy as np
import pytest

from shared.errors import ImageTooLarge, InvalidImage, PayloadTooLarge, UnsupportedImageFormat
from shared.images import decode_upload, model_input_from_bytes, sniff_format
from tests.support.images import encode, exif_rotated_jpeg, invalid_images, sixteen_bit_png, solid_jpeg, valid_images

LIMITS = {"max_bytes": 1_000_000, "max_pixels": 4_000_000}
STATUS_TO_ERROR = {415: UnsupportedImageFormat, 422: InvalidImage}


@pytest.mark.parametrize("name", sorted(valid_images()))
def test_odd_but_valid_images_decode_to_rgb(name: str) -> None:
    decoded = decode_upload(valid_images()[name], **LIMITS)
    assert decoded.rgb.mode == "RGB"
    assert decoded.format in {"jpeg", "png"}


@pytest.mark.parametrize("name", sorted(invalid_images()))
def test_invalid_files_are_refused_with_the_right_error(name: str) -> None:
    data, status = invalid_images()[name]
    with pytest.raises(STATUS_TO_ERROR[status]) as raised:
        decode_upload(data, **LIMITS)
    assert str(raised.value)


def test_exif_orientation_is_applied() -> None:
    decoded = decode_upload(exif_rotated_jpeg(size=(40, 20), orientation=6), **LIMITS)
    assert (decoded.width, decoded.height) == (20, 40)


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    pixels = np.asarray(decode_upload(sixteen_bit_png(value=32768), **LIMITS).rgb)
    assert 120 <= pixels.mean() <= 135


def test_a_file_over_the_byte_limit_is_payload_too_large() -> None:
    with pytest.raises(PayloadTooLarge):
        decode_upload(solid_jpeg(10, (400, 400)), max_bytes=100, max_pixels=10**8)


def test_an_image_over_the_pixel_limit_is_refused_before_decoding() -> None:
    from PIL import Image

    small_file_many_pixels = encode(Image.new("L", (3000, 3000)), "PNG")
    assert len(small_file_many_pixels) < 100_000
    with pytest.raises(ImageTooLarge):
        decode_upload(small_file_many_pixels, max_bytes=10**6, max_pixels=1_000_000)


@pytest.mark.parametrize(("head", "expected"), [(b"\xff\xd8\xff\xe0", "jpeg"), (b"\x89PNG\r\n\x1a\nxxxx", "png")])
def test_format_is_sniffed_from_the_bytes(head: bytes, expected: str) -> None:
    assert sniff_format(head) == expected


def test_model_input_is_224_square_uint8() -> None:
    pixels = model_input_from_bytes(solid_jpeg(200, (640, 480)), **LIMITS)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert abs(int(pixels.mean()) - 200) <= 2

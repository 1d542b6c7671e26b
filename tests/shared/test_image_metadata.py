"""What is stored of an image carries its pixels and nothing else: no EXIF, GPS, XMP, ICC, text."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from shared.image_metadata import strip_jpeg, strip_png
from shared.images import decode_upload, strip_metadata
from tests.support.images import encode, valid_images

LIMITS = {"max_bytes": 50_000_000, "max_pixels": 50_000_000}
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description photoshop:City="Lyon"/></rdf:RDF></x:xmpmeta>'


def noise(size: tuple[int, int] = (64, 48), seed: int = 1) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def gps_exif(orientation: int | None = None) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0110] = "PhoneModel X"  # Model
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (45.0, 45.0, 36.0), "E", (4.0, 50.0, 24.0)
    if orientation is not None:
        exif[0x0112] = orientation
    return exif.tobytes()


def stored(data: bytes) -> bytes:
    return strip_metadata(data, decode_upload(data, **LIMITS))


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(decode_upload(data, **LIMITS).rgb)


def test_a_jpeg_with_gps_exif_is_stored_without_it_and_with_the_same_pixels() -> None:
    original = encode(noise(), "JPEG", exif=gps_exif(), icc_profile=b"device ICC " * 20, comment=b"patient 42")
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)  # the test image really has GPS
    cleaned = stored(original)
    image = Image.open(io.BytesIO(cleaned))
    assert dict(image.getexif()) == {}
    assert image.getexif().get_ifd(0x8825) == {}
    assert "icc_profile" not in image.info and "comment" not in image.info
    for secret in (b"PhoneMaker", b"PhoneModel", b"device ICC", b"patient 42", b"Exif\x00\x00"):
        assert secret not in cleaned
    np.testing.assert_array_equal(pixels(cleaned), pixels(original))  # lossless: no re-encode


def test_xmp_and_data_after_the_end_of_a_jpeg_are_dropped() -> None:
    base = encode(noise(), "JPEG", xmp=XMP)
    trailer = encode(noise(seed=2), "JPEG", exif=gps_exif())  # like a phone's second image (MPO)
    cleaned = stored(base + trailer)
    assert b"Lyon" not in cleaned and b"PhoneMaker" not in cleaned
    assert cleaned.endswith(b"\xff\xd9") and cleaned.count(b"\xff\xd9") >= 1
    np.testing.assert_array_equal(pixels(cleaned), pixels(base))


def test_a_progressive_jpeg_keeps_every_scan() -> None:
    original = encode(noise((120, 80)), "JPEG", progressive=True, exif=gps_exif())
    cleaned = strip_jpeg(original)
    assert b"PhoneMaker" not in cleaned
    np.testing.assert_array_equal(pixels(cleaned), pixels(original))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_turned_jpeg_is_stored_upright_without_its_orientation_tag(orientation: int) -> None:
    sideways = Image.new("RGB", (64, 16), (20, 40, 200))
    sideways.paste((220, 30, 30), (0, 0, 16, 16))  # a red end, so a wrong turn shows
    original = encode(sideways, "JPEG", exif=gps_exif(orientation), quality=95)
    cleaned = stored(original)
    image = Image.open(io.BytesIO(cleaned))
    assert 0x0112 not in image.getexif() and b"PhoneMaker" not in cleaned
    assert image.size == (decode_upload(original, **LIMITS).width, decode_upload(original, **LIMITS).height)
    # Re-encoded at quality 95: the upright pixels, within JPEG's rounding.
    difference = np.abs(pixels(cleaned).astype(int) - pixels(original).astype(int))
    assert difference.mean() < 4


def test_png_text_exif_and_icc_chunks_are_dropped() -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Dr. Someone")
    info.add_text("Location", "Clinic Room 3", zip=True)
    info.add_itxt("Comment", "patient 42")
    original = encode(noise(), "PNG", pnginfo=info, exif=gps_exif(), icc_profile=b"device ICC " * 20)
    cleaned = stored(original)
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"iCCP"):
        assert chunk in original and chunk not in cleaned
    assert b"Dr. Someone" not in cleaned
    assert b"PhoneMaker" not in cleaned
    np.testing.assert_array_equal(pixels(cleaned), pixels(original))


def test_a_png_keeps_its_transparency() -> None:
    original = encode(Image.new("RGBA", (16, 16), (10, 20, 30, 128)), "PNG")
    assert Image.open(io.BytesIO(strip_png(original))).getpixel((0, 0)) == (10, 20, 30, 128)


@pytest.mark.parametrize("name", sorted(valid_images()))
def test_every_odd_but_valid_image_still_decodes_to_the_same_pixels(name: str) -> None:
    original = valid_images()[name]
    cleaned = stored(original)
    assert Image.open(io.BytesIO(cleaned)).getexif().get(0x0112) is None
    np.testing.assert_array_equal(pixels(cleaned), pixels(original))


def test_a_clean_file_is_stored_byte_for_byte() -> None:
    original = encode(noise(), "JPEG")
    assert stored(original) == original

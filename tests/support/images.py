"""Small synthetic images in every shape the gateway must accept or refuse."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def solid_jpeg(value: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A uniform image: value 230 reads as malignant, 20 as benign with the test model."""
    return encode(Image.new("RGB", size, (value, value, value)))


def grainy_jpeg(value: int, size: tuple[int, int], seed: int = 0) -> bytes:
    """A camera-sized JPEG of about `value` brightness with grain, so it compresses like a photo (megabytes)."""
    pixels = np.random.default_rng(seed).normal(value, 16, (size[1], size[0], 3))
    return encode(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), quality=95)


def noise_png(seed: int = 0, size: tuple[int, int] = (40, 30)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG")


def exif_rotated_jpeg(size: tuple[int, int] = (40, 20), orientation: int = 6) -> bytes:
    """A JPEG stored sideways with an EXIF orientation tag saying how to turn it upright."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.new("RGB", size, (200, 10, 10)), "JPEG", exif=exif)


def sixteen_bit_png(value: int = 40000, size: tuple[int, int] = (30, 20)) -> bytes:
    return encode(Image.fromarray(np.full((size[1], size[0]), value, np.uint16)), "PNG")


def svg_document() -> bytes:
    return b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>'


def valid_images() -> dict[str, bytes]:
    """Odd but valid images every entry point must accept."""
    return {
        "cmyk_jpeg": encode(Image.new("CMYK", (32, 32), (0, 50, 100, 0)), "JPEG"),
        "grayscale_jpeg": encode(Image.new("L", (32, 32), 128), "JPEG"),
        "progressive_jpeg": encode(Image.new("RGB", (64, 64), (10, 200, 10)), "JPEG", progressive=True),
        "exif_rotated_jpeg": exif_rotated_jpeg(),
        "rgba_png": encode(Image.new("RGBA", (32, 32), (10, 20, 30, 128)), "PNG"),
        "palette_png": encode(Image.new("P", (32, 32), 3), "PNG"),
        "sixteen_bit_png": sixteen_bit_png(),
        "grayscale_alpha_png": encode(Image.new("LA", (32, 32), (90, 200)), "PNG"),
        "one_bit_png": encode(Image.new("1", (32, 32), 1), "PNG"),
    }


def invalid_images() -> dict[str, tuple[bytes, int]]:
    """Files that must be refused, with the HTTP status each must get."""
    jpeg = solid_jpeg(120, (200, 200))
    return {
        "empty_file": (b"", 422),
        "text_named_jpg": (b"hello, I am plain text pretending to be a JPEG\n" * 10, 422),
        "truncated_jpeg": (jpeg[: len(jpeg) // 2], 422),
        "jpeg_header_only": (jpeg[:20], 422),
        "png_header_with_garbage": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, 422),
        "gif": (encode(Image.new("P", (8, 8)), "GIF"), 415),
        "bmp": (encode(Image.new("RGB", (8, 8)), "BMP"), 415),
        "tiff": (encode(Image.new("RGB", (8, 8)), "TIFF"), 415),
        "webp": (encode(Image.new("RGB", (8, 8)), "WEBP"), 415),
        "svg": (svg_document(), 415),
        "html": (b"<html><body>not an image</body></html>", 422),
        "zip": (b"PK\x03\x04" + bytes(100), 422),
    }


def drawn_lesion_jpeg(size: int = 224, seed: int = 0) -> bytes:
    """A brown disc on skin tone, blurred, with sensor noise: lesion-like, yet unlike any dermatoscope image."""
    image = Image.new("RGB", (size, size), (200, 150, 130))
    radius = size // 4
    centre = size // 2
    ImageDraw.Draw(image).ellipse(
        (centre - radius, centre - radius, centre + radius, centre + radius), fill=(90, 50, 40)
    )
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(4)), dtype=float)
    pixels = pixels + np.random.default_rng(seed).normal(0, 6, pixels.shape)
    return encode(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))

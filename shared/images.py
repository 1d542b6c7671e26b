"""Image checks and conversion to model input, shared by the gateway, worker and trainer.

Every upload goes through `decode_upload` before anything is stored: the real format is
sniffed from the bytes (never from the file name or content type), only JPEG and PNG are
accepted, bytes and pixels are bounded, and the whole image is decoded so a truncated
file is caught here rather than in a worker.

Decoding at full resolution is the cost of a camera image (about 130 ms for 12 MP), so the
serving path decodes a JPEG in the DCT domain at 1/2, 1/4 or 1/8 scale (`reduce_to`): the
entropy-coded data is still read to its end, so truncated and damaged files are refused
just the same, but only the scaled-down pixels are computed. PNG has no such scaling; its
resize first box-reduces (`reducing_gap`) instead of convolving every source pixel.

Large uploads leave a model-sized copy beside the stored original (`encode_model_input`),
so the worker reads 150 KB of pixels instead of decoding the upload a second time.
"""

from __future__ import annotations

import io
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from shared import image_metadata
from shared.errors import ImageTooLarge, InvalidImage, Overloaded, PayloadTooLarge, UnsupportedImageFormat

MODEL_INPUT_SIZE = (224, 224)
MODEL_INPUT_SHAPE = (*MODEL_INPUT_SIZE[::-1], 3)
# Resize in two steps: a box reduce to within this factor of the target, then the bilinear
# resize. 2.0 keeps the model's probability within 0.001 of a direct resize on real-size
# images (tests/shared/test_image_scaling.py) at a quarter of its cost.
RESIZE_REDUCING_GAP = 2.0
# Uploads with more pixels than this get a stored model-sized copy: below it, the worker's
# (reduced) decode costs about as much as writing and reading the copy.
MODEL_COPY_MIN_PIXELS = 16 * MODEL_INPUT_SIZE[0] * MODEL_INPUT_SIZE[1]
# Stored model-sized copies end in this (layout.prediction_upload's "extension").
MODEL_INPUT_EXTENSION = "model.npy"

# Magic numbers of formats we recognise. Only JPEG and PNG are accepted; the others are
# named so the client learns why its real image was refused.
_ACCEPTED_SIGNATURES = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png"}
_REFUSED_SIGNATURES = {
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"RIFF": "WebP",
    b"\x00\x00\x01\x00": "ICO",
}
EXTENSIONS = {"jpeg": "jpg", "png": "png"}
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png"}


# EXIF orientations that turn or flip the pixels (1 is upright; Pillow's exif_transpose table).
TURNING_ORIENTATIONS = frozenset(range(2, 9))


@dataclass(frozen=True)
class DecodedImage:
    """An upload that passed every check: its sniffed format and its RGB pixels.

    `upright` is the image turned by its EXIF orientation, in its own mode (16-bit, alpha),
    which is what a re-encode without metadata starts from. `width` and `height` are the
    upright file's; with `reduce_to`, `rgb` may be smaller (`reduced` then says so).
    """

    format: str
    width: int
    height: int
    rgb: Image.Image
    orientation: int = 1
    upright: Image.Image | None = None
    reduced: bool = False

    @property
    def turned(self) -> bool:
        """Whether the file's orientation tag turned the pixels (stripping then needs a re-encode)."""
        return self.orientation in TURNING_ORIENTATIONS

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def sniff_format(data: bytes) -> str:
    """Return "jpeg" or "png" from the leading bytes, or raise a BadInput that says why not."""
    if not data:
        raise InvalidImage("the file is empty")
    for signature, name in _ACCEPTED_SIGNATURES.items():
        if data.startswith(signature):
            return name
    for signature, name in _REFUSED_SIGNATURES.items():
        if data.startswith(signature):
            raise UnsupportedImageFormat(f"{name} images are not supported; send JPEG or PNG")
    head = data[:256].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml")) or b"<svg" in head:
        raise UnsupportedImageFormat("SVG images are not supported; send JPEG or PNG")
    raise InvalidImage("the file is not a JPEG or PNG image")


@dataclass(frozen=True)
class OpenedUpload:
    """An upload whose header passed the checks, its pixels not yet decoded."""

    format: str
    image: Image.Image
    width: int  # the file's own size (a reduced decode gives fewer pixels)
    height: int
    orientation: int
    reduced: bool
    decode_bytes: int


def open_upload(
    data: bytes, *, max_bytes: int, max_pixels: int, reduce_to: tuple[int, int] | None = None
) -> OpenedUpload:
    """Check an upload's bytes, structure and header, and say what decoding it will cost.

    Cheap: nothing is decompressed. Raises PayloadTooLarge over `max_bytes`, ImageTooLarge over
    `max_pixels`, UnsupportedImageFormat, or InvalidImage (also for a file whose segments, chunks
    or fill bytes would cost more to walk than any real image's).
    """
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"the file has {len(data)} bytes; the limit is {max_bytes}")
    image_format = sniff_format(data)
    try:
        image_metadata.check_structure(data, image_format)
    except image_metadata.ExcessiveStructure as error:
        raise InvalidImage(f"{error}; refused before decoding") from error
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than raises) between 1x and 2x its own pixel limit; our
            # own limit below is the one that counts, so the warning is noise here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[image_format.upper()])
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLarge(f"the image has {width}x{height} pixels; the limit is {max_pixels} pixels")
            orientation = _orientation(image, data)
            turned = orientation in TURNING_ORIENTATIONS
            reduced = _draft(image, reduce_to) if not turned else False
    except (ImageTooLarge, InvalidImage):
        raise
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"the image has too many pixels: {error}") from error
    except (OSError, SyntaxError, ValueError, Image.UnidentifiedImageError) as error:
        raise InvalidImage(f"the {image_format.upper()} file is damaged or truncated: {error}") from error
    return OpenedUpload(
        image_format, image, width, height, orientation, reduced, decode_bytes(image.mode, image.size, turned)
    )


# Bytes per pixel as Pillow holds a decoded image: 1 for 1-bit, grey and palette, 2 for 16-bit
# grey, 4 for everything else (RGB is stored as 4 bytes a pixel too).
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Converting to RGB holds an RGB copy beside the decoded pixels; 16-bit grey passes through
# 32-bit integers and 8-bit grey on the way (_to_rgb).
_RGB_COPY_BYTES = 4
_WIDE_GREY_EXTRA_BYTES = 5


def decode_bytes(mode: str, size: tuple[int, int], turned: bool) -> int:
    """Peak bytes of pixels held while an image of this mode and size is decoded to RGB."""
    per_pixel = _BYTES_PER_PIXEL.get(mode, 4)
    if mode != "RGB":
        per_pixel += _RGB_COPY_BYTES
    if mode.startswith("I"):
        per_pixel += _WIDE_GREY_EXTRA_BYTES
    if turned:  # exif_transpose makes a turned copy of the decoded pixels
        per_pixel *= 2
    return size[0] * size[1] * per_pixel


class DecodeBudget:
    """The bytes of decoded pixels one process may hold at once, shared by its threads.

    Each decode reserves its cost (`decode_bytes`, known from the header) before decompressing
    and gives it back when its pixels are dropped: a few bomb PNGs of 120 KB that each decode
    to 160 MB wait for one another instead of growing the process by a gigabyte.
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._reserved = 0
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, cost: int, wait_s: float) -> Iterator[None]:
        """Hold `cost` bytes for the block. ImageTooLarge if it can never fit; Overloaded after `wait_s`."""
        if cost > self.capacity_bytes:
            limit = _megabytes(self.capacity_bytes)
            raise ImageTooLarge(f"the image decodes to {_megabytes(cost)} MB of pixels; the limit is {limit} MB")
        with self._changed:
            if not self._changed.wait_for(lambda: self._reserved + cost <= self.capacity_bytes, timeout=wait_s):
                raise Overloaded("other large images are being decoded; retry shortly")
            self._reserved += cost
        try:
            yield
        finally:
            with self._changed:
                self._reserved -= cost
                self._changed.notify_all()


# For callers whose decodes need no bound (the trainer reading its own dataset, tests).
UNLIMITED_DECODE_BUDGET = DecodeBudget(sys.maxsize)


def _megabytes(size: int) -> int:
    return round(size / 1_000_000)


def decode_upload(
    data: bytes, *, max_bytes: int, max_pixels: int, reduce_to: tuple[int, int] | None = None
) -> DecodedImage:
    """Check an uploaded file completely and return it as upright RGB pixels.

    Raises what `open_upload` raises, and InvalidImage for pixels that do not decode.
    With `reduce_to`, a JPEG is decoded at the smallest DCT scale that still covers that size
    (every byte is still decoded, so damage is caught the same), unless its orientation turns
    it: then the full-size upright pixels are needed to store it without the tag.
    """
    return _decode(open_upload(data, max_bytes=max_bytes, max_pixels=max_pixels, reduce_to=reduce_to), len(data))


@contextmanager
def decoded_upload(
    data: bytes,
    *,
    max_bytes: int,
    max_pixels: int,
    budget: DecodeBudget,
    wait_s: float,
    reduce_to: tuple[int, int] | None = None,
) -> Iterator[DecodedImage]:
    """`decode_upload` within `budget`: the pixels count against it until the block ends.

    Keep nothing of the image beyond the block but what is small (the model input, the bytes to store).
    """
    opened = open_upload(data, max_bytes=max_bytes, max_pixels=max_pixels, reduce_to=reduce_to)
    with budget.reserve(opened.decode_bytes, wait_s):
        yield _decode(opened, len(data))


def _decode(opened: OpenedUpload, size: int) -> DecodedImage:
    image, image_format, orientation = opened.image, opened.format, opened.orientation
    width, height = opened.width, opened.height
    try:
        # The whole file to the decoder in one call (Pillow's default is 64 KiB per call): each
        # call gives up and takes back the GIL, which a busy gateway's threads hold in turn.
        image.decodermaxblock = max(image.decodermaxblock, size)
        image.load()
        # exif_transpose copies even an upright image: 160 MB more for a 40 MP one.
        upright = ImageOps.exif_transpose(image) if orientation in TURNING_ORIENTATIONS else image
        rgb = _to_rgb(upright)
    except Image.DecompressionBombError as error:
        raise ImageTooLarge(f"the image has too many pixels: {error}") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidImage(f"the {image_format.upper()} file is damaged or truncated: {error}") from error
    if orientation in {5, 6, 7, 8}:  # these turn by a quarter: the upright file is the other way round
        width, height = height, width
    return DecodedImage(
        format=image_format,
        width=width,
        height=height,
        rgb=rgb,
        orientation=orientation,
        upright=None if opened.reduced else upright,
        reduced=opened.reduced,
    )


def _draft(image: Image.Image, reduce_to: tuple[int, int] | None) -> bool:
    """Ask the JPEG decoder for a 1/2, 1/4 or 1/8 scale still at least `reduce_to`; True if it scales."""
    if reduce_to is None or image.format != "JPEG":
        return False
    full_size = image.size
    image.draft(image.mode, reduce_to)  # keeps the mode: only the scale changes
    return image.size != full_size


def _orientation(image: Image.Image, data: bytes) -> int:
    """The EXIF (or XMP) orientation exif_transpose will apply; 1 when absent or unreadable.

    A PNG's eXIf chunk may follow the pixel data, and Pillow decodes the whole image to look
    for it: the chunk is found by walking the file instead, so the header check stays cheap.
    """
    try:
        if image.format == "PNG":
            chunk = image_metadata.png_exif(data)
            if chunk is None:
                return 1
            exif = Image.Exif()
            exif.load(b"Exif\x00\x00" + chunk)
            value = exif.get(0x0112, 1)
        else:
            value = image.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, TypeError, image_metadata.MalformedStructure):
        return 1
    return value if isinstance(value, int) else 1


def strip_metadata(data: bytes, image: DecodedImage) -> bytes:
    """The bytes to store for an upload that passed `decode_upload`: no EXIF, XMP, ICC, comments, text.

    Lossless (segments or chunks filtered, pixel data copied) unless the orientation tag turned
    the image, or the file's structure is too odd to walk; then the upright pixels are re-encoded.
    """
    if not image.turned:
        try:
            if image.format == "jpeg":
                return image_metadata.strip_jpeg(data)
            return image_metadata.strip_png(data)
        except image_metadata.MalformedStructure:
            pass  # Pillow decoded it anyway: re-encoding what it decoded is the safe way out
    upright = image.upright if image.upright is not None else _full_size_upright(data, image.format)
    return image_metadata.reencode(upright, image.format)


def _full_size_upright(data: bytes, image_format: str) -> Image.Image:
    """Decode again at full size: a reduced decode kept no full-size pixels (an odd file; rare)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data), formats=[image_format.upper()])
        image.load()
        return ImageOps.exif_transpose(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any decoded mode (CMYK, L, LA, P, RGBA, 16-bit) to 8-bit RGB."""
    if image.mode in {"I", "I;16", "I;16B", "I;16L", "I;16N"}:
        # 16-bit grayscale: scale to 8 bits instead of letting convert() clip at 255.
        pixels = np.asarray(image, dtype=np.uint32)
        peak = 65535 if pixels.max(initial=0) > 255 else 255
        scaled = (pixels * 255 // peak).astype(np.uint8)
        return Image.fromarray(scaled).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def to_model_input(rgb: Image.Image) -> np.ndarray:
    """Resize RGB pixels to the model's 224x224 input, uint8 HWC (the model rescales itself)."""
    if rgb.size != MODEL_INPUT_SIZE:
        rgb = rgb.resize(MODEL_INPUT_SIZE, Image.Resampling.BILINEAR, reducing_gap=RESIZE_REDUCING_GAP)
    return np.asarray(rgb, dtype=np.uint8)


def model_input_from_bytes(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Decode (reduced), check and resize in one step: the one path of the gateway, worker and trainer."""
    image = decode_upload(data, max_bytes=max_bytes, max_pixels=max_pixels, reduce_to=MODEL_INPUT_SIZE)
    return to_model_input(image.rgb)


def wants_model_copy(image: DecodedImage) -> bool:
    """Whether a model-sized copy should be stored beside this upload (see MODEL_COPY_MIN_PIXELS)."""
    return image.width * image.height > MODEL_COPY_MIN_PIXELS


def encode_model_input(pixels: np.ndarray) -> bytes:
    """The model input as a .npy file (no pickle): 150 KB the worker reads instead of decoding again."""
    if pixels.shape != MODEL_INPUT_SHAPE or pixels.dtype != np.uint8:
        raise ValueError(f"not a model input: {pixels.shape} {pixels.dtype}")
    buffer = io.BytesIO()
    np.save(buffer, pixels, allow_pickle=False)
    return buffer.getvalue()


def decode_model_input(data: bytes) -> np.ndarray:
    """Read what `encode_model_input` wrote; InvalidImage for anything else."""
    try:
        pixels = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise InvalidImage(f"the stored model input is unreadable: {error}") from error
    if not isinstance(pixels, np.ndarray) or pixels.shape != MODEL_INPUT_SHAPE or pixels.dtype != np.uint8:
        raise InvalidImage("the stored model input has the wrong shape or type")
    return pixels


def model_input_for_key(key: str, data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """The model input from a stored object: a model-sized copy as it is, an upload decoded."""
    if key.endswith("." + MODEL_INPUT_EXTENSION):
        return decode_model_input(data)
    return model_input_from_bytes(data, max_bytes=max_bytes, max_pixels=max_pixels)

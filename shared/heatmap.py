"""Heat maps: where the served model found evidence of malignancy, drawn over the stored image.

The served artifact's class activation output (shared/model/export.serving_graph) gives, for
each of the last feature map's 7x7 locations, its share of the malignant logit: the head's
weights applied there, so the logit is their mean plus the bias (class activation mapping; no
gradients, no second model). The model sees the whole stored image squashed to 224x224
(shared/images.to_model_input), so the grid spans the whole image, each cell a 7th of its
width and height however wide the image is.

What is drawn is the positive evidence only (ReLU), scaled by its own maximum:

- negative contributions argue for benign; painting them too would mark the places that
  argue *against* the answer alongside those that argue for it. The map answers one question:
  where did the model see malignancy?
- the scale is relative: the strongest location of each image is full colour. The logits of
  different images differ by a factor of ten or more, so an absolute scale would draw most
  maps nearly transparent. How *much* evidence there is overall is what the probability says.
- an image with no positive evidence anywhere gets no colour at all (its map is all zero).

Cost (bench/heatmap.py, docs/trust.md#heat-maps): a few milliseconds for a typical
upload. The overlay is drawn at the stored image's size up to `MAX_SIDE` pixels on the longer
side; larger images are drawn at that size (a JPEG decoded at a reduced DCT scale), because a
12 MP PNG overlay costs about a second to encode and shows nothing a screen could.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from shared.errors import HeatmapUnavailable
from shared.images import RESIZE_REDUCING_GAP, decode_upload
from shared.messaging.schemas import PredictionResult

GRID_SHAPE = (7, 7)
# The longer side of the overlay, in pixels, at most: ISIC images (600x450, 1024x768) keep
# their size; camera images are drawn at this size (bench/heatmap.py measured why).
MAX_SIDE = 1024
# Opacity of the colour where the evidence is strongest; weaker evidence is more transparent,
# so the lesion stays visible under the map and a location without evidence is not coloured.
MAX_OPACITY = 0.6
# Viridis (matplotlib's default map) at nine even steps: ordered light to dark for every
# reader, colour-blind safe, and its blues and greens stand out from skin's browns and pinks.
_COLOUR_STOPS = (
    (68, 1, 84),
    (71, 44, 122),
    (59, 81, 139),
    (44, 113, 142),
    (33, 144, 141),
    (39, 173, 129),
    (92, 200, 99),
    (170, 220, 50),
    (253, 231, 37),
)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_SUB_FILTER = 1  # each byte minus the same channel of the pixel to its left


def _colour_tables() -> tuple[list[int], list[int], list[int]]:
    """The colour map as one 256-entry table per channel (what `Image.point` takes)."""
    stops = np.asarray(_COLOUR_STOPS, dtype=np.float64)
    positions = np.linspace(0.0, 1.0, len(stops))
    levels = np.linspace(0.0, 1.0, 256)
    red, green, blue = (np.rint(np.interp(levels, positions, stops[:, c])).astype(int).tolist() for c in range(3))
    return red, green, blue


_RED, _GREEN, _BLUE = _colour_tables()
_OPACITY = [round(level * MAX_OPACITY) for level in range(256)]


def class_activation_of(result: PredictionResult) -> list[list[float]]:
    """The grid a prediction's heat map is drawn from; HeatmapUnavailable, saying why, if none."""
    if result.error:
        raise HeatmapUnavailable(f"prediction {result.job_id} failed ({result.error.get('code')}): nothing to draw")
    if result.class_activation is None:
        raise HeatmapUnavailable(
            f"the heat map is not available for model version {result.model_version}: it has no class activation"
            " output (versions trained since heat maps were added have one)"
        )
    return result.class_activation


def evidence_map(class_activation: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """The 7x7 positive evidence for malignant, scaled to [0, 1] by its maximum (all zero if none).

    Raises HeatmapUnavailable for anything but a finite 7x7 grid (a damaged result).
    """
    try:
        grid = np.asarray(class_activation, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise HeatmapUnavailable(f"the stored class activation is not a grid of numbers: {error}") from error
    if grid.shape != GRID_SHAPE or not np.all(np.isfinite(grid)):
        raise HeatmapUnavailable(f"the stored class activation is not a finite 7x7 grid (shape {grid.shape})")
    positive = np.maximum(grid, 0.0)
    peak = float(positive.max())
    return positive / peak if peak > 0 else positive


def stretch(evidence: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The 7x7 map bilinearly stretched over an image of `size` (width, height), float32.

    Each cell's value sits at its centre, as the model's receptive fields do; Pillow's bilinear
    resize places samples at pixel centres the same way (TensorFlow's `half_pixel_centers`).
    """
    grid = Image.fromarray(np.asarray(evidence, dtype=np.float32), mode="F")
    return np.asarray(grid.resize(size, Image.Resampling.BILINEAR))


def upsample(evidence: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """`stretch` as levels 0-255: what the colour map and the opacity are looked up by."""
    return Image.fromarray(np.rint(np.clip(stretch(evidence, size), 0.0, 1.0) * 255.0).astype(np.uint8))


def overlay(rgb: Image.Image, evidence: np.ndarray) -> Image.Image:
    """`rgb` with the evidence map coloured over it, more opaque where the evidence is stronger."""
    levels = upsample(evidence, rgb.size)
    colour = Image.merge("RGB", [levels.point(_RED), levels.point(_GREEN), levels.point(_BLUE)])
    return Image.composite(colour, rgb, levels.point(_OPACITY))


def overlay_size(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """The stored image's size, scaled down (aspect kept) when its longer side exceeds `max_side`."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def render_heatmap(
    image: bytes,
    class_activation: Sequence[Sequence[float]] | np.ndarray,
    *,
    max_bytes: int,
    max_pixels: int,
    max_side: int = MAX_SIDE,
) -> bytes:
    """The PNG overlay of a stored upload and its class activation.

    The upload is decoded by the project's own decoder within the upload limits (`max_bytes`,
    `max_pixels`), a large JPEG at the smallest DCT scale that still covers the overlay's size.
    """
    evidence = evidence_map(class_activation)
    decoded = decode_upload(image, max_bytes=max_bytes, max_pixels=max_pixels, reduce_to=(max_side, max_side))
    size = overlay_size(decoded.width, decoded.height, max_side)
    rgb = decoded.rgb
    if rgb.size != size:
        rgb = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=RESIZE_REDUCING_GAP)
    return encode_png(overlay(rgb, evidence))


def encode_png(rgb: Image.Image) -> bytes:
    """An 8-bit RGB PNG, every row Sub-filtered and run-length deflated.

    Pillow's PNG writer tries all five filters on every row and then deflates: 17 ms of CPU
    for a 600x450 overlay even at its fastest level, most of the render. One fixed filter and
    zlib's run-length strategy give files as small (the overlay is smooth) in half the time.
    """
    pixels = np.asarray(rgb.convert("RGB"), dtype=np.uint8)
    height, width, _ = pixels.shape
    rows = pixels.reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), dtype=np.uint8)
    filtered[:, 0] = _PNG_SUB_FILTER
    filtered[:, 1:4] = rows[:, :3]
    np.subtract(rows[:, 3:], rows[:, :-3], out=filtered[:, 4:])  # uint8 wraps modulo 256, as PNG wants
    deflate = zlib.compressobj(6, zlib.DEFLATED, zlib.MAX_WBITS, 9, zlib.Z_RLE)
    data = deflate.compress(filtered.tobytes()) + deflate.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, no interlace
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

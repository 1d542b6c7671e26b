"""Dataset statistics, pure: one image's numbers from its bytes, and the snapshot from many.

Per image (cached by content hash, so it is computed once per distinct image): decoded
width and height in pixels, 32-bin histograms of gray, red, green and blue levels (pixel
counts; bin `i` holds levels `8i .. 8i+7`), and the mean and standard deviation of the gray
level (0..255). Gray is Pillow's ITU-R 601-2 luma, `L = 0.299 R + 0.587 G + 0.114 B`, rounded.

The snapshot sums those with pandas. `counts` gives images per part (`train`, and `test`,
the held-out part) and label, pooled over the collections; `collections` gives the same per
collection, with whether it is external (held out whole, never trained on). Per-class numbers
(intensity, brightness, contrast) pool every collection and part: they describe what each
class looks like, not where its images are.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from shared.dataset import DatasetImage
from shared.errors import BadInput
from shared.images import UNLIMITED_DECODE_BUDGET, DecodeBudget, DecodedImage, decoded_upload
from shared.storage import layout

BINS = 32
# Cache entries carry this; an entry of another version is recomputed, so changing what
# is computed here only needs this number bumped.
ENTRY_VERSION = 1
CHANNELS = ("gray", "red", "green", "blue")
# Width and height histograms use at most this many equal bins.
SIZE_BINS = 20
# How long a decode waits for the process's decode budget (other threads' images) before failing.
BUDGET_WAIT_S = 120.0

Entry = dict[str, Any]

_SCALAR_COLUMNS = ("width", "height", "mean_gray", "std_gray")
_HISTOGRAM_COLUMNS = {channel: [f"{channel}_{index}" for index in range(BINS)] for channel in CHANNELS}
_NUMERIC_COLUMNS = [*_SCALAR_COLUMNS, *(name for names in _HISTOGRAM_COLUMNS.values() for name in names)]


def image_statistics(
    data: bytes, *, max_bytes: int, max_pixels: int, budget: DecodeBudget = UNLIMITED_DECODE_BUDGET
) -> Entry:
    """The cache entry of one image: sizes in pixels, histograms in pixel counts, gray in 0..255.

    An image that does not decode gets an entry with `error` (and no statistics), so a bad
    object is looked at once, not at every recomputation. Decoded within `budget` (Overloaded
    if it stays full for BUDGET_WAIT_S).
    """
    try:
        limits = {"max_bytes": max_bytes, "max_pixels": max_pixels}
        with decoded_upload(data, **limits, budget=budget, wait_s=BUDGET_WAIT_S) as decoded:
            return _statistics(decoded)
    except BadInput as error:
        return {"version": ENTRY_VERSION, "error": str(error)}


def _statistics(decoded: DecodedImage) -> Entry:
    rgb = np.asarray(decoded.rgb, dtype=np.uint8)
    gray = np.asarray(decoded.rgb.convert("L"), dtype=np.uint8)
    entry: Entry = {"version": ENTRY_VERSION, "width": decoded.width, "height": decoded.height}
    planes = {"gray": gray, "red": rgb[..., 0], "green": rgb[..., 1], "blue": rgb[..., 2]}
    for channel, plane in planes.items():
        # 256 levels / 32 bins = 8 levels per bin: a shift, exact and fast.
        entry[channel] = np.bincount((plane >> 3).ravel(), minlength=BINS).tolist()
    gray_levels = gray.astype(np.float64)
    entry["mean_gray"] = float(gray_levels.mean())
    entry["std_gray"] = float(gray_levels.std())  # population std over the image's pixels
    return entry


def is_current(entry: object) -> bool:
    """Whether a cached entry was made by this code (else it is recomputed)."""
    return isinstance(entry, dict) and entry.get("version") == ENTRY_VERSION


def entries_frame(images: Iterable[DatasetImage], entries: Mapping[str, Entry]) -> pd.DataFrame:
    """One row per dataset image: collection, part, label, sha256 and its statistics (NaN if
    undecodable).

    Histograms become columns `gray_0 .. blue_31`, so per-class sums are one groupby.
    """
    images = list(images)
    found = [entries.get(image.sha256, {}) for image in images]
    usable = [row for row, entry in enumerate(found) if "width" in entry and "error" not in entry]
    # Built as one numeric matrix, not row dicts: 7,500 images x 132 columns in milliseconds.
    numeric = np.full((len(images), len(_NUMERIC_COLUMNS)), np.nan)
    if usable:
        picked = [found[row] for row in usable]
        scalars = np.array([[entry[name] for name in _SCALAR_COLUMNS] for entry in picked], dtype=np.float64)
        histograms = [np.array([entry[channel] for entry in picked], dtype=np.float64) for channel in CHANNELS]
        numeric[usable] = np.hstack([scalars, *histograms])
    frame = pd.DataFrame(numeric, columns=_NUMERIC_COLUMNS)
    frame.insert(0, "collection", [image.collection for image in images])
    frame.insert(1, "part", [image.part for image in images])
    frame.insert(2, "label", [image.label for image in images])
    frame.insert(3, "sha256", [image.sha256 for image in images])
    return frame


def summarise(
    frame: pd.DataFrame, *, external: Iterable[str] = (), computed_at: float, work: Mapping[str, float]
) -> dict[str, Any]:
    """The snapshot document (docs/insights.md) from an `entries_frame`.

    `external` names the external collections. Every part and every label appear in each
    `counts` (zeros included), every collection with images in `collections` (by name), and
    every label in the per-class sections; a class without images has zero histograms and
    null brightness and contrast.
    """
    decoded = frame.dropna(subset=["width"])
    labels = list(layout.LABELS)
    external = set(external)
    return {
        "computed_at": computed_at,
        "image_count": len(frame),
        # Content addressing stores an image once, in whichever collection had it first; the
        # same hash under two keys is a duplicate (a leak between parts, or a label conflict).
        "duplicate_count": int(frame["sha256"].duplicated(keep=False).sum()),
        "counts": _counts(frame, labels),
        "collections": {
            name: {"external": name in external, "counts": _counts(rows, labels)}
            for name, rows in frame.groupby("collection")  # sorted by name
        },
        "sizes": _sizes(decoded),
        "intensity": _intensity(decoded, labels),
        "brightness": {label: _mean_std(decoded.loc[decoded["label"] == label, "mean_gray"]) for label in labels},
        "contrast": {label: _mean_std(decoded.loc[decoded["label"] == label, "std_gray"]) for label in labels},
        "work": dict(work),
    }


def _counts(frame: pd.DataFrame, labels: list[str]) -> dict[str, dict[str, int]]:
    """{part: {label: images}} for every part and label."""
    table = pd.crosstab(frame["part"], frame["label"]).reindex(
        index=list(layout.DATASET_PARTS), columns=labels, fill_value=0
    )
    return {part: {label: int(table.at[part, label]) for label in labels} for part in table.index}


def _sizes(decoded: pd.DataFrame) -> dict[str, Any]:
    points = decoded.groupby(["width", "height"]).size().reset_index(name="count")
    return {
        "points": [[int(row.width), int(row.height), int(row.count)] for row in points.itertuples()],
        "width": _histogram(decoded["width"].to_numpy()),
        "height": _histogram(decoded["height"].to_numpy()),
    }


def _histogram(values: np.ndarray) -> dict[str, list[float] | list[int]]:
    """Equal-width bins over [min, max + 1) pixels: at most SIZE_BINS, one per distinct value if fewer."""
    if values.size == 0:
        return {"edges": [], "counts": []}
    low, high = float(values.min()), float(values.max()) + 1.0
    bins = min(SIZE_BINS, len(np.unique(values)))
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _intensity(decoded: pd.DataFrame, labels: list[str]) -> dict[str, Any]:
    """Pooled histograms per class: summed pixel counts / total pixels, so each sums to 1."""
    sums = decoded.groupby("label")[_NUMERIC_COLUMNS[len(_SCALAR_COLUMNS) :]].sum()
    result: dict[str, Any] = {"bins": BINS}
    for label in labels:
        result[label] = {}
        for channel, columns in _HISTOGRAM_COLUMNS.items():
            counts = sums.loc[label, columns].to_numpy() if label in sums.index else np.zeros(BINS)
            total = counts.sum()
            result[label][channel] = (counts / total).tolist() if total > 0 else [0.0] * BINS
    return result


def _mean_std(values: pd.Series) -> dict[str, float | None]:
    """Mean and population std over images (std of one image is 0); nulls when there are none."""
    if values.empty:
        return {"mean": None, "std": None}
    array = values.to_numpy(dtype=np.float64)
    return {"mean": _finite(array.mean()), "std": _finite(array.std())}


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None

"""The labelled dataset in the store, content-addressed by sha256.

`datasets/{split}/{label}/{sha256}.{ext}`: the same image added twice (under any name, or
in any split) is stored once, so imports and uploads are idempotent and deduplicated.

What is stored has its metadata stripped (shared/images.py `strip_metadata`), and the hash
is of what is stored: the same picture sent with different EXIF is one image. The hash of
the bytes as sent is checked too, before any decoding, so a file stored before stripping
existed (whose key is the hash of its bytes as sent) is still a duplicate of itself.

Besides the layout's splits, `external` holds another collection's images (another clinic,
camera and case mix): it is never trained on, and the promotion gate checks candidates on it
as well as on `test`. Duplicates are found across splits, so no image is in `external` and
in a split that is trained on: whichever import comes second skips it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.errors import BadInput
from shared.images import EXTENSIONS, decode_upload, strip_metadata
from shared.storage import ObjectStore, layout

EXTERNAL_SPLIT = "external"
# Every split an import may fill.
SPLITS = (*layout.DATASET_SPLITS, EXTERNAL_SPLIT)


@dataclass(frozen=True)
class DatasetImage:
    """One stored image: where it is and what it is."""

    key: str
    split: str
    label: str
    sha256: str

    @classmethod
    def from_key(cls, key: str) -> DatasetImage:
        _, split, label, filename = key.split("/")
        return cls(key, split, label, filename.split(".")[0])


@dataclass(frozen=True)
class AddOutcome:
    """What happened to one file: "added", "duplicate" or "rejected" (with the reason)."""

    filename: str
    status: str
    sha256: str | None = None
    reason: str | None = None


def check_label(label: str) -> str:
    if label not in layout.LABELS:
        raise BadInput(f"label must be one of {', '.join(layout.LABELS)}; got {label[:40]!r}")
    return label


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise BadInput(f"split must be one of {', '.join(SPLITS)}; got {split[:40]!r}")
    return split


def iter_images(store: ObjectStore, split: str | None = None) -> Iterator[DatasetImage]:
    """Every stored dataset image, optionally of one split."""
    prefix = layout.dataset_prefix(split) if split else "datasets/"
    for key in store.list(prefix):
        if key.count("/") == 3:
            yield DatasetImage.from_key(key)


def known_hashes(store: ObjectStore) -> set[str]:
    """sha256 of every stored image, in any split: one listing instead of a probe per file."""
    return {image.sha256 for image in iter_images(store)}


def add_image(
    store: ObjectStore,
    data: bytes,
    *,
    split: str,
    label: str,
    filename: str,
    known: set[str],
    max_bytes: int,
    max_pixels: int,
) -> AddOutcome:
    """Check and store one labelled image unless its content is already in the dataset.

    `known` (from `known_hashes`) is updated, so duplicates within one batch are caught too.
    """
    sent_sha256 = hashlib.sha256(data).hexdigest()
    if sent_sha256 in known:
        return AddOutcome(filename, "duplicate", sent_sha256)
    try:
        image = decode_upload(data, max_bytes=max_bytes, max_pixels=max_pixels)
    except BadInput as error:
        return AddOutcome(filename, "rejected", reason=str(error))
    stored = strip_metadata(data, image)
    sha256 = hashlib.sha256(stored).hexdigest()
    if sha256 in known:
        return AddOutcome(filename, "duplicate", sha256)
    store.put(layout.dataset_image(split, label, sha256, image.extension), stored, image.content_type)
    known.add(sha256)
    return AddOutcome(filename, "added", sha256)


def iter_folder(root: Path, split: str | None = None) -> Iterator[tuple[str, str, Path]]:
    """(split, label, path) for each image of a `{train,test}/{benign,malignant}/*` folder, or,
    with `split`, of a `{benign,malignant}/*` folder whose images all go to that split."""
    if split is None:
        folders = [(name, label, root / name / label) for name in ("train", "test") for label in layout.LABELS]
    else:
        folders = [(split, label, root / label) for label in layout.LABELS]
    for folder_split, label, folder in folders:
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix.lower().lstrip(".") in {*EXTENSIONS.values(), "jpeg"}:
                    yield folder_split, label, path

"""The labelled dataset in the store: named collections, each with a held-out part.

`datasets/{collection}/{part}/{label}/{sha256}.{ext}`. A collection is one population of
images (HAM10000, ISIC 2020, Derm7pt, a clinic's own uploads); `part` is `train` or `test`,
the collection's held-out part, which is never trained on and is where the collection's
metrics come from. An external collection (`collection.json` says so) is held out whole.

Which part a new image goes to is decided once, when it is stored, from a hash of its group:
the patient when known, else the image's own content hash (`assign_part`). The hash does not
depend on what else is stored, so a later upload never moves an image across, and the same
images imported from a folder or uploaded through the API land in the same part. A folder
that already has `train/` and `test/` (HAM10000 with the ISIC 2018 test set) keeps its own.

Content addressing makes imports and uploads idempotent: the same image added twice, under
any name, in any collection, is stored once (the first collection keeps it). What is stored
has its metadata stripped (shared/images.py `strip_metadata`), and the hash is of what is
stored; the hash of the bytes as sent is checked too, before any decoding.
"""

from __future__ import annotations

import csv
import hashlib
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from shared.errors import BadInput, ObjectNotFound
from shared.images import (
    CONTENT_TYPES,
    EXTENSIONS,
    MODEL_INPUT_SIZE,
    UNLIMITED_DECODE_BUDGET,
    DecodeBudget,
    decode_upload,
    decoded_upload,
    strip_metadata,
)
from shared.storage import ObjectStore, get_json, layout, put_json

TRAIN_PART, TEST_PART = layout.DATASET_PARTS
# Where labelled uploads go when the client names no collection.
DEFAULT_UPLOAD_COLLECTION = "uploads"
_COLLECTION_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_PATIENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
CONTENT_TYPE_OF_EXTENSION = {EXTENSIONS[kind]: CONTENT_TYPES[kind] for kind in EXTENSIONS}
# Images whose records are written together, so a crash loses no patient of a stored image;
# a batch is also stored once it holds this many bytes, so a large upload is not all in memory.
_BATCH = 200
_BATCH_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Collection:
    """A named population of images; `holdout_fraction` is fixed when it is created."""

    name: str
    external: bool = False
    holdout_fraction: float = 0.2


@dataclass(frozen=True)
class DatasetImage:
    """One stored image: where it is and what it is."""

    key: str
    collection: str
    part: str
    label: str
    sha256: str

    @classmethod
    def from_key(cls, key: str) -> DatasetImage | None:
        """The image a key names, or None for the collections' other objects."""
        parts = key.split("/")
        if len(parts) != 5 or parts[2] not in layout.DATASET_PARTS or parts[3] not in layout.LABELS:
            return None
        return cls(key, parts[1], parts[2], parts[3], parts[4].split(".")[0])


@dataclass(frozen=True)
class AddOutcome:
    """What happened to one file: "added", "duplicate" or "rejected" (with the reason)."""

    filename: str
    status: str
    sha256: str | None = None
    reason: str | None = None
    part: str | None = None


@dataclass(frozen=True)
class LabelledFile:
    """One file to add: its name, label, bytes and patient (None when unknown)."""

    filename: str
    label: str
    data: bytes
    patient: str | None = None


def check_label(label: str) -> str:
    if label not in layout.LABELS:
        raise BadInput(f"label must be one of {', '.join(layout.LABELS)}; got {label[:40]!r}")
    return label


def check_collection_name(name: str) -> str:
    if not _COLLECTION_NAME.fullmatch(name):
        raise BadInput(
            "collection must be 1-40 characters of a-z, 0-9, '_' and '-', starting with a letter or digit;"
            f" got {name[:60]!r}"
        )
    return name


def check_patient(patient: str) -> str:
    if not _PATIENT.fullmatch(patient):
        raise BadInput(f"patient must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'; got {patient[:70]!r}")
    return patient


def group_of(sha256: str, patient: str | None) -> str:
    """What is held out (and validated) together: a patient's images, or one image alone."""
    return f"patient:{patient}" if patient else f"image:{sha256}"


def share_of(group: str, purpose: str) -> float:
    """A uniform number in [0, 1) fixed by the group and the purpose ("holdout", "validation")."""
    return int(hashlib.sha256(f"{purpose}:{group}".encode()).hexdigest()[:13], 16) / 16**13


def assign_part(collection: Collection, sha256: str, patient: str | None) -> str:
    """`test` (held out) or `train` for a new image of `collection`: for ever the same."""
    if collection.external or share_of(group_of(sha256, patient), "holdout") < collection.holdout_fraction:
        return TEST_PART
    return TRAIN_PART


def open_collection(
    store: ObjectStore, name: str, *, external: bool | None = None, holdout_fraction: float
) -> Collection:
    """The stored collection `name`, created with these settings when it is new.

    An existing collection keeps the held-out share it was created with, so a changed setting
    never moves an image; asking for an external collection by a trained-on name (or the other
    way round) is refused, since images would then be trained on and judged on at once.
    `external=None` takes the collection as it is stored (a new one is trained on).
    """
    check_collection_name(name)
    if not store.exists(layout.collection_record(name)):
        created = Collection(name, bool(external), holdout_fraction)
        put_json(store, layout.collection_record(name), {**asdict(created), "created_at": time.time()})
        return created
    stored = read_collection(store, name)
    if external is not None and stored.external != external:
        kind = "external (never trained on)" if stored.external else "trained on"
        raise BadInput(f"collection {name!r} is {kind}; images cannot be added to it as the other kind")
    return stored


def read_collection(store: ObjectStore, name: str) -> Collection:
    """A collection's record; a collection stored without one is a trained-on one."""
    try:
        document = get_json(store, layout.collection_record(name))
    except ObjectNotFound:
        return Collection(name)
    return Collection(document["name"], bool(document["external"]), float(document["holdout_fraction"]))


def read_patients(store: ObjectStore, collection: str) -> dict[str, str]:
    """sha256 -> patient for every image of `collection` stored with one."""
    patients: dict[str, str] = {}
    for key in store.list(f"{layout.dataset_prefix(collection)}patients/"):
        patients.update(get_json(store, key))
    return patients


def iter_images(store: ObjectStore, collection: str | None = None) -> Iterator[DatasetImage]:
    """Every stored dataset image, optionally of one collection."""
    for key in store.list(layout.dataset_prefix(collection)):
        image = DatasetImage.from_key(key)
        if image is not None:
            yield image


def known_hashes(store: ObjectStore) -> set[str]:
    """sha256 of every stored image, in any collection: one listing instead of a probe per file."""
    return {image.sha256 for image in iter_images(store)}


def add_images(
    store: ObjectStore,
    collection: Collection,
    files: Iterable[LabelledFile],
    *,
    part: str | None = None,
    known: set[str],
    max_bytes: int,
    max_pixels: int,
    budget: DecodeBudget = UNLIMITED_DECODE_BUDGET,
    budget_wait_s: float = 10.0,
) -> list[AddOutcome]:
    """Check and store each labelled file unless its content is already in the dataset.

    `part` forces the part (a folder with its own train/ and test/); otherwise each image is
    assigned by `assign_part`. `known` (from `known_hashes`) is updated, so duplicates within
    one call are caught too. Patients are recorded before the images of each batch are stored.
    Files are read from `files` one at a time, and each is decoded within `budget`.
    """
    outcomes: list[AddOutcome | None] = []  # in the order sent; None until the batch is stored
    batch: list[tuple[int, CheckedImage]] = []
    batch_bytes = 0
    checked_files = check_files(
        files,
        collection,
        part=part,
        known=known,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        budget=budget,
        budget_wait_s=budget_wait_s,
    )
    for checked in checked_files:
        if isinstance(checked, AddOutcome):
            outcomes.append(checked)
            continue
        outcomes.append(None)
        batch.append((len(outcomes) - 1, checked))
        batch_bytes += len(checked.stored)
        if len(batch) >= _BATCH or batch_bytes >= _BATCH_BYTES:
            _store_batch(store, collection, batch, outcomes)
            batch, batch_bytes = [], 0
    _store_batch(store, collection, batch, outcomes)
    return [outcome for outcome in outcomes if outcome is not None]


@dataclass(frozen=True)
class CheckedImage:
    """A checked, new file: its bytes without metadata (what is stored), where it goes, its hash."""

    file: LabelledFile
    part: str
    sha256: str
    stored: bytes
    extension: str
    content_type: str


def check_files(
    files: Iterable[LabelledFile],
    collection: Collection,
    *,
    part: str | None = None,
    known: set[str],
    max_bytes: int,
    max_pixels: int,
    budget: DecodeBudget = UNLIMITED_DECODE_BUDGET,
    budget_wait_s: float = 10.0,
) -> Iterator[AddOutcome | CheckedImage]:
    """Each file checked in turn, in order: an AddOutcome for a duplicate or rejected one, a
    CheckedImage (its part chosen as `add_images` says) for a new one, whose hash joins `known`.
    Nothing is stored: the caller stores (`add_images`) or stages (shared/dataset_staging.py)."""
    limits = _Limits(max_bytes, max_pixels, budget, budget_wait_s)
    for file in files:
        yield _prepare(file, collection, part, known, limits)


@dataclass(frozen=True)
class _Limits:
    max_bytes: int
    max_pixels: int
    budget: DecodeBudget
    budget_wait_s: float


def _prepare(
    file: LabelledFile, collection: Collection, part: str | None, known: set[str], limits: _Limits
) -> AddOutcome | CheckedImage:
    """The outcome of a duplicate or rejected file; what to store of a new one."""
    check_label(file.label)
    sent_sha256 = hashlib.sha256(file.data).hexdigest()
    if sent_sha256 in known:
        return AddOutcome(file.filename, "duplicate", sent_sha256)
    try:
        stored, image_format = _checked_and_stripped(file.data, limits)
    except BadInput as error:
        return AddOutcome(file.filename, "rejected", reason=str(error))
    sha256 = hashlib.sha256(stored).hexdigest()
    if sha256 in known:
        return AddOutcome(file.filename, "duplicate", sha256)
    known.add(sha256)
    chosen = part or assign_part(collection, sha256, file.patient)
    return CheckedImage(file, chosen, sha256, stored, EXTENSIONS[image_format], CONTENT_TYPES[image_format])


def _checked_and_stripped(data: bytes, limits: _Limits) -> tuple[bytes, str]:
    """The bytes to store and the image's format; the pixels are dropped before this returns.

    Decoded at the model's scale: only checked, never kept (what is stored is the file's own
    bytes without metadata, or, for an image its orientation tag turns, its full-size pixels).
    """
    with decoded_upload(
        data,
        max_bytes=limits.max_bytes,
        max_pixels=limits.max_pixels,
        budget=limits.budget,
        wait_s=limits.budget_wait_s,
        reduce_to=MODEL_INPUT_SIZE,
    ) as image:
        return strip_metadata(data, image), image.format


def _store_batch(
    store: ObjectStore, collection: Collection, batch: list[tuple[int, CheckedImage]], outcomes: list[AddOutcome | None]
) -> None:
    patients = {ready.sha256: ready.file.patient for _, ready in batch if ready.file.patient}
    if patients:
        put_json(store, layout.patient_record(collection.name, f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"), patients)
    for index, ready in batch:
        key = layout.dataset_image(collection.name, ready.part, ready.file.label, ready.sha256, ready.extension)
        store.put(key, ready.stored, ready.content_type)
        outcomes[index] = AddOutcome(ready.file.filename, "added", ready.sha256, part=ready.part)


def iter_folder(root: Path) -> Iterator[tuple[str | None, str, Path]]:
    """(part, label, path) for each image of a `{train,test}/{benign,malignant}/*` folder, whose
    parts are its own, or of a `{benign,malignant}/*` folder, whose parts are assigned (None)."""
    if any((root / part).is_dir() for part in layout.DATASET_PARTS):
        folders = [(part, label, root / part / label) for part in layout.DATASET_PARTS for label in layout.LABELS]
    else:
        folders = [(None, label, root / label) for label in layout.LABELS]
    for part, label, folder in folders:
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix.lower().lstrip(".") in {*EXTENSIONS.values(), "jpeg"}:
                    yield part, label, path


def read_manifest_patients(manifest: Path) -> dict[str, str]:
    """Map a file's path relative to the folder -> patient, from a manifest.csv.

    The manifest needs a `path` column; `patient` is optional (an empty map without it).
    Raises BadInput for a file that is not such a CSV.
    """
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "path" not in columns:
            raise BadInput(f"{manifest.name} has no 'path' column (columns: {', '.join(columns) or 'none'})")
        if "patient" not in columns:
            return {}
        return {row["path"]: check_patient(row["patient"]) for row in reader if row.get("patient")}


def migrate_legacy_layout(
    store: ObjectStore, *, data_collection: str, external_collection: str | None, holdout_fraction: float
) -> int:
    """Move images of the layout before collections (`datasets/{split}/{label}/{file}`) into
    collections; returns how many moved. Idempotent: each is copied, then deleted.

    `train` and `test` were imported from DATA_DIR and become `data_collection`'s parts;
    `incoming` (API uploads) becomes the `uploads` collection, assigned like a new upload;
    `external` becomes `external_collection`, held out whole.
    """
    records: dict[tuple[str, bool], Collection] = {}

    def target(name: str, external: bool) -> Collection:  # one record read per collection
        if (name, external) not in records:
            records[name, external] = open_collection(store, name, external=external, holdout_fraction=holdout_fraction)
        return records[name, external]

    moved = 0
    for key in store.list(layout.DATASETS_PREFIX):
        parts = key.split("/")
        if len(parts) != 4 or parts[1] not in (*layout.DATASET_PARTS, "incoming", "external"):
            continue
        _, split, label, filename = parts
        sha256, extension = filename.split(".")[0], filename.rsplit(".", 1)[-1]
        if split == "external":
            if external_collection is None:
                continue  # kept where it is until EXTERNAL_DATA_DIR names its collection
            collection, part = target(external_collection, True), TEST_PART
        elif split == "incoming":
            collection = target(DEFAULT_UPLOAD_COLLECTION, False)
            part = assign_part(collection, sha256, None)
        else:
            collection, part = target(data_collection, False), split
        key_to = layout.dataset_image(collection.name, part, label, sha256, extension)
        store.put(key_to, store.get(key), CONTENT_TYPE_OF_EXTENSION.get(extension, "application/octet-stream"))
        store.delete(key)
        moved += 1
    return moved


def stored_sha256(data: bytes, *, max_bytes: int, max_pixels: int) -> str:
    """The content hash an image is stored under (its bytes without metadata)."""
    return hashlib.sha256(
        strip_metadata(data, decode_upload(data, max_bytes=max_bytes, max_pixels=max_pixels))
    ).hexdigest()

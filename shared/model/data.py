"""Labelled images for training and evaluation: loading, the validation split, augmentation.

Images are decoded with the same functions the worker uses (`shared.images`), so training,
evaluation and serving see identical pixels. A whole split is held in memory as one uint8
array (HAM10000's train/ is about 0.9 GB). Every image knows its collection and its group
(patient, or the image alone): validation is drawn by group, so no patient straddles it.
"""

from __future__ import annotations

import csv
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import tensorflow as tf

from shared import dataset
from shared.images import model_input_from_bytes
from shared.serving.domain import in_fitted_half
from shared.storage import ObjectStore, layout

LABELS = layout.LABELS  # index 0 = benign, 1 = malignant
# HAM10000 diagnoses, used as an auxiliary training target when a manifest provides them.
DIAGNOSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Generous limits: training data is trusted, but decoding goes through the same checks.
_MAX_BYTES = 50 * 1024 * 1024
_MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class LabelledImages:
    """A split in memory: pixels uint8 (N, 224, 224, 3), labels 0/1, diagnosis index or -1."""

    pixels: np.ndarray
    labels: np.ndarray
    diagnoses: np.ndarray
    names: tuple[str, ...]
    content_hash: str  # sha256 over sorted "label/sha256-of-file" lines: data provenance
    digests: tuple[str, ...] = ()  # sha256 of each image file, when known
    collections: tuple[str, ...] = ()  # each image's collection, when known
    groups: tuple[str, ...] = ()  # each image's group (dataset.group_of), when known

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def has_diagnoses(self) -> bool:
        return bool(len(self.diagnoses)) and bool(np.all(self.diagnoses >= 0))

    def content_hash_of(self, indices: np.ndarray) -> str:
        """The content hash of the images at `indices`, without copying their pixels."""
        # Content-addressed when the file hashes are known; by file name otherwise.
        if self.digests:
            keys = [f"{LABELS[self.labels[i]]}/{self.digests[i]}" for i in indices]
        else:
            keys = [self.names[i] for i in indices]
        return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()

    def subset(self, indices: np.ndarray) -> LabelledImages:
        return LabelledImages(
            self.pixels[indices],
            self.labels[indices],
            self.diagnoses[indices],
            tuple(self.names[i] for i in indices),
            self.content_hash_of(indices),
            tuple(self.digests[i] for i in indices) if self.digests else (),
            tuple(self.collections[i] for i in indices) if self.collections else (),
            tuple(self.groups[i] for i in indices) if self.groups else (),
        )

    def collection_indices(self) -> dict[str, np.ndarray]:
        """Indices of each collection's images (one unnamed collection when unknown)."""
        names = np.array(self.collections or ("",) * len(self))
        return {name: np.flatnonzero(names == name) for name in dict.fromkeys(names.tolist())}


@dataclass(frozen=True)
class CollectionImages:
    """One collection in memory: its training part (validation is drawn from it) and its
    held-out part, either None when empty. External collections have no training part."""

    name: str
    external: bool
    train: LabelledImages | None
    test: LabelledImages | None


def read_manifest_diagnoses(manifest: Path) -> dict[str, str]:
    """Map file name -> diagnosis code from a HAM10000-style manifest.csv (columns path, dx)."""
    with manifest.open(newline="") as handle:
        return {Path(row["path"]).name: row["dx"] for row in csv.DictReader(handle) if row.get("dx")}


def load_folder(
    folder: Path,
    *,
    diagnoses: dict[str, str] | None = None,
    patients: dict[str, str] | None = None,
    collection: str = "",
    limit: int | None = None,
    workers: int = 4,
) -> LabelledImages:
    """Load `folder/{benign,malignant}/*` (JPEG/PNG); `limit` caps images per class.

    `diagnoses` and `patients` map a file name to its diagnosis code and patient.
    """
    entries: list[tuple[str, int, Path]] = []
    for label_index, label in enumerate(LABELS):
        files = sorted(p for p in (folder / label).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images in {folder / label}")
        entries += [(f"{label}/{p.name}", label_index, p) for p in files[:limit]]
    return _decode_all(entries, lambda path: path.read_bytes(), diagnoses or {}, patients or {}, collection, workers)


@dataclass(frozen=True)
class Photographs:
    """Clinical photographs (not dermoscopy) that train the `not_dermoscopy` detector."""

    pixels: np.ndarray
    source: str  # which folder and which half of it, for the card


def load_photographs(folder: Path) -> Photographs:
    """The fitted half of a folder of clinical photographs (benign/, malignant/): the images
    whose file name's SHA-256 starts with an even byte (`domain.in_fitted_half`); the other
    half is never fitted, so the warning can be reported on it."""
    images = load_folder(folder)
    fitted = np.array([in_fitted_half(Path(name).name) for name in images.names], dtype=bool)
    return Photographs(
        images.pixels[fitted],
        f"{folder.name}: {int(fitted.sum())} of {len(images)} images, those whose file name's SHA-256 starts"
        " with an even byte; the rest are kept out for reporting",
    )


def photographs_from(folder: Path | None) -> Photographs | None:
    """`load_photographs(folder)`; None when no folder is configured, or it holds no images
    (compose mounts an empty folder unless one is named)."""
    if folder is None or not any(
        path.suffix.lower() in IMAGE_SUFFIXES for label in LABELS for path in (folder / label).glob("*")
    ):
        return None
    return load_photographs(folder)


def load_store(
    store: ObjectStore,
    collection: str,
    part: str,
    *,
    patients: dict[str, str] | None = None,
    limit: int | None = None,
    workers: int = 8,
) -> LabelledImages:
    """Load `datasets/{collection}/{part}/{benign,malignant}/*` from the object store.

    `patients` (sha256 -> patient, `dataset.read_patients`) is read from the store when not given.
    """
    entries: list[tuple[str, int, str]] = []
    prefix = layout.dataset_prefix(collection, part)
    for label_index, label in enumerate(LABELS):
        keys = sorted(store.list(f"{prefix}{label}/"))
        entries += [(f"{label}/{key.rsplit('/', 1)[-1]}", label_index, key) for key in keys[:limit]]
    if not entries:
        raise FileNotFoundError(f"no images under {prefix}")
    if patients is None:
        patients = dataset.read_patients(store, collection)
    filenames = [name.split("/")[1] for name, _, _ in entries]  # "{sha256}.{ext}"
    by_name = {
        filename: patients[filename.split(".")[0]] for filename in filenames if filename.split(".")[0] in patients
    }
    return _decode_all(entries, store.get, {}, by_name, collection, workers)


def load_store_collections(store: ObjectStore, *, limit: int | None = None) -> list[CollectionImages]:
    """Every collection of the store, both parts (empty parts are None), by name."""
    names = sorted({image.collection for image in dataset.iter_images(store)})
    collections = []
    for name in names:
        record = dataset.read_collection(store, name)
        patients = dataset.read_patients(store, name)
        parts = {}
        for part in layout.DATASET_PARTS:
            try:
                parts[part] = load_store(store, name, part, patients=patients, limit=limit)
            except FileNotFoundError:
                parts[part] = None
        train = None if record.external else parts[dataset.TRAIN_PART]
        collections.append(CollectionImages(name, record.external, train, parts[dataset.TEST_PART]))
    return collections


def load_collection_folder(
    name: str,
    root: Path,
    *,
    external: bool = False,
    holdout_fraction: float = 0.2,
    limit: int | None = None,
) -> CollectionImages:
    """A collection from a folder, split as the store would split it when imported.

    A folder with `train/` (and `test/`) keeps its own parts; a `{benign,malignant}/` folder
    is held out by `dataset.assign_part` with the patients of its manifest.csv, so the same
    patients are held out here and in a store the folder was imported into. An external
    collection is held out whole.
    """
    manifest = root / "manifest.csv"
    patients = dataset.read_manifest_patients(manifest) if manifest.is_file() else {}
    by_name = {Path(path).name: patient for path, patient in patients.items()}
    diagnoses = read_manifest_diagnoses(manifest) if manifest.is_file() else {}
    load = partial(load_folder, diagnoses=diagnoses, patients=by_name, collection=name, limit=limit)
    if (root / "train").is_dir() or (root / "test").is_dir():
        train = load(root / "train") if (root / "train").is_dir() else None
        test = load(root / "test") if (root / "test").is_dir() else None
        if external:
            return CollectionImages(name, True, None, concatenate([p for p in (train, test) if p is not None]))
        return CollectionImages(name, False, train, test)
    everything = load(root)
    if external:
        return CollectionImages(name, True, None, everything)
    record = dataset.Collection(name, False, holdout_fraction)
    held_out = np.array([_part_of(record, root, image_name, by_name) for image_name in everything.names]) == "test"
    return CollectionImages(
        name,
        False,
        everything.subset(np.flatnonzero(~held_out)) if (~held_out).any() else None,
        everything.subset(np.flatnonzero(held_out)) if held_out.any() else None,
    )


def _part_of(record: dataset.Collection, root: Path, image_name: str, patients: dict[str, str]) -> str:
    """The part an image of a folder would be stored in (its stored hash when it has no patient)."""
    filename = image_name.split("/", 1)[1]
    patient = patients.get(filename)
    if patient:
        return dataset.assign_part(record, "", patient)
    data = (root / image_name).read_bytes()
    return dataset.assign_part(record, dataset.stored_sha256(data, max_bytes=_MAX_BYTES, max_pixels=_MAX_PIXELS), None)


def _decode_all(entries, read, diagnoses: dict[str, str], patients: dict[str, str], collection: str, workers: int):
    def decode(entry):
        data = read(entry[2])
        pixels = model_input_from_bytes(data, max_bytes=_MAX_BYTES, max_pixels=_MAX_PIXELS)
        return pixels, hashlib.sha256(data).hexdigest()

    # Decoding releases the GIL in Pillow, so threads give a real speed-up on file reads.
    with ThreadPoolExecutor(workers) as pool:
        decoded = list(pool.map(decode, entries))
    names = tuple(name for name, _, _ in entries)
    dx_index = {code: i for i, code in enumerate(DIAGNOSES)}
    dx = [dx_index.get(diagnoses.get(name.split("/", 1)[1], ""), -1) for name in names]
    digests = tuple(digest for _, digest in decoded)
    provenance = sorted(f"{name.split('/')[0]}/{digest}" for name, digest in zip(names, digests, strict=True))
    groups = tuple(
        dataset.group_of(digest, patients.get(name.split("/", 1)[1]))
        for name, digest in zip(names, digests, strict=True)
    )
    return LabelledImages(
        pixels=np.stack([pixels for pixels, _ in decoded]),
        labels=np.array([label for _, label, _ in entries], np.int8),
        diagnoses=np.array(dx, np.int8),
        names=names,
        content_hash=hashlib.sha256("\n".join(provenance).encode()).hexdigest(),
        digests=digests,
        collections=(collection,) * len(names),
        groups=groups,
    )


def split_validation(images: LabelledImages, fraction: float) -> tuple[LabelledImages, LabelledImages]:
    """(train, validation): the split every trainer, bench and re-export must agree on.

    Within each collection and class, whole groups (a patient's images, or one image) are
    taken in the order of their hash (`dataset.share_of`) until `fraction` of the class is
    reached: stratified, never splitting a patient, and the same on every machine.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), received fraction={fraction}")
    groups = np.array(images.groups or [dataset.group_of(digest, None) for digest in images.digests] or images.names)
    chosen: set[str] = set()
    for members in images.collection_indices().values():
        for label in np.unique(images.labels[members]):
            of_class = members[images.labels[members] == label]
            wanted = max(1, round(fraction * len(of_class)))
            ordered = sorted(set(groups[of_class].tolist()), key=lambda group: dataset.share_of(group, "validation"))
            counts = {group: int(n) for group, n in zip(*np.unique(groups[of_class], return_counts=True), strict=True)}
            taken = 0
            for group in ordered:
                if taken >= wanted:
                    break
                chosen.add(group)
                taken += counts[group]
    in_validation = np.isin(groups, list(chosen))
    return images.subset(np.flatnonzero(~in_validation)), images.subset(np.flatnonzero(in_validation))


# Augmentation strengths, from the plain recipe to what is known to help across dermatoscopes.
AUGMENTATIONS = ("flips", "colour", "dermoscopy")


def augment(image: tf.Tensor, seed: tf.Tensor, kind: str = "colour") -> tf.Tensor:
    """One random dermoscopy-style view of a uint8 (224, 224, 3) image; float32 in 0..255.

    Lesions have no canonical orientation, so all 8 flips/90-degree rotations are equally
    real (`flips` stops there). `colour` adds a crop of 40-100% of the area (zoom and
    framing) and colour jitter (dermatoscopes and lighting differ). `dermoscopy` goes further
    towards what differs between clinics: a mild colour cast per channel, gamma, blur (focus and
    resampling) and dark hair-like lines. `seed` is a stateless seed, shape (2,).
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, received {kind!r}")
    seeds = tf.random.experimental.stateless_split(seed, 12)
    x = tf.image.convert_image_dtype(image, tf.float32)
    x = tf.image.stateless_random_flip_left_right(x, seeds[0])
    x = tf.image.rot90(x, tf.random.stateless_uniform([], seeds[1], 0, 4, dtype=tf.int32))
    if kind == "flips":
        return x * 255.0
    x = _random_crop(x, seeds[2])
    strong = kind == "dermoscopy"
    x = tf.image.stateless_random_brightness(x, 0.2 if strong else 0.15, seeds[3])
    x = tf.image.stateless_random_contrast(x, *((0.7, 1.3) if strong else (0.75, 1.25)), seeds[4])
    x = tf.image.stateless_random_saturation(x, *((0.7, 1.3) if strong else (0.75, 1.25)), seeds[5])
    x = tf.image.stateless_random_hue(x, 0.05, seeds[6])
    if strong:
        x = tf.clip_by_value(x, 0.0, 1.0)
        cast = tf.random.stateless_uniform([1, 1, 3], seeds[7], 0.9, 1.1)
        gamma = tf.exp(tf.random.stateless_uniform([], seeds[8], -0.25, 0.25))
        x = tf.pow(x * cast, gamma)
        x = _random_blur(x, seeds[9])
        x = _hair_lines(x, seeds[10])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def _random_crop(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(x),
        tf.zeros([1, 0, 4]),
        seed,
        min_object_covered=0.0,
        aspect_ratio_range=(0.75, 1.33),
        area_range=(0.4, 1.0),
        use_image_if_no_bounding_boxes=True,
    )
    return tf.image.resize(tf.slice(x, begin, size), (x.shape[0], x.shape[1]))


def _random_blur(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Gaussian blur with sigma 0-1.5 px, half of the time: out-of-focus or upsampled images."""
    seeds = tf.random.experimental.stateless_split(seed, 2)
    sigma = tf.random.stateless_uniform([], seeds[0], 0.05, 1.5)
    sigma = tf.where(tf.random.stateless_uniform([], seeds[1]) < 0.5, sigma, 0.05)
    taps = tf.exp(-0.5 * tf.square(tf.range(-3.0, 4.0) / sigma))
    taps = taps / tf.reduce_sum(taps)
    horizontal = tf.tile(tf.reshape(taps, [1, 7, 1, 1]), [1, 1, 3, 1])
    vertical = tf.tile(tf.reshape(taps, [7, 1, 1, 1]), [1, 1, 3, 1])
    blurred = tf.nn.depthwise_conv2d(x[None], horizontal, [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(blurred, vertical, [1, 1, 1, 1], "SAME")[0]


def _hair_lines(x: tf.Tensor, seed: tf.Tensor, most: int = 4) -> tf.Tensor:
    """Up to `most` thin dark straight lines across the image, as hairs are in dermoscopy.

    Each line is present with probability 1/3; a line is 0.4-1.2 px wide and darkens the
    pixels under it towards a random dark brown.
    """
    height, width = x.shape[0], x.shape[1]
    seeds = tf.random.experimental.stateless_split(seed, 5)
    present = tf.cast(tf.random.stateless_uniform([most], seeds[0]) < 1.0 / 3.0, tf.float32)
    angle = tf.random.stateless_uniform([most], seeds[1], 0.0, 3.14159)
    offset = tf.random.stateless_uniform([most], seeds[2], -0.4, 0.4) * width
    thickness = tf.random.stateless_uniform([most], seeds[3], 0.2, 0.6)
    colour = tf.random.stateless_uniform([3], seeds[4], 0.05, 0.25) * tf.constant([1.0, 0.8, 0.6])
    rows, columns = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    rows, columns = rows - height / 2.0, columns - width / 2.0
    distance = tf.abs(
        rows[..., None] * tf.cos(angle) - columns[..., None] * tf.sin(angle) - offset
    )  # (H, W, most): each pixel's distance to each line
    cover = tf.reduce_max(present * tf.clip_by_value(1.0 + thickness - distance, 0.0, 1.0), axis=-1)
    return x * (1.0 - cover[..., None]) + colour * cover[..., None]


def augmented_views(
    pixels: np.ndarray, view: int, seed: int, batch_size: int = 32, kind: str = "colour"
) -> tf.data.Dataset:
    """Batches of augmented copies of `pixels` (in order); `view` picks an independent draw."""
    dataset = tf.data.Dataset.from_tensor_slices(pixels).enumerate()

    def one(index, image):
        return augment(image, tf.stack([tf.cast(seed, tf.int64), index * 1000 + view]), kind)

    views = dataset.map(one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size)
    # Augmenting the next batches while the model runs on this one.
    return views.prefetch(tf.data.AUTOTUNE)


def combined_content_hash(parts: list[LabelledImages]) -> str:
    """The content hash `concatenate(parts)` has, without copying any pixels."""
    if len(parts) == 1:
        return parts[0].content_hash
    return hashlib.sha256("\n".join(sorted(part.content_hash for part in parts)).encode()).hexdigest()


def concatenate(parts: list[LabelledImages]) -> LabelledImages:
    """One LabelledImages of several (e.g. the store's train and incoming splits)."""
    if len(parts) == 1:
        return parts[0]
    names = tuple(name for part in parts for name in part.names)
    return LabelledImages(
        pixels=np.concatenate([part.pixels for part in parts]),
        labels=np.concatenate([part.labels for part in parts]),
        diagnoses=np.concatenate([part.diagnoses for part in parts]),
        names=names,
        content_hash=combined_content_hash(parts),
        digests=tuple(digest for part in parts for digest in part.digests) if all(p.digests for p in parts) else (),
        collections=tuple(c for part in parts for c in part.collections) if all(p.collections for p in parts) else (),
        groups=tuple(g for part in parts for g in part.groups) if all(p.groups for p in parts) else (),
    )

"""Labelled uploads go through a staging area: the gateway stages, the trainer imports (issue 24).

The internet-facing gateway may not write the labelled dataset (`datasets/`). It checks an
upload exactly as `dataset.add_images` would, decides each new image's part the same way, and
writes the images and then, last, a manifest under `uploads/datasets/{batch_id}/`
(`stage_upload`). A job on the `dataset-import` queue names the batch; the trainer's import
consumer calls `import_batch`, which writes the collection record (when missing), the
patients, then each image into `datasets/`, and deletes the staged objects.

The manifest's presence claims the batch: it is written after every image and deleted before
them (`discard_batch`), so a batch with a manifest is whole. Importing is idempotent: images
are content-addressed (one already stored is skipped), the patient record is named after the
batch, and a batch whose manifest is gone was imported already. A job delivered twice, or again
after a crash at any point, ends with the same dataset.

Client file names are not kept in the store: each staged image is named by its hash.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared import dataset
from shared.dataset import AddOutcome, Collection, LabelledFile
from shared.errors import BadInput, ObjectNotFound, PermanentError
from shared.images import UNLIMITED_DECODE_BUDGET, DecodeBudget
from shared.storage import ObjectStore, get_json, layout, put_json

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
_BATCH_ID = re.compile(r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{32}")


class BadBatch(PermanentError):
    """A batch id or manifest that cannot be imported however often it is retried."""

    code = "bad_batch"


def new_batch_id(now: datetime | None = None) -> str:
    """`{UTC time}-{uuid4 hex}`: batches sort by when they were staged."""
    return f"{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex}"


def check_batch_id(batch_id: str) -> str:
    """A batch id names keys: only the shape `new_batch_id` makes is taken."""
    if not isinstance(batch_id, str) or not _BATCH_ID.fullmatch(batch_id):
        raise BadBatch(f"not a staging batch id: {str(batch_id)[:80]!r}")
    return batch_id


@dataclass(frozen=True)
class StagedImage:
    """One staged image: its hash (of the bytes stored), extension, the part it goes to, and the
    staged object's name (`{sha256}.{extension}`)."""

    sha256: str
    extension: str
    part: str
    filename: str


@dataclass(frozen=True)
class Manifest:
    """What a staged batch is; written last, so its presence says every image is staged."""

    batch_id: str
    collection: str
    # True when the collection had no record at staging: the import creates it with this share.
    new_collection: bool
    holdout_fraction: float
    label: str
    patients: dict[str, str]  # sha256 -> patient
    images: list[StagedImage]
    staged_at: float = field(default_factory=time.time)
    version: int = MANIFEST_VERSION

    def document(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, document: Any) -> Manifest:
        """A stored manifest, checked: its names end up in keys. BadBatch when it is not one."""
        try:
            images = [StagedImage(**image) for image in document["images"]]
            manifest = cls(
                batch_id=check_batch_id(document["batch_id"]),
                collection=dataset.check_collection_name(document["collection"]),
                new_collection=bool(document["new_collection"]),
                holdout_fraction=float(document["holdout_fraction"]),
                label=dataset.check_label(document["label"]),
                patients={str(sha256): dataset.check_patient(p) for sha256, p in document["patients"].items()},
                images=images,
                staged_at=float(document.get("staged_at", 0.0)),
                version=int(document.get("version", MANIFEST_VERSION)),
            )
            for image in images:
                valid_part = image.part in layout.DATASET_PARTS
                valid_name = image.filename == f"{image.sha256}.{image.extension}"
                if not (re.fullmatch(r"[0-9a-f]{64}", image.sha256) and valid_part and valid_name):
                    raise BadBatch(f"malformed staged image in {manifest.batch_id}: {image}")
                if image.extension not in dataset.CONTENT_TYPE_OF_EXTENSION:
                    raise BadBatch(f"staged image of unknown type in {manifest.batch_id}: {image.extension!r}")
        except (KeyError, TypeError, ValueError, AttributeError, BadInput) as error:
            raise BadBatch(f"malformed staging manifest: {error}") from error
        return manifest


def collection_for_upload(store: ObjectStore, name: str, holdout_fraction: float) -> tuple[Collection, bool]:
    """(the collection as stored, False), or (the one its import will create, True). Writes nothing."""
    dataset.check_collection_name(name)
    if store.exists(layout.collection_record(name)):
        return dataset.read_collection(store, name), False
    return Collection(name, False, holdout_fraction), True


def stage_upload(
    store: ObjectStore,
    batch_id: str,
    collection: Collection,
    *,
    new_collection: bool,
    label: str,
    patient: str | None,
    files: Iterable[tuple[str, bytes]],
    known: set[str],
    max_bytes: int,
    max_pixels: int,
    budget: DecodeBudget = UNLIMITED_DECODE_BUDGET,
    budget_wait_s: float = 10.0,
) -> list[AddOutcome]:
    """Check each (name, bytes) as `dataset.add_images` does and stage the new ones; the outcome
    of each file, "added" meaning staged for import into the part it names.

    Images are staged one at a time as they are checked; the manifest is written last, and
    only when something was staged. On any failure what was staged is deleted and the error
    raised, so no half-staged batch remains.
    """
    check_batch_id(batch_id)
    outcomes: list[AddOutcome] = []
    staged: list[StagedImage] = []
    checked_files = dataset.check_files(
        (LabelledFile(name, label, data, patient) for name, data in files),
        collection,
        known=known,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        budget=budget,
        budget_wait_s=budget_wait_s,
    )
    try:
        for checked in checked_files:
            if isinstance(checked, AddOutcome):
                outcomes.append(checked)
                continue
            image = StagedImage(
                checked.sha256, checked.extension, checked.part, f"{checked.sha256}.{checked.extension}"
            )
            key = layout.dataset_staging_image(batch_id, image.sha256, image.extension)
            store.put(key, checked.stored, checked.content_type)
            staged.append(image)
            outcomes.append(AddOutcome(checked.file.filename, "added", checked.sha256, part=checked.part))
        if staged:
            manifest = Manifest(
                batch_id=batch_id,
                collection=collection.name,
                new_collection=new_collection,
                holdout_fraction=collection.holdout_fraction,
                label=label,
                patients={image.sha256: patient for image in staged} if patient else {},
                images=staged,
            )
            put_json(store, layout.dataset_staging_manifest(batch_id), manifest.document())
    except BaseException:
        discard_quietly(store, batch_id)
        raise
    return outcomes


def discard_batch(store: ObjectStore, batch_id: str) -> None:
    """Delete a staged batch: its manifest first (it no longer claims the batch), then the rest."""
    check_batch_id(batch_id)
    store.delete(layout.dataset_staging_manifest(batch_id))
    for key in list(store.list(layout.dataset_staging_prefix(batch_id))):
        store.delete(key)


def discard_quietly(store: ObjectStore, batch_id: str) -> None:
    """`discard_batch`, logging instead of raising: for clean-up after another failure."""
    try:
        discard_batch(store, batch_id)
    except Exception as error:  # the first error is the one to report
        log.warning("could not delete staged batch %s: %r", batch_id, error)


@dataclass(frozen=True)
class ImportReport:
    """What importing a batch did: images written now, found already in place (an earlier
    delivery), found elsewhere in the dataset (skipped), or missing from the staging area."""

    batch_id: str
    collection: str
    added: int
    already_imported: int
    duplicates: int
    missing: int
    images: int


def import_batch(
    store: ObjectStore, batch_id: str, *, before_discard: Callable[[ImportReport], None] | None = None
) -> ImportReport | None:
    """Import a staged batch into `datasets/`; None when its manifest is gone (imported already,
    or withdrawn by the gateway after a failed publish).

    The collection record is written when missing (with the share the parts were chosen by),
    then the batch's patient record, then each image not yet stored anywhere in the dataset;
    `before_discard` (e.g. announcing `dataset.changed`) runs before the staged objects are
    deleted, so a crash in between repeats it rather than losing it. Raises BadBatch for a
    batch that can never be imported, StorageUnavailable while the store is away.
    """
    check_batch_id(batch_id)
    try:
        document = get_json(store, layout.dataset_staging_manifest(batch_id))
    except ObjectNotFound:
        # Imported already (or withdrawn by the gateway): what a crashed discard left goes too.
        discard_batch(store, batch_id)
        return None
    manifest = Manifest.parse(document)
    if manifest.batch_id != batch_id:
        raise BadBatch(f"the manifest of {batch_id} names batch {manifest.batch_id}")
    collection = _collection_for_import(store, manifest)
    stored = {image.sha256: image.key for image in dataset.iter_images(store)}
    to_write: list[tuple[StagedImage, str]] = []
    ours: set[str] = set()  # images this batch writes, or wrote at an earlier delivery
    already = duplicates = 0
    for image in manifest.images:
        # An external collection (made so after staging) is held out whole.
        part = dataset.TEST_PART if collection.external else image.part
        key = layout.dataset_image(collection.name, part, manifest.label, image.sha256, image.extension)
        existing = stored.get(image.sha256)
        if existing is None:
            to_write.append((image, key))
            ours.add(image.sha256)
        elif existing == key:
            already += 1
            ours.add(image.sha256)
        else:
            duplicates += 1  # stored since staging, elsewhere: the first collection keeps it
    patients = {sha256: patient for sha256, patient in manifest.patients.items() if sha256 in ours}
    if patients:
        # Named after the batch: a repeated import writes the same record again.
        put_json(store, layout.patient_record(collection.name, f"staged-{batch_id}"), patients)
    added = missing = 0
    for image, key in to_write:
        try:
            data = store.get(layout.dataset_staging_image(batch_id, image.sha256, image.extension))
        except ObjectNotFound:
            log.error("staged image %s of batch %s is missing; it is not imported", image.sha256, batch_id)
            missing += 1
            continue
        store.put(key, data, dataset.CONTENT_TYPE_OF_EXTENSION[image.extension])
        added += 1
    report = ImportReport(batch_id, collection.name, added, already, duplicates, missing, len(manifest.images))
    if before_discard is not None:
        before_discard(report)
    discard_batch(store, batch_id)
    return report


def _collection_for_import(store: ObjectStore, manifest: Manifest) -> Collection:
    """The stored collection, or the one the manifest describes, created now."""
    if store.exists(layout.collection_record(manifest.collection)):
        return dataset.read_collection(store, manifest.collection)
    created = Collection(manifest.collection, False, manifest.holdout_fraction)
    put_json(store, layout.collection_record(created.name), {**asdict(created), "created_at": time.time()})
    return created


def staged_batches(store: ObjectStore) -> list[str]:
    """Ids of the batches whose manifest is staged (waiting for import), oldest first."""
    suffix = "/manifest.json"
    return sorted(
        key[len(layout.DATASET_STAGING_PREFIX) : -len(suffix)]
        for key in store.list(layout.DATASET_STAGING_PREFIX)
        if key.endswith(suffix)
    )

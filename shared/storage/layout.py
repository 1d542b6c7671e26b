"""Where each kind of object lives (the storage table of docs/architecture.md).

One function per kind of object, so that no service spells a key by hand.
"""

from __future__ import annotations

from datetime import datetime

BUCKETS = ("uploads", "results", "datasets", "models", "training", "insights")
# Every collection has a training part and a held-out part ("test") that is never trained on.
DATASET_PARTS = ("train", "test")
LABELS = ("benign", "malignant")


def prediction_upload(job_id: str, extension: str, when: datetime) -> str:
    return f"uploads/predictions/{when:%Y/%m/%d}/{job_id}.{extension}"


def prediction_result(job_id: str) -> str:
    return f"results/predictions/{job_id}.json"


def prediction_tombstone(job_id: str) -> str:
    """Marks a prediction deleted on request or at delivery: its id and when, nothing else."""
    return f"results/tombstones/{job_id}.json"


def prediction_heatmap(job_id: str) -> str:
    """The heat map of a prediction (a PNG of its image): named by the job id, whose day the
    retention sweep reads, and deleted with the prediction (shared/retention.py)."""
    return f"results/heatmaps/{job_id}.png"


PREDICTION_UPLOADS_PREFIX = "uploads/predictions/"
PREDICTION_RESULTS_PREFIX = "results/predictions/"
PREDICTION_TOMBSTONES_PREFIX = "results/tombstones/"
PREDICTION_HEATMAPS_PREFIX = "results/heatmaps/"
# Everything a prediction leaves behind, which retention expires; datasets/ is never among them.
PREDICTION_PREFIXES = (
    PREDICTION_UPLOADS_PREFIX,
    PREDICTION_RESULTS_PREFIX,
    PREDICTION_TOMBSTONES_PREFIX,
    PREDICTION_HEATMAPS_PREFIX,
)


DATASETS_PREFIX = "datasets/"


def dataset_image(collection: str, part: str, label: str, sha256: str, extension: str) -> str:
    return f"datasets/{collection}/{part}/{label}/{sha256}.{extension}"


def dataset_prefix(collection: str | None = None, part: str | None = None) -> str:
    """Every dataset object, a collection's, or a collection part's."""
    return "/".join(["datasets", *(name for name in (collection, part) if name)]) + "/"


def collection_record(collection: str) -> str:
    """What a collection is: external or trained on, and its held-out share (fixed at creation)."""
    return f"datasets/{collection}/collection.json"


def patient_record(collection: str, batch: str) -> str:
    """sha256 -> patient of one import or upload batch (written before its images)."""
    return f"datasets/{collection}/patients/{batch}.json"


# Labelled uploads staged by the gateway for the trainer to import into `datasets/` (the
# gateway may not write there): the accepted images, then the manifest, written last.
# Not among PREDICTION_PREFIXES: retention never expires a batch waiting for its import.
DATASET_STAGING_PREFIX = "uploads/datasets/"


def dataset_staging_prefix(batch_id: str) -> str:
    return f"{DATASET_STAGING_PREFIX}{batch_id}/"


def dataset_staging_manifest(batch_id: str) -> str:
    """What a staged batch is (collection, label, patients, each image): its presence claims the batch."""
    return f"{DATASET_STAGING_PREFIX}{batch_id}/manifest.json"


def dataset_staging_image(batch_id: str, sha256: str, extension: str) -> str:
    return f"{DATASET_STAGING_PREFIX}{batch_id}/{sha256}.{extension}"


def model_version_prefix(version: str) -> str:
    return f"models/versions/{version}/"


def model_file(version: str, filename: str) -> str:
    return f"models/versions/{version}/{filename}"


PRODUCTION_ALIAS = "models/aliases/production.json"
MODEL_VERSIONS_PREFIX = "models/versions/"

# The audit log (shared/audit.py): one object per entry, written once, never rewritten.
# In `models`, beside the alias it mostly records: no bucket of its own to create and grant,
# and no lifecycle rule there (retention expires only what predictions leave behind).
AUDIT_PREFIX = "models/audit/"


def audit_entry(entry_id: str, when: datetime) -> str:
    """`entry_id` starts with the zero-padded epoch milliseconds: keys sort by time."""
    return f"{AUDIT_PREFIX}{when:%Y/%m/%d}/{entry_id}.json"


def training_job(job_id: str) -> str:
    return f"training/jobs/{job_id}.json"


INSIGHTS_SNAPSHOT = "insights/snapshots/latest.json"
# Input drift per model version: the current window's figure and the last day's (docs/insights.md).
INSIGHTS_DRIFT = "insights/drift/latest.json"


def insights_cache(sha256: str) -> str:
    return f"insights/cache/{sha256}.json"

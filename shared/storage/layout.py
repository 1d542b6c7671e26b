"""Where each kind of object lives (the storage table of docs/architecture.md).

One function per kind of object, so that no service spells a key by hand.
"""

from __future__ import annotations

from datetime import datetime

BUCKETS = ("uploads", "results", "datasets", "models", "training", "insights")
DATASET_SPLITS = ("train", "test", "incoming")
LABELS = ("benign", "malignant")


def prediction_upload(job_id: str, extension: str, when: datetime) -> str:
    return f"uploads/predictions/{when:%Y/%m/%d}/{job_id}.{extension}"


def prediction_result(job_id: str) -> str:
    return f"results/predictions/{job_id}.json"


def prediction_tombstone(job_id: str) -> str:
    """Marks a prediction deleted on request or at delivery: its id and when, nothing else."""
    return f"results/tombstones/{job_id}.json"


PREDICTION_UPLOADS_PREFIX = "uploads/predictions/"
PREDICTION_RESULTS_PREFIX = "results/predictions/"
PREDICTION_TOMBSTONES_PREFIX = "results/tombstones/"
# Everything a prediction leaves behind, which retention expires; datasets/ is never among them.
PREDICTION_PREFIXES = (PREDICTION_UPLOADS_PREFIX, PREDICTION_RESULTS_PREFIX, PREDICTION_TOMBSTONES_PREFIX)


def dataset_image(split: str, label: str, sha256: str, extension: str) -> str:
    return f"datasets/{split}/{label}/{sha256}.{extension}"


def dataset_prefix(split: str, label: str | None = None) -> str:
    return f"datasets/{split}/" if label is None else f"datasets/{split}/{label}/"


def model_version_prefix(version: str) -> str:
    return f"models/versions/{version}/"


def model_file(version: str, filename: str) -> str:
    return f"models/versions/{version}/{filename}"


PRODUCTION_ALIAS = "models/aliases/production.json"
MODEL_VERSIONS_PREFIX = "models/versions/"


def training_job(job_id: str) -> str:
    return f"training/jobs/{job_id}.json"


INSIGHTS_SNAPSHOT = "insights/snapshots/latest.json"


def insights_cache(sha256: str) -> str:
    return f"insights/cache/{sha256}.json"

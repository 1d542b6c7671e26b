"""Training job records (`training/jobs/{job_id}.json`): written by the gateway when a job is
queued and by the trainer as it runs; read by the API and the UI."""

from __future__ import annotations

import time
import uuid
from typing import Any

from shared.errors import NotFound, ObjectNotFound
from shared.storage import ObjectStore, get_json, layout, put_json

# queued -> running -> evaluating -> promoted | rejected, or failed at any point.
STATUSES = ("queued", "running", "evaluating", "promoted", "rejected", "failed")
FINISHED = frozenset({"promoted", "rejected", "failed"})


def new_job_id(now: float | None = None) -> str:
    """Sortable ids (UTC time first), so the newest jobs list last."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + uuid.uuid4().hex[:8]


def new_record(job_id: str, epochs: int | None) -> dict[str, Any]:
    return {
        "id": job_id,
        "status": "queued",
        "epochs": epochs,
        "progress": None,
        "timings": {"queued_at": time.time(), "started_at": None, "finished_at": None},
        "candidate_version": None,
        "gate": None,
        "error": None,
    }


def save(store: ObjectStore, record: dict[str, Any]) -> None:
    put_json(store, layout.training_job(record["id"]), record)


def load(store: ObjectStore, job_id: str) -> dict[str, Any]:
    try:
        return get_json(store, layout.training_job(job_id))
    except ObjectNotFound:
        raise NotFound(f"no training job {job_id}") from None


def update(
    store: ObjectStore, job_id: str, *, timings: dict[str, float] | None = None, **changes: Any
) -> dict[str, Any]:
    """Read, change and write back one record (only the trainer writes after queueing).

    `timings` are merged into the record's timings rather than replacing them.
    """
    record = load(store, job_id)
    record.update(changes)
    if timings:
        record["timings"] = {**record["timings"], **timings}
    save(store, record)
    return record


def list_recent(store: ObjectStore, limit: int = 20) -> list[dict[str, Any]]:
    """The newest `limit` records, newest first."""
    keys = sorted(store.list("training/jobs/"), reverse=True)[:limit]
    records = []
    for key in keys:
        try:
            records.append(get_json(store, key))
        except ObjectNotFound:
            continue  # deleted between the listing and the read
    return records

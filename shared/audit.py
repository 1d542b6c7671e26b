"""The audit log (`models/audit/{yyyy}/{mm}/{dd}/{epoch_ms}-{uuid}.json`): who changed what.

Every promotion (a rollback included), training request, dataset upload and prediction
deletion, whether through the gateway or by the trainer after its gate. Append-only: each
entry is a new object under a key of its own, never rewritten; keys sort by time, so the
newest entries are the last keys.

An entry is written before the action it records: if the store refuses it, the action does
not happen (StorageUnavailable, a 503 through the gateway). An entry therefore records an
action that was accepted; one that then fails says so in the error its caller received and
in the logs, not here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from shared.errors import ObjectNotFound
from shared.storage import ObjectStore, get_json, layout, put_json

log = logging.getLogger(__name__)

ACTIONS = (
    "promote",
    "rollback",
    "automatic_promotion",
    "training_requested",
    "dataset_upload",
    "prediction_deleted",
)
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
# `{epoch_ms:013d}-{uuid4 hex}`: the last part of a key, and what `before` takes.
ENTRY_ID = re.compile(r"[0-9]{13}-[0-9a-f]{32}")


def new_entry_id(now: float) -> str:
    return f"{int(now * 1000):013d}-{uuid.uuid4().hex}"


def entry_key(entry_id: str) -> str:
    when = datetime.fromtimestamp(int(entry_id[:13]) / 1000, tz=UTC)
    return layout.audit_entry(entry_id, when)


def gate_digest(gate: dict[str, Any] | None) -> str | None:
    """SHA-256 of the card's gate decision as canonical JSON (sorted keys, no spaces); None without one."""
    if not gate:
        return None
    canonical = json.dumps(gate, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def is_rollback(target: str, current: str | None) -> bool:
    """Promoting a version older than production's (versions sort by creation) is a rollback."""
    return current is not None and target < current


def record(
    store: ObjectStore,
    action: str,
    actor: dict[str, Any],
    *,
    reason: str | None = None,
    now: float | None = None,
    **what: Any,
) -> dict[str, Any]:
    """Append one entry; raises StorageUnavailable if the store refuses it (nothing is written then).

    `actor`: which credential ("write-token", "anonymous" or "trainer") and from where.
    `what`: the action's own fields (version, from, to, gate_digest, collection, ...).
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    at = time.time() if now is None else now
    entry_id = new_entry_id(at)
    entry = {"id": entry_id, "at": at, "action": action, "reason": reason, "actor": actor, **what}
    put_json(store, entry_key(entry_id), entry)
    log.info("audit: %s %s by %s", action, {k: v for k, v in what.items() if k != "gate_digest"}, actor)
    return entry


def read(store: ObjectStore, limit: int = DEFAULT_LIMIT, before: str | None = None) -> list[dict[str, Any]]:
    """At most `limit` (1..MAX_LIMIT) entries, newest first, all older than entry `before` if given."""
    return read_page(store, limit, before)[0]


def read_page(
    store: ObjectStore, limit: int = DEFAULT_LIMIT, before: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """`read`'s entries and the `before` of the next page (None when there are no older entries)."""
    limit = max(1, min(limit, MAX_LIMIT))
    keys = sorted((key for key in store.list(layout.AUDIT_PREFIX) if key.endswith(".json")), reverse=True)
    if before is not None:
        keys = [key for key in keys if _entry_id_of(key) < before]
    entries: list[dict[str, Any]] = []
    for key in keys:
        if len(entries) == limit:  # and this key is older still: there is a next page
            return entries, entries[-1]["id"]
        try:
            entries.append(get_json(store, key))
        except ObjectNotFound:
            continue
    return entries, None


def _entry_id_of(key: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(".json")


def record_automatic_promotion(
    store: ObjectStore, job_id: str, version: str, previous: str | None, gate: dict[str, Any]
) -> dict[str, Any]:
    """The trainer's promotion of a version that passed its gate, recorded before it happens:
    if the store refuses the entry the job fails before promoting, and a resumed run promotes
    (and records) it then (services/trainer/pipeline.py `finish_published`)."""
    return record(
        store,
        "automatic_promotion",
        {"credential": "trainer", "address": None, "origin": None},
        reason=f"training job {job_id} passed the gate",
        version=version,
        job_id=job_id,
        gate_digest=gate_digest(gate),
        **{"from": previous, "to": version},
    )

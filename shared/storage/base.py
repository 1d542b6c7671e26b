"""The object-store interface every service talks to.

Keys look like `bucket/path/inside/bucket`; the first segment is the bucket (see layout.py).
Implementations make `put` atomic: a reader sees the old object or the new one, never half.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

from shared.errors import BadInput


class ObjectStore(Protocol):
    """Minimal object storage: enough for images, JSON documents and model files."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Store `data` at `key`, replacing any object there."""

    def get(self, key: str) -> bytes:
        """Return the object at `key`; raise ObjectNotFound when there is none."""

    def exists(self, key: str) -> bool:
        """Say whether an object is stored at `key`."""

    def delete(self, key: str) -> None:
        """Remove the object at `key`; absent keys are not an error."""

    def list(self, prefix: str) -> Iterator[str]:
        """Yield every key that starts with `prefix`, in lexical order."""

    def list_with_times(self, prefix: str) -> Iterator[tuple[str, float]]:
        """Yield (key, last-modified time in epoch seconds) for every key under `prefix`.

        Keys come in name order level by level (depth first); for the layout's date paths
        (`.../{yyyy}/{mm}/{dd}/...`, `{yyyymmdd}-...`) that is oldest day first.
        """

    def set_expiry(self, bucket: str, days_by_prefix: dict[str, int]) -> bool:
        """Ask the store itself to delete objects of `bucket` under each prefix after so many days.

        Replaces any expiry rules the bucket had. Returns False when the store has no such
        feature (the filesystem), so the caller knows only its own sweep enforces retention.
        """

    def ping(self) -> None:
        """Raise StorageUnavailable when the store cannot be reached."""


def split_key(key: str) -> tuple[str, str]:
    """Split `bucket/rest` into its bucket and object name, rejecting unsafe keys."""
    bucket, _, name = key.partition("/")
    parts = key.split("/")
    if not bucket or not name or any(part in {"", ".", ".."} for part in parts):
        raise BadInput(f"invalid storage key {key!r}")
    return bucket, name


def put_json(store: ObjectStore, key: str, document: Any) -> None:
    store.put(key, json.dumps(document, indent=2, sort_keys=True).encode(), "application/json")


def get_json(store: ObjectStore, key: str) -> Any:
    return json.loads(store.get(key))

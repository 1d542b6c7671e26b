"""A real store with one part of it refused, as a full disk or a scoped credential would."""

from __future__ import annotations

from typing import Any

from shared.errors import StorageUnavailable
from shared.storage import ObjectStore


class RefusingWrites:
    """`store`, except that every write and delete of a key under `prefix` raises StorageUnavailable."""

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self._store = store
        self._prefix = prefix

    def _check(self, key: str) -> None:
        if key.startswith(self._prefix):
            raise StorageUnavailable(f"cannot change {key}: refused")

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self._check(key)
        self._store.put(key, data, content_type)

    def delete(self, key: str) -> None:
        self._check(key)
        self._store.delete(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

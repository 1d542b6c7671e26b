"""A local-filesystem object store: the default for a one-machine run without MinIO."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shared.errors import ObjectNotFound, StorageUnavailable
from shared.storage.base import split_key

# Below this much free space the store reports itself unavailable on /readyz; writes fail
# (and leave nothing behind) when the disk is really full.
MIN_FREE_BYTES = 1024 * 1024


def _walk_sorted(folder: Path, key_base: str, name_prefix: str = "") -> Iterator[tuple[str, float]]:
    """(key, mtime) of every file under `folder` whose name starts with `name_prefix`, depth first."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if not entry.name.startswith(name_prefix) or entry.name.startswith(".tmp-"):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk_sorted(Path(entry.path), f"{key_base}{entry.name}/")
        elif entry.is_file(follow_symlinks=False):
            try:
                yield f"{key_base}{entry.name}", entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:  # deleted since the directory was read
                continue


class FilesystemStore:
    """Objects as files under `root/bucket/name`; writes go through a temp file and rename."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        bucket, name = split_key(key)
        return self.root / bucket / name

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_atomically(path, data)
        except OSError as error:  # a full disk, a read-only mount, a lost volume
            raise StorageUnavailable(f"cannot store {key}: {error.strerror or error}") from error

    @staticmethod
    def _write_atomically(path: Path, data: bytes) -> None:
        # Same-directory temp file + os.replace: atomic on POSIX, so readers never see half,
        # and a process that dies mid-write leaves the old object. No fsync: the page cache
        # outlives any process, and this store is the one-machine default, not a database;
        # fsync cost 2.5-10 ms per write on the hot path (docs/history/performance-runs.md).
        handle, temp_name = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "wb") as temp_file:
                temp_file.write(data)
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        except OSError as error:
            raise StorageUnavailable(f"cannot read {key}: {error.strerror or error}") from error

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as error:
            raise StorageUnavailable(f"cannot delete {key}: {error.strerror or error}") from error

    def list(self, prefix: str) -> Iterator[str]:
        bucket, _, rest = prefix.partition("/")
        bucket_dir = self.root / bucket
        if not bucket or not bucket_dir.is_dir():
            return
        keys = []
        for path in bucket_dir.rglob("*"):
            if path.is_file() and not path.name.startswith(".tmp-"):
                name = path.relative_to(bucket_dir).as_posix()
                if name.startswith(rest):
                    keys.append(f"{bucket}/{name}")
        yield from sorted(keys)

    def list_with_times(self, prefix: str) -> Iterator[tuple[str, float]]:
        # Lazy, directory by directory in name order: a sweep that stops at the first day it
        # must keep never reads the directories of later days.
        bucket, _, rest = prefix.partition("/")
        bucket_dir = self.root / bucket
        if not bucket or not bucket_dir.is_dir():
            return
        start_dir, _, name_prefix = rest.rpartition("/")
        folder = bucket_dir / start_dir if start_dir else bucket_dir
        base = f"{bucket}/{start_dir}/" if start_dir else f"{bucket}/"
        try:
            yield from _walk_sorted(folder, base, name_prefix)
        except OSError as error:
            raise StorageUnavailable(f"cannot list {prefix}: {error.strerror or error}") from error

    def set_expiry(self, bucket: str, days_by_prefix: dict[str, int]) -> bool:
        return False  # plain files do not expire by themselves: the retention sweep deletes them

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageUnavailable(f"store directory {self.root} is not writable")
        if shutil.disk_usage(self.root).free < MIN_FREE_BYTES:
            raise StorageUnavailable(f"the disk of store directory {self.root} is full")

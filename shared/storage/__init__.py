"""Object storage: one interface (`ObjectStore`), a MinIO/S3 and a filesystem implementation."""

from __future__ import annotations

from shared.settings import Settings
from shared.storage.base import ObjectStore, get_json, put_json
from shared.storage.filesystem import FilesystemStore

__all__ = ["FilesystemStore", "ObjectStore", "create_store", "get_json", "put_json"]


def create_store(settings: Settings) -> ObjectStore:
    """The store the settings name: S3 when `s3_endpoint` is set, else the filesystem."""
    if settings.uses_s3:
        from shared.storage.s3 import S3Store

        return S3Store(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
            bucket_prefix=settings.s3_bucket_prefix,
            ca_file=settings.s3_ca_file,
        )
    return FilesystemStore(settings.store_dir)

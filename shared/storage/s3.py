"""The MinIO/S3 object store, through the `minio` client.

The only module that touches `minio`; its errors become the project's own here.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, Filter
from minio.error import MinioException, S3Error
from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

from shared.errors import ObjectNotFound, StorageAccessDenied, StorageUnavailable
from shared.storage.base import split_key
from shared.storage.layout import BUCKETS
from shared.tls import verifying_context

_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound"}


def _store_error(what: str, error: Exception) -> StorageUnavailable:
    """The project's error for a failed call: refused credentials are told apart from the rest."""
    if isinstance(error, S3Error) and error.code == "AccessDenied":
        return StorageAccessDenied(f"{what}: this service's credentials may not ({error.message})")
    return StorageUnavailable(f"{what}: {error}")


class S3Store:
    """Objects in buckets named `{bucket_prefix}{bucket}` on an S3 endpoint."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        bucket_prefix: str = "",
        timeout_s: float = 10.0,
        ca_file: Path | None = None,
    ) -> None:
        """`secure`: HTTPS, the endpoint's certificate verified against `ca_file` (PEM CA
        certificates; the system's when None) and its host name against `endpoint`'s."""
        endpoint = endpoint.removeprefix("http://").removeprefix("https://")
        # Bounded timeouts and retries: a store that is gone must not hang a request forever.
        http_client = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
            maxsize=32,
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
            ssl_context=verifying_context(ca_file, "S3_CA_FILE") if secure else None,
        )
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=http_client,
        )
        self._bucket_prefix = bucket_prefix
        self._known_buckets: set[str] = set()
        self._lock = threading.Lock()

    def _locate(self, key: str) -> tuple[str, str]:
        bucket, name = split_key(key)
        return self._bucket_prefix + bucket, name

    def _ensure_bucket(self, bucket: str) -> None:
        if bucket in self._known_buckets:
            return
        with self._lock:
            try:
                if not self._client.bucket_exists(bucket):
                    self._client.make_bucket(bucket)
            except S3Error as error:
                if error.code == "AccessDenied":
                    # A scoped credential may not ask about buckets it has no grant on, nor create
                    # any: the deployment's bootstrap made them. Its calls say if one is missing.
                    pass
                elif error.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise StorageUnavailable(f"cannot create bucket {bucket}: {error}") from error
            except (MinioException, urllib3.exceptions.HTTPError) as error:
                raise StorageUnavailable(f"cannot reach S3 endpoint: {error}") from error
            self._known_buckets.add(bucket)

    def ensure_buckets(self) -> None:
        """Create every bucket of the layout; called once at start-up."""
        for bucket in BUCKETS:
            self._ensure_bucket(self._bucket_prefix + bucket)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        bucket, name = self._locate(key)
        self._ensure_bucket(bucket)
        try:
            self._client.put_object(bucket, name, io.BytesIO(data), len(data), content_type=content_type)
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise _store_error(f"cannot store {key}", error) from error

    def get(self, key: str) -> bytes:
        bucket, name = self._locate(key)
        response = None
        try:
            response = self._client.get_object(bucket, name)
            return response.read()
        except S3Error as error:
            if error.code in _MISSING_CODES:
                raise ObjectNotFound(key) from None
            raise _store_error(f"cannot read {key}", error) from error
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise _store_error(f"cannot read {key}", error) from error
        finally:
            if response is not None:
                response.close()
                response.release_conn()

    def exists(self, key: str) -> bool:
        bucket, name = self._locate(key)
        try:
            self._client.stat_object(bucket, name)
            return True
        except S3Error as error:
            if error.code in _MISSING_CODES:
                return False
            raise _store_error(f"cannot stat {key}", error) from error
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise _store_error(f"cannot stat {key}", error) from error

    def delete(self, key: str) -> None:
        bucket, name = self._locate(key)
        try:
            self._client.remove_object(bucket, name)
        except S3Error as error:
            if error.code not in _MISSING_CODES:
                raise _store_error(f"cannot delete {key}", error) from error
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise _store_error(f"cannot delete {key}", error) from error

    def list(self, prefix: str) -> Iterator[str]:
        # One listing serves both: S3 returns the modification time with every key anyway.
        for key, _modified in self.list_with_times(prefix):
            yield key

    def list_with_times(self, prefix: str) -> Iterator[tuple[str, float]]:
        bucket_name, _, rest = prefix.partition("/")
        bucket = self._bucket_prefix + bucket_name
        try:
            for item in self._client.list_objects(bucket, prefix=rest, recursive=True):
                modified = item.last_modified.timestamp() if item.last_modified is not None else 0.0
                yield f"{bucket_name}/{item.object_name}", modified
        except S3Error as error:
            if error.code == "NoSuchBucket":
                return
            raise _store_error(f"cannot list {prefix}", error) from error
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise _store_error(f"cannot list {prefix}", error) from error

    def set_expiry(self, bucket: str, days_by_prefix: dict[str, int]) -> bool:
        """Bucket lifecycle rules: one Expiration-after-days rule per prefix."""
        name = self._bucket_prefix + bucket
        self._ensure_bucket(name)
        rules = [
            Rule(
                ENABLED,
                rule_filter=Filter(prefix=prefix),
                rule_id=f"expire-{prefix.strip('/')}",
                expiration=Expiration(days=days),
            )
            for prefix, days in sorted(days_by_prefix.items())
        ]
        try:
            self._client.set_bucket_lifecycle(name, LifecycleConfig(rules))
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise _store_error(f"cannot set the lifecycle rules of bucket {name}", error) from error
        return True

    def expiry_rules(self, bucket: str) -> dict[str, int]:
        """The bucket's lifecycle expiry rules as {prefix: days} (what `set_expiry` set)."""
        name = self._bucket_prefix + bucket
        try:
            config = self._client.get_bucket_lifecycle(name)
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise StorageUnavailable(f"cannot read the lifecycle rules of bucket {name}: {error}") from error
        if config is None:
            return {}
        return {
            rule.rule_filter.prefix if rule.rule_filter else "": rule.expiration.days
            for rule in config.rules
            if rule.expiration is not None and rule.expiration.days
        }

    def ping(self) -> None:
        try:
            self._client.bucket_exists(self._bucket_prefix + BUCKETS[0])
        except S3Error as error:
            # A refusal is an answer: the store is up, this credential just has no grant there.
            if error.code != "AccessDenied":
                raise StorageUnavailable(f"cannot reach S3 endpoint: {error}") from error
        except (MinioException, urllib3.exceptions.HTTPError) as error:
            raise StorageUnavailable(f"cannot reach S3 endpoint: {error}") from error

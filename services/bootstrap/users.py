"""The services' own credentials, made with the administrators' ones.

Broker users through RabbitMQ's management HTTP API (every RabbitMQ image here enables it);
store users and policies through MinIO's admin API. SeaweedFS has no users to make: it reads
its identities from a file at start (deploy/images/seaweedfs/identities.json).
Every call is idempotent: a user that exists gets its password and permissions set again.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.parse
import urllib.request

import urllib3
from minio.credentials import StaticProvider
from minio.error import MinioAdminException, MinioException
from minio.minioadmin import MinioAdmin

from services.bootstrap.access import BrokerPermissions, StoreGrant, minio_policy, user_name
from shared.errors import BrokerUnavailable, StorageUnavailable

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 10


class BrokerAdmin:
    """RabbitMQ's management API at `base_url` (http://host:15672), as `user`."""

    def __init__(self, base_url: str, user: str, password: str, vhost: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.vhost = vhost
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}

    def _put(self, path: str, body: dict[str, object]) -> None:
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), headers=self._headers, method="PUT"
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S):
                pass
        except (urllib.error.URLError, OSError) as error:
            raise BrokerUnavailable(f"RabbitMQ management API {path}: {error}") from error

    def grant(self, service: str, password: str, permissions: BrokerPermissions) -> None:
        """Create or update `service`'s user with exactly `permissions` on the vhost."""
        name = urllib.parse.quote(user_name(service), safe="")
        vhost = urllib.parse.quote(self.vhost, safe="")
        self._put(f"/api/users/{name}", {"password": password, "tags": permissions.tags})
        self._put(
            f"/api/permissions/{vhost}/{name}",
            {"configure": permissions.configure, "write": permissions.write, "read": permissions.read},
        )
        log.info(
            "broker user %s: configure %s, write %s, read %s",
            user_name(service),
            permissions.configure,
            permissions.write,
            permissions.read,
        )


class MinioUsers:
    """MinIO's admin API at `endpoint`, as the root user."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, *, secure: bool, bucket_prefix: str) -> None:
        self._admin = MinioAdmin(
            endpoint=endpoint.removeprefix("http://").removeprefix("https://"),
            credentials=StaticProvider(access_key, secret_key),
            secure=secure,
            http_client=urllib3.PoolManager(timeout=urllib3.Timeout(connect=HTTP_TIMEOUT_S, read=HTTP_TIMEOUT_S)),
        )
        self._bucket_prefix = bucket_prefix

    def grant(self, service: str, secret_key: str, grants: tuple[StoreGrant, ...]) -> None:
        """Create or update `service`'s user with a policy of its own allowing exactly `grants`."""
        name = user_name(service)
        try:
            self._admin.user_add(name, secret_key)
            self._admin.policy_add(name, policy=minio_policy(grants, self._bucket_prefix))
            self._admin.policy_set(name, user=name)
        except (MinioAdminException, MinioException, urllib3.exceptions.HTTPError) as error:
            raise StorageUnavailable(f"MinIO admin API, user {name}: {error}") from error
        log.info("store user %s: policy %s", name, name)

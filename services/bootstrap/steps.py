"""The deployment's preparation, step by step (`python -m services.bootstrap` runs them): the
broker's topology and each service's broker user, then the store's buckets, expiry rules,
seeded model and, on MinIO, each service's store user. Every step is idempotent and retried
with backoff until BOOTSTRAP_TIMEOUT_S."""

from __future__ import annotations

import argparse
import logging
import time
import urllib.parse

from services.bootstrap.access import BROKER_ONLY_SERVICES, SERVICES, STORE_GRANTS, broker_permissions
from services.bootstrap.users import BrokerAdmin, MinioUsers
from shared.backoff import Backoff
from shared.errors import TransientError
from shared.messaging.rabbitmq import broker_urls, prepare_topology
from shared.messaging.topology import Topology
from shared.retention import RetentionPolicy, apply_store_expiry
from shared.serving import registry
from shared.settings import Settings
from shared.storage import create_store
from shared.storage.s3 import S3Store

log = logging.getLogger("services.bootstrap")


def service_secrets(settings: Settings, services: tuple[str, ...]) -> dict[str, str]:
    """The services among `services` that have a secret set, with it."""
    secrets = {service: getattr(settings, f"{service}_secret") for service in services}
    return {service: secret for service, secret in secrets.items() if secret}


def prepare_broker(settings: Settings) -> None:
    topology = Topology.from_settings(settings)
    # Raises BrokerUnavailable, a TransientError: retried like an unreachable store.
    prepare_topology(settings.amqp_url, topology, declare=True, timeout_s=30, ca_file=settings.amqp_ca_file)
    log.info("broker: %d queues and %d exchanges declared", len(topology.queues), len(topology.exchanges))
    if not settings.rabbitmq_management_url:
        log.info("broker: no RABBITMQ_MANAGEMENT_URL, so no service users made")
        return
    url = urllib.parse.urlsplit(broker_urls(settings.amqp_url)[0])
    vhost = urllib.parse.unquote(url.path[1:]) if len(url.path) > 1 else "/"
    admin = BrokerAdmin(
        settings.rabbitmq_management_url,
        urllib.parse.unquote(url.username or "guest"),
        urllib.parse.unquote(url.password or "guest"),
        vhost,
    )
    permissions = broker_permissions(topology)
    for service, secret in service_secrets(settings, SERVICES + BROKER_ONLY_SERVICES).items():
        admin.grant(service, secret, permissions[service])


def prepare_store(settings: Settings) -> None:
    store = create_store(settings)
    if isinstance(store, S3Store):
        store.ensure_buckets()
    # The services' own keys may not set lifecycle rules or publish versions: done here.
    apply_store_expiry(store, RetentionPolicy.from_settings(settings))
    seeded = registry.seed_from_directory(store, settings.models_dir)
    log.info("store: buckets ready%s", f", seeded with model {seeded}" if seeded else "")
    if settings.s3_admin_api != "minio":
        return
    users = MinioUsers(
        settings.s3_endpoint,
        settings.s3_access_key,
        settings.s3_secret_key,
        secure=settings.s3_secure,
        bucket_prefix=settings.s3_bucket_prefix,
    )
    for service, secret in service_secrets(settings, SERVICES).items():
        users.grant(service, secret, STORE_GRANTS[service])


def bootstrap(settings: Settings) -> bool:
    """Every step, each retried with backoff until done or BOOTSTRAP_TIMEOUT_S has passed."""
    deadline = time.monotonic() + settings.bootstrap_timeout_s
    for step in (prepare_broker, prepare_store):
        backoff = Backoff(1.0, 10.0)
        while True:
            try:
                step(settings)
                break
            except TransientError as error:
                delay_s = backoff.next()
                if time.monotonic() + delay_s > deadline:
                    log.error("%s failed and time is up: %s", step.__name__, error)
                    return False
                log.warning("%s failed (%s); retrying in %.1fs", step.__name__, error, delay_s)
                time.sleep(delay_s)
    return True


def run(_args: argparse.Namespace, settings: Settings) -> int:
    """Exit status 0 when the deployment is ready, 1 when it could not be made so in time."""
    if not bootstrap(settings):
        return 1
    log.info("deployment ready")
    return 0

"""Who may do what: each service's broker permissions and store grants, in one place.

Least privilege (docs/security.md): the internet-facing gateway cannot delete a model version
or write the labelled dataset; workers write only results; no service may declare or delete a
broker queue (bootstrap declares them). Bootstrap turns this table into RabbitMQ users and
MinIO policies; deploy/images/seaweedfs/identities.json says the same for SeaweedFS, and
tests/deploy/test_access.py checks that it does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.messaging.rpc import DIRECT_REPLY_TO
from shared.messaging.topology import Topology

# The services that get credentials of their own; KEDA (Kubernetes) only reads the `predict`
# queue's depth, and has a broker user only.
SERVICES = ("gateway", "worker", "trainer", "insights")
BROKER_ONLY_SERVICES = ("keda",)


def user_name(service: str) -> str:
    """The broker user and the store access key of `service`."""
    return f"slc-{service}"


@dataclass(frozen=True)
class StoreGrant:
    """Read (get, list) a bucket, and write (put, delete) under some of its prefixes ("" = all of it)."""

    bucket: str
    write_prefixes: tuple[str, ...] = ()


STORE_GRANTS: dict[str, tuple[StoreGrant, ...]] = {
    "gateway": (
        # Prediction images in, staged dataset uploads (the trainer imports them), deletions.
        StoreGrant("uploads", ("predictions/", "datasets/")),
        StoreGrant("results", ("",)),
        StoreGrant("datasets"),
        # Promotion moves the alias and records it; versions themselves are the trainer's.
        StoreGrant("models", ("aliases/", "audit/")),
        StoreGrant("training", ("jobs/",)),
        StoreGrant("insights"),
    ),
    "worker": (
        StoreGrant("uploads"),
        StoreGrant("results", ("",)),
        StoreGrant("models"),
    ),
    "trainer": (
        StoreGrant("uploads", ("datasets/",)),
        StoreGrant("datasets", ("",)),
        StoreGrant("models", ("versions/", "aliases/", "audit/")),
        StoreGrant("training", ("",)),
    ),
    "insights": (
        # The retention sweep deletes expired predictions.
        StoreGrant("uploads", ("predictions/",)),
        StoreGrant("results", ("",)),
        StoreGrant("datasets"),
        StoreGrant("models"),
        StoreGrant("insights", ("",)),
    ),
}


@dataclass(frozen=True)
class BrokerPermissions:
    """RabbitMQ's three regular expressions over resource names (one vhost)."""

    configure: str
    write: str
    read: str
    tags: str = ""


NOTHING = "^$"
# Publishing through the default exchange (jobs to a queue, replies) is a write on this name.
DEFAULT_EXCHANGE = "amq.default"
# A queue the broker names (amq.gen-...): no client may declare one with a name of its choosing
# under amq., so configuring these is declaring one's own exclusive, auto-deleted queue only.
SERVER_NAMED_QUEUES = r"amq\.gen-.*"


def _any_of(*names: str, patterns: tuple[str, ...] = ()) -> str:
    return "^(" + "|".join([*(re.escape(name) for name in names), *patterns]) + ")$"


def broker_permissions(topology: Topology) -> dict[str, BrokerPermissions]:
    """Each service's permissions on the names of `topology` (its namespace included)."""
    predict_dead = topology.dead_letter_queue(topology.predict_queue)
    return {
        "gateway": BrokerPermissions(
            configure=NOTHING,
            write=_any_of(DEFAULT_EXCHANGE, topology.events_exchange),
            read=_any_of(DIRECT_REPLY_TO),
        ),
        "worker": BrokerPermissions(
            # Its own exclusive queue for model.promoted events, bound to `events`.
            configure=f"^{SERVER_NAMED_QUEUES}$",
            write=_any_of(DEFAULT_EXCHANGE, topology.events_exchange, patterns=(SERVER_NAMED_QUEUES,)),
            read=_any_of(
                topology.predict_queue,
                topology.heatmap_queue,
                topology.dead_letter_notices_queue(topology.predict_queue),
                # `replay-dead-letters` moves these back to `predict`.
                predict_dead,
                topology.events_exchange,
                patterns=(SERVER_NAMED_QUEUES,),
            ),
        ),
        "trainer": BrokerPermissions(
            configure=NOTHING,
            write=_any_of(DEFAULT_EXCHANGE, topology.events_exchange),
            read=_any_of(topology.train_queue, topology.dataset_import_queue),
        ),
        "insights": BrokerPermissions(
            configure=NOTHING,
            write=NOTHING,
            read=_any_of(topology.insights_queue, topology.drift_queue),
        ),
        # KEDA reads the queue's depth with a passive declare, which needs no permission: it
        # may connect and nothing more (not consume, which would take jobs away).
        "keda": BrokerPermissions(configure=NOTHING, write=NOTHING, read=NOTHING),
    }


def minio_policy(grants: tuple[StoreGrant, ...], bucket_prefix: str = "") -> dict[str, object]:
    """An S3 (MinIO) policy document allowing exactly `grants`; every bucket name gets `bucket_prefix`."""
    buckets = [f"arn:aws:s3:::{bucket_prefix}{grant.bucket}" for grant in grants]
    statements: list[dict[str, object]] = [
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": buckets},
        {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [f"{bucket}/*" for bucket in buckets]},
    ]
    writable = [
        f"arn:aws:s3:::{bucket_prefix}{grant.bucket}/{prefix}*" for grant in grants for prefix in grant.write_prefixes
    ]
    if writable:
        statements.append({"Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"], "Resource": writable})
    return {"Version": "2012-10-17", "Statement": statements}


def seaweedfs_actions(grants: tuple[StoreGrant, ...]) -> list[str]:
    """The same grants as SeaweedFS identity actions (its Write covers delete)."""
    actions: list[str] = []
    for grant in grants:
        actions += [f"Read:{grant.bucket}", f"List:{grant.bucket}"]
        for prefix in grant.write_prefixes:
            actions.append(f"Write:{grant.bucket}/{prefix}*" if prefix else f"Write:{grant.bucket}")
    return actions

"""The access table (services/bootstrap/access.py) and what the deployment files say of it agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.bootstrap.access import SERVICES, STORE_GRANTS, minio_policy, seaweedfs_actions, user_name
from shared.storage.layout import BUCKETS

REPO = Path(__file__).resolve().parents[2]
IDENTITIES = REPO / "deploy/images/seaweedfs/identities.json"
ENTRYPOINT = REPO / "deploy/images/seaweedfs/entrypoint.sh"


def identities() -> dict[str, dict[str, object]]:
    return {identity["name"]: identity for identity in json.loads(IDENTITIES.read_text())["identities"]}


@pytest.mark.parametrize("service", SERVICES)
def test_seaweedfs_grants_each_service_what_the_access_table_says(service: str) -> None:
    identity = identities()[user_name(service)]
    assert identity["credentials"] == [
        {"accessKey": user_name(service), "secretKey": f"@SLC_{service.upper()}_SECRET@"}
    ]
    assert identity["actions"] == seaweedfs_actions(STORE_GRANTS[service])


def test_seaweedfs_has_no_other_identity_than_the_services_and_the_administrator() -> None:
    assert set(identities()) == {"admin", *(user_name(service) for service in SERVICES)}
    assert "Admin" not in {action for service in SERVICES for action in identities()[user_name(service)]["actions"]}


def test_the_seaweedfs_entrypoint_fills_in_every_placeholder_and_opens_only_s3() -> None:
    placeholders = set(re.findall(r"@(\w+)@", IDENTITIES.read_text()))
    script = ENTRYPOINT.read_text()
    assert all(f"s/@{name}@/${name}/" in script for name in placeholders)
    assert "-ip.bind=127.0.0.1" in script and "-s3.ip.bind=0.0.0.0" in script


def test_grants_name_only_buckets_of_the_layout() -> None:
    assert {grant.bucket for grants in STORE_GRANTS.values() for grant in grants} <= set(BUCKETS)


def test_the_minio_policy_allows_reads_of_the_buckets_and_writes_under_the_prefixes_only() -> None:
    policy = minio_policy(STORE_GRANTS["gateway"], bucket_prefix="p-")
    statements = {tuple(statement["Action"]): statement["Resource"] for statement in policy["Statement"]}
    assert "arn:aws:s3:::p-models/*" in statements[("s3:GetObject",)]
    writes = statements[("s3:PutObject", "s3:DeleteObject")]
    assert "arn:aws:s3:::p-models/aliases/*" in writes
    assert not any(
        resource.startswith(("arn:aws:s3:::p-datasets", "arn:aws:s3:::p-models/versions")) for resource in writes
    )
    assert all(statement["Effect"] == "Allow" for statement in policy["Statement"])

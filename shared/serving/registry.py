"""Model versions in the store, and the production alias that names the serving one.

A version is visible once its `card.json` exists; the card is written last, so a process
killed while publishing leaves no half-written version, and it is written once: a published
version never changes. The card records the SHA-256 of every file (`artifacts`), and a file
whose bytes differ is refused when it is loaded (`read_verified`). Promotion and rollback only
move the alias (`models/aliases/production.json`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from shared import metrics
from shared.errors import ModelUnavailable, NotFound, ObjectNotFound, PermanentError
from shared.serving.card import ModelCard
from shared.serving.domain import DomainModel
from shared.serving.runtime import ServingModel
from shared.storage import ObjectStore, get_json, layout, put_json

log = logging.getLogger(__name__)

CARD_FILE = "card.json"
KERAS_FILE = "model.keras"


class ArtifactMismatch(PermanentError):
    """A version's file whose bytes are not those its card recorded: never loaded."""

    code = "artifact_mismatch"


class VersionExists(PermanentError):
    """A published version is never written again."""

    code = "version_exists"


def new_version_name(now: float | None = None) -> str:
    """Sortable, unique version names: UTC time of creation plus a short random suffix."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def production_version(store: ObjectStore) -> str | None:
    try:
        return str(get_json(store, layout.PRODUCTION_ALIAS)["version"])
    except ObjectNotFound:
        return None


def read_card(store: ObjectStore, version: str) -> ModelCard:
    try:
        return ModelCard.of(get_json(store, layout.model_file(version, CARD_FILE)))
    except ObjectNotFound:
        raise NotFound(f"no model version {version!r}") from None


def list_versions(store: ObjectStore) -> list[str]:
    """Every complete version (one with a card), oldest first."""
    suffix = "/" + CARD_FILE
    versions = []
    for key in store.list(layout.MODEL_VERSIONS_PREFIX):
        if key.endswith(suffix):
            versions.append(key.removeprefix(layout.MODEL_VERSIONS_PREFIX).removesuffix(suffix))
    return sorted(versions)


def published_card(store: ObjectStore, version: str) -> ModelCard | None:
    """The card of `version` if it is published, else None."""
    try:
        return read_card(store, version)
    except NotFound:
        return None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def publish_version(store: ObjectStore, version: str, files: dict[str, bytes], card: dict[str, Any]) -> None:
    """Store a version's files, then its card with each file's SHA-256: the card's arrival
    makes the version visible. Raises VersionExists for a published version."""
    if published_card(store, version) is not None:
        raise VersionExists(f"model version {version} is already published; versions never change")
    for filename, data in files.items():
        store.put(layout.model_file(version, filename), data)
    hashes = {filename: sha256_of(data) for filename, data in files.items()}
    put_json(store, layout.model_file(version, CARD_FILE), {**card, "version": version, "artifacts": hashes})


def read_verified(store: ObjectStore, card: ModelCard, filename: str) -> bytes:
    """A version's file, checked against the SHA-256 its card recorded (cards older than the
    record are read unchecked). Raises ArtifactMismatch, logged and counted, for other bytes."""
    version = card.version
    data = store.get(layout.model_file(version, filename))
    expected = card.artifacts.get(filename)
    if expected is not None and sha256_of(data) != expected:
        metrics.MODEL_ARTIFACTS_REFUSED.labels(version).inc()
        message = (
            f"model {version}: {filename} has SHA-256 {sha256_of(data)[:16]}..., its card recorded"
            f" {expected[:16]}...; refusing it"
        )
        log.error(message)
        raise ArtifactMismatch(message)
    return data


def promote(store: ObjectStore, version: str, *, reason: str) -> dict[str, Any]:
    """Point the production alias at `version` (also the way to roll back).

    Promoting the version already in production changes nothing: a retried promotion (after
    a timeout or a broker outage) must not make the version its own rollback target.
    """
    read_card(store, version)  # raises NotFound for an unknown version
    try:
        current = get_json(store, layout.PRODUCTION_ALIAS)
    except ObjectNotFound:
        current = None
    if current is not None and current.get("version") == version:
        return current
    alias = {
        "version": version,
        "previous": current.get("version") if current is not None else None,
        "promoted_at": time.time(),
        "reason": reason,
    }
    put_json(store, layout.PRODUCTION_ALIAS, alias)
    log.info("production is now %s (%s)", version, reason)
    return alias


def load_serving_model(store: ObjectStore, version: str, *, threads: int = 0) -> ServingModel:
    card = read_card(store, version)
    artifact = read_verified(store, card, card.serving_artifact)
    return ServingModel.from_bytes(version, artifact, card, threads=threads, domain=_domain_model(store, card))


def load_domain_model(store: ObjectStore, version: str) -> DomainModel | None:
    """A version's fitted domain statistics; None for a version packaged without them."""
    return _domain_model(store, read_card(store, version))


def _domain_model(store: ObjectStore, card: ModelCard) -> DomainModel | None:
    fitted = card.domain
    if not fitted:
        return None
    try:
        return DomainModel.from_bytes(read_verified(store, card, fitted["file"]))
    except ObjectNotFound:
        raise ModelUnavailable(f"model {card.version} names {fitted['file']}, which is missing") from None
    except (OSError, ValueError, KeyError) as error:
        raise ModelUnavailable(f"model {card.version} has unreadable domain statistics: {error}") from error


def load_production(store: ObjectStore, *, threads: int = 0) -> ServingModel:
    version = production_version(store)
    if version is None:
        raise ModelUnavailable("the store has no production model; seed it from models/")
    return load_serving_model(store, version, threads=threads)


def seed_from_directory(store: ObjectStore, models_dir: Path) -> str | None:
    """Copy the shipped versions (`models_dir/versions/*`) into an empty store and promote
    the one `models_dir/aliases/production.json` names. Does nothing when production is set."""
    if production_version(store) is not None:
        return None
    alias_path = models_dir / "aliases" / "production.json"
    if not alias_path.is_file():
        raise ModelUnavailable(f"no shipped model to seed the store with: {alias_path} is missing")
    version = json.loads(alias_path.read_text())["version"]
    source = models_dir / "versions" / version
    files = {path.name: path.read_bytes() for path in source.iterdir() if path.is_file() and path.name != CARD_FILE}
    card = json.loads((source / CARD_FILE).read_text())
    for filename, expected in (card.get("artifacts") or {}).items():
        if sha256_of(files.get(filename, b"")) != expected:
            raise ArtifactMismatch(f"shipped model {version}: {filename} is not the file its card recorded")
    if published_card(store, version) is None:
        publish_version(store, version, files, card)
    promote(store, version, reason="seeded from the shipped models/ folder")
    return version

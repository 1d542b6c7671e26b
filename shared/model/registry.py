"""Model versions in the store, and the production alias that names the serving one.

A version is visible once its `card.json` exists; the card is written last, so a process
killed while publishing leaves no half-written version. Promotion and rollback only move
the alias (`models/aliases/production.json`).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path
from typing import Any

from shared.errors import ModelUnavailable, NotFound, ObjectNotFound
from shared.model.domain import DomainModel
from shared.model.serving import SERVING_ARTIFACT, ServingModel
from shared.storage import ObjectStore, get_json, layout, put_json

log = logging.getLogger(__name__)

CARD_FILE = "card.json"
KERAS_FILE = "model.keras"


def new_version_name(now: float | None = None) -> str:
    """Sortable, unique version names: UTC time of creation plus a short random suffix."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def production_version(store: ObjectStore) -> str | None:
    try:
        return str(get_json(store, layout.PRODUCTION_ALIAS)["version"])
    except ObjectNotFound:
        return None


def read_card(store: ObjectStore, version: str) -> dict[str, Any]:
    try:
        return get_json(store, layout.model_file(version, CARD_FILE))
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


def publish_version(store: ObjectStore, version: str, files: dict[str, bytes], card: dict[str, Any]) -> None:
    """Store a version's files, then its card: the card's arrival makes the version visible."""
    for filename, data in files.items():
        store.put(layout.model_file(version, filename), data)
    put_json(store, layout.model_file(version, CARD_FILE), {**card, "version": version})


def promote(store: ObjectStore, version: str, *, reason: str) -> dict[str, Any]:
    """Point the production alias at `version` (also the way to roll back)."""
    read_card(store, version)  # raises NotFound for an unknown version
    alias = {
        "version": version,
        "previous": production_version(store),
        "promoted_at": time.time(),
        "reason": reason,
    }
    put_json(store, layout.PRODUCTION_ALIAS, alias)
    log.info("production is now %s (%s)", version, reason)
    return alias


def load_serving_model(store: ObjectStore, version: str, *, threads: int = 0) -> ServingModel:
    card = read_card(store, version)
    artifact = store.get(layout.model_file(version, card.get("serving_artifact", SERVING_ARTIFACT)))
    return ServingModel.from_bytes(version, artifact, card, threads=threads, domain=_domain_model(store, card))


def load_domain_model(store: ObjectStore, version: str) -> DomainModel | None:
    """A version's fitted domain statistics; None for a version packaged without them."""
    return _domain_model(store, read_card(store, version))


def _domain_model(store: ObjectStore, card: dict[str, Any]) -> DomainModel | None:
    fitted = card.get("domain")
    if not fitted:
        return None
    try:
        return DomainModel.from_bytes(store.get(layout.model_file(card["version"], fitted["file"])))
    except ObjectNotFound:
        raise ModelUnavailable(f"model {card['version']} names {fitted['file']}, which is missing") from None
    except (OSError, ValueError, KeyError) as error:
        raise ModelUnavailable(f"model {card['version']} has unreadable domain statistics: {error}") from error


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
    publish_version(store, version, files, card)
    promote(store, version, reason="seeded from the shipped models/ folder")
    return version

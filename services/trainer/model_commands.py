"""The `train`, `evaluate`, `export` and `package` commands: the training recipe from the command line.

`train` reads collections (HAM10000-style roots, flat folders, external ones) and holds out each one's test part,
trains, picks the operating point on validation, exports the parity-checked serving
artifact and writes `OUT/versions/<version>/`. `evaluate` scores a version's serving
artifact on any folder with benign/ and malignant/; its last output line is one JSON object.
`export` makes a new version of a trained one for another serving runtime, with the same checks.
`package` makes a new version of a trained one with today's serving artifact (trust outputs,
domain statistics), checked against the data it was trained on.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from shared.settings import SERVING_RUNTIMES, Settings

log = logging.getLogger(__name__)


def add_collection_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the collections come from: folders, or the store (train and package)."""
    parser.add_argument(
        "--data",
        type=Path,
        help="a collection to train on: {train,test}/{benign,malignant}/ (e.g. HAM10000; its test/ is its"
        " held-out part) or {benign,malignant}/; its name is the folder's",
    )
    parser.add_argument(
        "--collection",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        help="another collection to train on (repeatable); a {benign,malignant}/ folder is held out by patient"
        " (its manifest.csv) or image hash, as the store would",
    )
    parser.add_argument(
        "--external",
        action="append",
        default=[],
        metavar="[NAME=]DIR",
        help="another clinic's collection (benign/, malignant/; never trained on, repeatable): scored every"
        " epoch and reported in the card; it chooses nothing",
    )
    parser.add_argument("--from-store", action="store_true", help="train on the store's collections")
    parser.add_argument("--out", type=Path, default=Path("var/models"), help="writes OUT/versions/<version>/")
    parser.add_argument("--promote", action="store_true", help="point OUT/aliases/production.json at it")
    parser.add_argument(
        "--clinical-photos",
        type=Path,
        help="clinical photographs (benign/, malignant/): half train the not_dermoscopy detector"
        " (default: the CLINICAL_PHOTOS_DIR setting; none: only the distance rule raises not_dermoscopy)",
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    add_collection_arguments(parser)
    parser.add_argument(
        "--weights",
        help="MobileNetV2 no-top weights: a .h5 path or 'imagenet' (default: the PRETRAINED_WEIGHTS setting)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny run for tests: few images, one epoch")
    parser.add_argument("--limit", type=int, help="use at most this many images per class and part")
    parser.add_argument("--target-sensitivity", type=float, default=0.90)
    parser.add_argument("--views", type=int, help="augmented views cached per training image")
    parser.add_argument("--epochs", type=int, help="maximum fine-tuning epochs")
    parser.add_argument("--finetune-from", help="first backbone layer to fine-tune, e.g. block_11_expand")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other TrainingConfig field, e.g. collection_balance=1.0 (repeatable)",
    )
    parser.add_argument(
        "--runtime",
        choices=SERVING_RUNTIMES,
        help="serving runtime to export and parity-check for (default: the SERVING_RUNTIME setting)",
    )


def add_package_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, required=True, help="the trained version's folder (model.keras)")
    add_collection_arguments(parser)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder with benign/ and malignant/ (or a dataset root: its test/ is used)",
    )
    parser.add_argument("--model-dir", type=Path, help="a version folder (default: the shipped production one)")
    parser.add_argument(
        "--collection",
        help="judge at this collection's own threshold, as a prediction naming it is (default: the global one)",
    )
    parser.add_argument("--report", type=Path, help="also write report.md and plots here")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, required=True, help="a version folder with model.keras")
    parser.add_argument("--runtime", choices=SERVING_RUNTIMES, required=True, help="the runtime to serve it with")
    parser.add_argument(
        "--data", type=Path, required=True, help="images for the parity check: {benign,malignant}/ or a root's test/"
    )
    parser.add_argument("--out", type=Path, default=Path("var/models"), help="writes OUT/versions/<version>/")


def run_train(args: argparse.Namespace, settings: Settings) -> int:
    # TensorFlow is imported here, not at module level: `evaluate` and `--help` stay light.
    from shared.model import card as cards
    from shared.model.data import concatenate, photographs_from, split_validation
    from shared.model.report import write_report
    from shared.model.training import TrainingConfig, train
    from shared.serving.registry import KERAS_FILE, new_version_name

    overrides: dict[str, Any] = {"seed": args.seed, "target_sensitivity": args.target_sensitivity}
    if args.views:
        overrides["views"] = args.views
    if args.epochs:
        overrides["finetune_epochs"] = args.epochs
    if args.finetune_from:
        overrides["finetune_from"] = args.finetune_from
    overrides |= _config_overrides(args.set, TrainingConfig)
    if args.quick:
        config = TrainingConfig.quick(**overrides)
    else:
        config = TrainingConfig(weights=args.weights or settings.pretrained_weights, **overrides)
    limit = args.limit or (12 if args.quick else None)
    collections, source = _load_collections(args, settings, limit)
    trained_on = [c.train for c in collections if c.train is not None]
    if not trained_on:
        raise SystemExit("train needs a collection with training images (--data, --collection or --from-store)")
    train_data, validation = split_validation(concatenate(trained_on), config.validation_fraction)
    log.info("training on %d images, validating on %d", len(train_data), len(validation))

    external = [c.test for c in collections if c.external and c.test is not None]
    result = train(config, train_data, validation, external=concatenate(external) if external else None)
    version = new_version_name()
    folder = args.out / "versions" / version
    folder.mkdir(parents=True, exist_ok=True)
    # Saved before the slower steps below, so a failure there does not lose the training.
    (folder / KERAS_FILE).write_bytes(cards.keras_bytes(result.model))

    candidate = cards.package(
        version,
        result,
        config,
        train_data,
        validation,
        collections,
        source=source,
        runtime=args.runtime or settings.serving_runtime,
        photographs=photographs_from(args.clinical_photos or settings.clinical_photos_dir),
    )
    card = candidate.card
    cards.write_version(folder, candidate.files, card)
    write_report(folder, card, split="test" if candidate.test is not None else "validation")
    if args.promote:
        _promote_in_folder(args.out, version)
    headline = candidate.test or candidate.validation
    print(json.dumps({"version": version, "folder": str(folder), **cards.summary(headline)}))
    return 0


def _promote_in_folder(models_dir: Path, version: str) -> None:
    (models_dir / "aliases").mkdir(parents=True, exist_ok=True)
    (models_dir / "aliases" / "production.json").write_text(json.dumps({"version": version}) + "\n")


def run_package(args: argparse.Namespace, settings: Settings) -> int:
    """A new version of a trained one, packaged as today's versions are: the serving artifact
    with its trust outputs, parity-checked; the domain statistics fitted; every held-out part
    evaluated again through the new artifact. Threshold and calibration carry over (the
    weights are the same); the data must be the very data the card names, or nothing is written.
    """
    import keras

    from shared.model import architecture  # noqa: F401  (registers the model's own layers for loading)
    from shared.model import card as cards
    from shared.model.data import concatenate, photographs_from, split_validation
    from shared.model.report import write_report
    from shared.serving.card import SERVING_ARTIFACT
    from shared.serving.domain import DOMAIN_FILE
    from shared.serving.registry import KERAS_FILE
    from shared.serving.runtime import ServingModel

    old = json.loads((args.model_dir / "card.json").read_text())
    model = keras.saving.load_model(args.model_dir / KERAS_FILE, compile=False)
    collections, _ = _load_collections(args, settings, None)
    train_data, validation = split_validation(
        concatenate([c.train for c in collections if c.train is not None]),
        old["training"]["config"]["validation_fraction"],
    )
    described = cards.describe_collections(train_data, validation, collections)
    if described != old["data"]["collections"]:
        raise SystemExit(f"these folders are not the data {old['version']} was trained on (its card's data differ)")
    name = old.get("serving_artifact", SERVING_ARTIFACT)
    held_out = concatenate([c.test for c in collections if c.test is not None])
    artifact, worst = cards.export_checked(model, held_out.pixels, name)
    plain = ServingModel.from_bytes(old["version"], artifact, old)
    photographs = photographs_from(args.clinical_photos or settings.clinical_photos_dir)
    fitted = cards.fit_domain(model, plain, train_data, validation, photographs)
    served = cards.with_domain(plain, fitted)
    card = _new_version_of(
        old,
        parity=cards.parity_record(_runtime_of(name), worst, len(held_out)),
        domain=fitted.card,
        metrics={
            "validation": cards.metrics_on(served, validation, served.threshold),
            **cards.evaluate_collections(served, collections),
        },
    )
    version = card["version"]
    folder = args.out / "versions" / version
    files = {
        KERAS_FILE: (args.model_dir / KERAS_FILE).read_bytes(),
        name: artifact,
        DOMAIN_FILE: fitted.file,
    }
    cards.write_version(folder, files, card)
    write_report(folder, card, split="test")
    if args.promote:
        _promote_in_folder(args.out, version)
    print(
        json.dumps({"version": version, "packaged_from": old["version"], "max_abs_diff": worst, "domain": fitted.card})
    )
    return 0


def _new_version_of(old: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The card of a new version made from `old`'s weights: named now, pointing back at it."""
    from shared.serving.registry import new_version_name

    return {
        **old,
        "version": new_version_name(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "packaged_from": old["version"],
        "parent_version": old["version"],
        **changes,
    }


def _runtime_of(artifact_name: str) -> str:
    from shared.serving.runtime import RUNTIME_ARTIFACTS

    return next(runtime for runtime, name in RUNTIME_ARTIFACTS.items() if name == artifact_name)


def _load_collections(args: argparse.Namespace, settings: Settings, limit: int | None) -> tuple[list[Any], str]:
    """(collections, source description) from folders or the store."""
    from services.trainer.service_commands import collection_name_for
    from shared import dataset
    from shared.model.data import load_collection_folder, load_store_collections

    if args.from_store:
        from shared.storage import create_store

        return load_store_collections(create_store(settings), limit=limit), "store"
    folders = [(args.data, False)] if args.data else []
    folders += [(_named(text), False) for text in args.collection] + [(_named(text), True) for text in args.external]
    collections = []
    for spec, external in folders:
        name, root = spec if isinstance(spec, tuple) else (collection_name_for(spec), spec)
        collections.append(
            load_collection_folder(
                dataset.check_collection_name(name),
                root,
                external=external,
                holdout_fraction=settings.holdout_fraction,
                limit=limit,
            )
        )
    return collections, "folders " + ", ".join(f"{c.name}" for c in collections)


def _config_overrides(assignments: list[str], config_class: Any) -> dict[str, Any]:
    """`FIELD=VALUE` pairs typed like the config's defaults; an unknown field ends the command."""
    defaults = config_class().as_dict()
    overrides: dict[str, Any] = {}
    for assignment in assignments:
        name, _, text = assignment.partition("=")
        if name not in defaults:
            raise SystemExit(f"--set {name}: not a TrainingConfig field ({', '.join(sorted(defaults))})")
        default = defaults[name]
        if isinstance(default, bool):
            overrides[name] = text.lower() in {"1", "true", "yes"}
        elif isinstance(default, tuple):
            overrides[name] = tuple(float(part) for part in text.split(",") if part)
        elif default is None:
            overrides[name] = text or None
        else:
            overrides[name] = type(default)(text)
    return overrides


def _named(text: str) -> tuple[str, Path] | Path:
    """`NAME=DIR` as (NAME, DIR); a plain DIR as itself (its name is the folder's)."""
    name, equals, folder = text.partition("=")
    return (name, Path(folder)) if equals else Path(text)


def run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from shared.model.card import evaluate_artifact, summary
    from shared.model.data import load_folder
    from shared.model.report import write_report
    from shared.serving.card import ModelCard

    folder = args.model_dir or _production_folder(settings.models_dir)
    card = ModelCard.of(json.loads((folder / "card.json").read_text()))
    artifact = (folder / card.serving_artifact).read_bytes()
    if not (args.data / "benign").is_dir() and (args.data / "test").is_dir():
        args.data = args.data / "test"  # a dataset root: its test split is what evaluation means
    data = load_folder(args.data)
    own = args.collection if args.collection in card.collection_thresholds else None
    threshold = card.collection_thresholds[own] if own else card.threshold
    document = card.document
    result = {**evaluate_artifact(artifact, {**document, "threshold": threshold}, data), "threshold_collection": own}
    if args.report:
        write_report(args.report, {**document, "metrics": {"evaluated": result}}, split="evaluated")
    low, high = result["auc_ci95"]
    log.info(
        "AUC %.4f (95%% CI %.4f-%.4f), sensitivity %.3f, specificity %.3f on %d images",
        result["auc"],
        low,
        high,
        result["sensitivity"],
        result["specificity"],
        result["n"],
    )
    print(json.dumps({"version": card.version, "data": str(args.data), **summary(result)}, default=_plain))
    return 0


def run_export(args: argparse.Namespace, _settings: Settings) -> int:
    """Serve a version from another runtime: a new version with the same weights, exported,
    parity-checked, its card carried over (a version never changes).

    The card's metrics carry over: the parity check holds every output to 1e-4 of Keras.
    """
    import keras

    from shared.model import architecture  # noqa: F401  (registers the model's own layers for loading)
    from shared.model import card as cards
    from shared.model.data import load_folder
    from shared.model.report import write_report
    from shared.serving.registry import KERAS_FILE
    from shared.serving.runtime import artifact_for_runtime

    old = json.loads((args.model_dir / "card.json").read_text())
    model = keras.saving.load_model(args.model_dir / KERAS_FILE, compile=False)
    name = artifact_for_runtime(args.runtime)
    data = args.data / "test" if (args.data / "test").is_dir() else args.data
    images = load_folder(data)
    artifact, worst = cards.export_checked(model, images.pixels, name)
    card = _new_version_of(old, serving_artifact=name, parity=cards.parity_record(args.runtime, worst, len(images)))
    version = card["version"]
    kept = [KERAS_FILE, *([old["domain"]["file"]] if old.get("domain") else [])]
    files = {filename: (args.model_dir / filename).read_bytes() for filename in kept}
    folder = args.out / "versions" / version
    cards.write_version(folder, {**files, name: artifact}, card)
    write_report(folder, card, split="test")
    print(json.dumps({"version": version, "exported_from": old["version"], "artifact": name, "max_abs_diff": worst}))
    return 0


def _production_folder(models_dir: Path) -> Path:
    version = json.loads((models_dir / "aliases" / "production.json").read_text())["version"]
    return models_dir / "versions" / version


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)

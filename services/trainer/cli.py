"""The `train`, `evaluate` and `export` commands: the training recipe from the command line.

`train` reads `DATA/train` (and `DATA/test` for the final evaluation, never for choices),
trains, picks the operating point on validation, exports the parity-checked serving
artifact and writes `OUT/versions/<version>/`. `evaluate` scores a version's serving
artifact on any folder with benign/ and malignant/; its last output line is one JSON object.
`export` re-exports a trained version for another serving runtime, with the same checks.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from shared.settings import SERVING_RUNTIMES, Settings

log = logging.getLogger(__name__)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="dataset root holding train/ (and test/, manifest.csv)")
    parser.add_argument("--from-store", action="store_true", help="read datasets/{train,test}/ from the store")
    parser.add_argument(
        "--weights",
        help="MobileNetV2 no-top weights: a .h5 path or 'imagenet' (default: the PRETRAINED_WEIGHTS setting)",
    )
    parser.add_argument("--out", type=Path, default=Path("var/models"), help="writes OUT/versions/<version>/")
    parser.add_argument("--promote", action="store_true", help="point OUT/aliases/production.json at it")
    parser.add_argument("--quick", action="store_true", help="tiny run for tests: few images, one epoch")
    parser.add_argument("--limit", type=int, help="use at most this many images per class and split")
    parser.add_argument("--target-sensitivity", type=float, default=0.90)
    parser.add_argument("--views", type=int, help="augmented views cached per training image")
    parser.add_argument("--epochs", type=int, help="maximum fine-tuning epochs")
    parser.add_argument("--finetune-from", help="first backbone layer to fine-tune, e.g. block_11_expand")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument(
        "--external",
        type=Path,
        help="another clinic's collection (benign/, malignant/; never trained on): scored every epoch,"
        " moves the threshold so its sensitivity target holds there too, and is reported in the card",
    )
    parser.add_argument("--external-name", default="Derm7pt", help="what to call the --external collection")
    parser.add_argument(
        "--runtime",
        choices=SERVING_RUNTIMES,
        help="serving runtime to export and parity-check for (default: the SERVING_RUNTIME setting)",
    )


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="folder with benign/ and malignant/ (or a dataset root: its test/ is used)",
    )
    parser.add_argument("--model-dir", type=Path, help="a version folder (default: the shipped production one)")
    parser.add_argument("--report", type=Path, help="also write report.md and plots here")


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, required=True, help="a version folder with model.keras")
    parser.add_argument("--runtime", choices=SERVING_RUNTIMES, required=True, help="the runtime to serve it with")
    parser.add_argument("--data", type=Path, required=True, help="the dataset root the version was trained on")


def run_train(args: argparse.Namespace, settings: Settings) -> int:
    # TensorFlow is imported here, not at module level: `evaluate` and `--help` stay light.
    from shared.model import card as cards
    from shared.model.data import load_folder, read_manifest_diagnoses, split_validation
    from shared.model.registry import KERAS_FILE, new_version_name
    from shared.model.report import write_report
    from shared.model.training import TrainingConfig, train

    overrides: dict[str, Any] = {"seed": args.seed, "target_sensitivity": args.target_sensitivity}
    if args.views:
        overrides["views"] = args.views
    if args.epochs:
        overrides["finetune_epochs"] = args.epochs
    if args.finetune_from:
        overrides["finetune_from"] = args.finetune_from
    if args.quick:
        config = TrainingConfig.quick(**overrides)
    else:
        config = TrainingConfig(weights=args.weights or settings.pretrained_weights, **overrides)
    limit = args.limit or (12 if args.quick else None)
    everything, test, source = _load_training_data(args, settings, limit, load_folder, read_manifest_diagnoses)
    train_data, validation = split_validation(everything, config.validation_fraction, config.seed)
    log.info("training on %d images, validating on %d", len(train_data), len(validation))

    external = load_folder(args.external, limit=limit) if args.external else None
    result = train(config, train_data, validation, external=external)
    version = new_version_name()
    folder = args.out / "versions" / version
    folder.mkdir(parents=True, exist_ok=True)
    model_file = cards.keras_bytes(result.model)
    # Saved before the slower steps below, so a failure there does not lose the training.
    (folder / KERAS_FILE).write_bytes(model_file)

    candidate = cards.package(
        version,
        result,
        config,
        (train_data, validation, test),
        train_source=f"{source}/train",
        test_source=f"{source}/test",
        external=external,
        external_source=str(args.external) if external is not None else None,
        external_name=args.external_name,
        runtime=args.runtime or settings.serving_runtime,
    )
    card = candidate.card
    cards.write_version(folder, {candidate.artifact_name: candidate.artifact}, card)
    write_report(folder, card, split="test" if test is not None else "validation")
    if args.promote:
        (args.out / "aliases").mkdir(parents=True, exist_ok=True)
        (args.out / "aliases" / "production.json").write_text(json.dumps({"version": version}) + "\n")
    headline = candidate.test or candidate.validation
    print(json.dumps({"version": version, "folder": str(folder), **cards.summary(headline)}))
    return 0


def _load_training_data(args, settings, limit, load_folder, read_manifest_diagnoses):
    """(train/ images, test/ images or None, source description) from a folder or the store."""
    if args.from_store:
        from shared.model.data import load_store
        from shared.storage import create_store

        store = create_store(settings)
        everything = load_store(store, "train", limit=limit)
        try:
            test = load_store(store, "test", limit=limit)
        except FileNotFoundError:
            test = None
        return everything, test, "store:datasets"
    if args.data is None:
        raise SystemExit("train needs --data DIR or --from-store")
    manifest = args.data / "manifest.csv"
    diagnoses = read_manifest_diagnoses(manifest) if manifest.is_file() else None
    everything = load_folder(args.data / "train", diagnoses=diagnoses, limit=limit)
    test = load_folder(args.data / "test", limit=limit) if (args.data / "test").is_dir() else None
    return everything, test, str(args.data)


def run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from shared.model.card import evaluate_artifact, summary
    from shared.model.data import load_folder
    from shared.model.report import write_report
    from shared.model.serving import SERVING_ARTIFACT

    folder = args.model_dir or _production_folder(settings.models_dir)
    card = json.loads((folder / "card.json").read_text())
    artifact = (folder / card.get("serving_artifact", SERVING_ARTIFACT)).read_bytes()
    if not (args.data / "benign").is_dir() and (args.data / "test").is_dir():
        args.data = args.data / "test"  # a dataset root: its test split is what evaluation means
    data = load_folder(args.data)
    result = evaluate_artifact(artifact, card, data)
    if args.report:
        write_report(args.report, {**card, "metrics": {"evaluated": result}}, split="evaluated")
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
    print(json.dumps({"version": card["version"], "data": str(args.data), **summary(result)}, default=_plain))
    return 0


def run_export(args: argparse.Namespace, _settings: Settings) -> int:
    """Serve a version from another runtime: export, parity-check on test, re-evaluate, rewrite the card."""
    import keras

    from shared.model import architecture  # noqa: F401  (registers the model's own layers for loading)
    from shared.model import card as cards
    from shared.model.data import load_folder, split_validation
    from shared.model.registry import KERAS_FILE
    from shared.model.report import write_report
    from shared.model.serving import artifact_for_runtime

    folder = args.model_dir
    card = json.loads((folder / "card.json").read_text())
    config = card["training"]["config"]
    model = keras.saving.load_model(folder / KERAS_FILE, compile=False)
    name = artifact_for_runtime(args.runtime)
    test = load_folder(args.data / "test")
    artifact, worst = cards.export_checked(model, test.pixels, name)
    _, validation = split_validation(load_folder(args.data / "train"), config["validation_fraction"], config["seed"])
    card = {**card, "serving_artifact": name, "parity": cards.parity_record(args.runtime, worst, len(test))}
    card["metrics"] = {
        **card["metrics"],  # an external collection's figures carry over: parity holds them to 1e-4
        "validation": cards.evaluate_artifact(artifact, card, validation),
        "test": cards.evaluate_artifact(artifact, card, test),
    }
    cards.write_version(folder, {name: artifact}, card)
    write_report(folder, card, split="test")
    print(json.dumps({"version": card["version"], "artifact": name, "max_abs_diff": worst}))
    return 0


def _production_folder(models_dir: Path) -> Path:
    version = json.loads((models_dir / "aliases" / "production.json").read_text())["version"]
    return models_dir / "versions" / version


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)

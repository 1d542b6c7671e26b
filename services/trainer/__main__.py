"""Entry point: `python -m services.trainer <command>`. `serve` runs the trainer service
(service_commands.py); `train`, `evaluate`, `export` and `package` work on model versions
from the command line (model_commands.py); `import-dataset` loads a folder into the store."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from services.trainer import model_commands, service_commands
from shared import entrypoint
from shared.entrypoint import Command

COMMANDS = {
    "serve": Command(
        "run the trainer service: consume retrain requests and staged dataset uploads",
        service_commands.run_serve,
        service_commands.add_serve_arguments,
    ),
    "import-dataset": Command(
        "load a labelled folder into the store",
        service_commands.run_import,
        service_commands.add_import_arguments,
    ),
    "train": Command(
        "train, evaluate and write a model version",
        model_commands.run_train,
        model_commands.add_train_arguments,
    ),
    "evaluate": Command(
        "score a model version on a labelled folder",
        model_commands.run_evaluate,
        model_commands.add_evaluate_arguments,
    ),
    "export": Command(
        "re-export a model version for another serving runtime",
        model_commands.run_export,
        model_commands.add_export_arguments,
    ),
    "package": Command(
        "make a new version of a trained one with today's serving artifact and domain statistics",
        model_commands.run_package,
        model_commands.add_package_arguments,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    return entrypoint.build_parser("trainer", __doc__, COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    return entrypoint.run_service("trainer", __doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())

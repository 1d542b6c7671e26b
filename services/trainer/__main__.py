"""Entry point: `python -m services.trainer <command>`. `serve` runs the trainer service
(service_commands.py); `train`, `evaluate`, `export` and `package` work on model versions
from the command line (model_commands.py); `import-dataset` loads a folder into the store."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from services.trainer import model_commands, service_commands
from shared.settings import Settings

# name -> (help, add its arguments, run it)
COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace, Settings], int]]
] = {
    "serve": (
        "run the trainer service: consume retrain requests and staged dataset uploads",
        service_commands.add_serve_arguments,
        service_commands.run_serve,
    ),
    "import-dataset": (
        "load a labelled folder into the store",
        service_commands.add_import_arguments,
        service_commands.run_import,
    ),
    "train": (
        "train, evaluate and write a model version",
        model_commands.add_train_arguments,
        model_commands.run_train,
    ),
    "evaluate": (
        "score a model version on a labelled folder",
        model_commands.add_evaluate_arguments,
        model_commands.run_evaluate,
    ),
    "export": (
        "re-export a model version for another serving runtime",
        model_commands.add_export_arguments,
        model_commands.run_export,
    ),
    "package": (
        "make a new version of a trained one with today's serving artifact and domain statistics",
        model_commands.add_package_arguments,
        model_commands.run_package,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.trainer", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(subparsers.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    # Logs go to stderr, so that stdout carries only the commands' results.
    logging.basicConfig(
        level=settings.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return COMMANDS[args.command][2](args, settings)


if __name__ == "__main__":
    sys.exit(main())

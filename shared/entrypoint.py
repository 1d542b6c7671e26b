"""What every `python -m services.<name>` does, in one place: parse the command line, read the
settings (exit 2 on a bad one), set up logging, run the command asked for (the first one when
none is named) and exit with its status. Each service's `__main__.py` is only its table of
commands.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shared.errors import SkinLesionError
from shared.logs import configure_logging
from shared.settings import Settings


@dataclass(frozen=True)
class Command:
    help: str
    run: Callable[[argparse.Namespace, Settings], int]
    # The command's own arguments, if it has any.
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def build_parser(service: str, description: str | None, commands: dict[str, Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}", description=description)
    subparsers = parser.add_subparsers(dest="command", metavar="{" + ",".join(commands) + "}")
    for name, command in commands.items():
        subparser = subparsers.add_parser(name, help=command.help, description=command.help)
        if command.add_arguments is not None:
            command.add_arguments(subparser)
    return parser


def run_service(
    service: str, description: str | None, commands: dict[str, Command], argv: Sequence[str] | None = None
) -> int:
    """Run the command `argv` names (default: the first of `commands`) and return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(service, description, commands)
    args = parser.parse_args(argv or [next(iter(commands))])
    try:
        settings = Settings.from_env()
    except SkinLesionError as error:
        print(f"{service}: {error}", file=sys.stderr)
        return 2
    # Logs go to stderr, so that stdout carries only the commands' results.
    configure_logging(settings.log_level, service)
    return commands[args.command].run(args, settings)

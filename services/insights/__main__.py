"""Entry point: `python -m services.insights` keeps the dataset snapshot up to date, watches
the input drift of recent predictions and sweeps expired predictions out of the store."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from services.insights.service import serve
from shared.entrypoint import Command, run_service

COMMANDS = {"serve": Command("run the insights service", serve)}


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("insights", __doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())

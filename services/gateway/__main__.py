"""Entry point: `python -m services.gateway` serves the API and UI under gunicorn."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from services.gateway.server import serve
from shared.entrypoint import Command, run_service

COMMANDS = {"serve": Command("serve the API and the web UI", serve)}


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("gateway", __doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())

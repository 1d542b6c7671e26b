"""Entry point: `python -m services.worker [serve]` runs one inference worker;
`python -m services.worker replay-dead-letters` moves dead prediction jobs back to the queue."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from services.worker.service import replay_dead_letters, serve
from shared.entrypoint import Command, run_service

COMMANDS = {
    "serve": Command("run one inference worker", serve),
    "replay-dead-letters": Command("move every dead prediction job back to the queue", replay_dead_letters),
}


def main(argv: Sequence[str] | None = None) -> int:
    return run_service("worker", __doc__, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Logging set-up shared by every service's entry point."""

from __future__ import annotations

import logging


def configure_logging(level: str, service: str) -> None:
    """One line per record, naming the service, so interleaved logs of several stay readable."""
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s {service}[%(process)d] %(name)s: %(message)s",
        force=True,
    )
    # pika logs every reconnect attempt at length; our own warning says it once.
    logging.getLogger("pika").setLevel(logging.WARNING)

"""Entry point: `python -m services.insights` keeps the dataset snapshot up to date."""

from __future__ import annotations

import logging
import signal
import sys

from services.insights.consumer import InsightsConsumer
from services.insights.snapshots import SnapshotBuilder
from shared.errors import SkinLesionError, StorageUnavailable
from shared.logs import configure_logging
from shared.ops_server import start_ops_server
from shared.settings import Settings
from shared.storage import create_store

log = logging.getLogger("services.insights")


def main() -> int:
    """Run until SIGTERM or SIGINT (exit 0); exit 2 when it cannot start, 1 on a crash."""
    try:
        settings = Settings.from_env()
    except SkinLesionError as error:
        print(f"insights: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, "insights")
    store = create_store(settings)
    builder = SnapshotBuilder(store, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
    consumer = InsightsConsumer(settings, builder)

    def readiness() -> tuple[bool, dict[str, str]]:
        checks = {"broker": "ok" if consumer.connected.is_set() else "disconnected"}
        try:
            store.ping()
            checks["storage"] = "ok"
        except StorageUnavailable as error:
            checks["storage"] = str(error)
        return all(state == "ok" for state in checks.values()), checks

    try:
        start_ops_server(settings.http_host, settings.insights_metrics_port, readiness)
    except OSError as error:
        log.error("cannot serve /metrics on port %d: %s", settings.insights_metrics_port, error)
        return 2

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        consumer.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        consumer.run()
    except Exception:
        log.exception("insights stopped on an unexpected error")
        return 1
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())

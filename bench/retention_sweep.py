"""How long the retention sweep takes on the filesystem store: `python -m bench.retention_sweep`.

Fills a temporary filesystem store with N expired predictions spread over days (an upload and
a result each, so 2N objects; N=50,000 gives the 100,000 objects of the issue), plus a day of
fresh ones the sweep must keep, then times one sweep. Prints the numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.retention import RetentionPolicy, sweep
from shared.storage import FilesystemStore, layout


def fill(root: Path, store: FilesystemStore, expired: int, fresh: int, days: int) -> None:
    now = datetime.now(UTC)
    for index in range(expired + fresh):
        day = now - timedelta(days=40 + index % days) if index < expired else now
        job_id = f"{day:%Y%m%d}-{uuid.uuid4().hex}"
        for key, data in (
            (layout.prediction_upload(job_id, "jpg", day), b"\xff\xd8" + bytes(2000)),
            (layout.prediction_result(job_id), b"{}"),
        ):
            store.put(key, data)
            if index < expired:
                stamp = day.timestamp()
                os.utime(root / key, (stamp, stamp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--predictions", type=int, default=50_000, help="expired predictions (2 objects each)")
    parser.add_argument("--fresh", type=int, default=1_000, help="fresh predictions the sweep must keep")
    parser.add_argument("--days", type=int, default=30, help="days the expired predictions are spread over")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="slc-sweep-bench-") as folder:
        root = Path(folder)
        store = FilesystemStore(root)
        started = time.perf_counter()
        fill(root, store, args.predictions, args.fresh, args.days)
        print(f"filled {2 * (args.predictions + args.fresh)} objects in {time.perf_counter() - started:.1f}s")
        os.sync()
        report = sweep(store, RetentionPolicy(days=30))
        print(
            f"sweep: examined {report.examined}, deleted {report.deleted} objects in {report.seconds:.2f}s "
            f"({report.deleted / report.seconds:,.0f} objects/s)"
        )
        again = sweep(store, RetentionPolicy(days=30))
        print(
            f"second sweep (nothing expired): examined {again.examined}, deleted {again.deleted} "
            f"in {again.seconds * 1000:.1f} ms"
        )
        left = sum(1 for _ in store.list("uploads/")) + sum(1 for _ in store.list("results/"))
        print(f"objects left: {left} (the fresh ones: {2 * args.fresh})")


if __name__ == "__main__":
    main()

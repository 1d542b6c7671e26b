"""Memory under large uploads: 50 clients each sending files of about 10 MiB (the upload limit).

Starts the system as bench/end_to_end.py does and drives closed-loop clients with a near-limit
JPEG (6000x4000) and a near-limit PNG (12 MP), then prints throughput, errors and the peak RSS
(VmHWM) of the gateway's processes (summed) and of the largest worker. The gateway bounds how
many requests check uploads at once (UPLOAD_SLOTS, services/gateway/context.py upload_slot),
so its peak should not follow the number of clients.

    PYTHONPATH=. .venv/bin/python -m bench.upload_memory --clients 50
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.end_to_end import DEFAULT_IMAGES, drive, large_images, load_images, models_dir
from bench.system import running_system
from shared.settings import Settings

# (size, format, grain): chosen so each file is just under the default 10 MiB limit.
NEAR_LIMIT = {"jpeg-6000x4000": ((6000, 4000), "JPEG", 12.0), "png-3400x2600": ((3400, 2600), "PNG", 1.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    small = load_images(args.images, 8)
    sets = {name: large_images(small, size, kind, 3, grain) for name, (size, kind, grain) in NEAR_LIMIT.items()}
    for name, files in sets.items():
        sizes = ", ".join(f"{len(data) / 2**20:.1f}" for data in files)
        print(f"{name}: {sizes} MiB (limit {settings.max_upload_bytes / 2**20:.0f} MiB)", flush=True)
    models = models_dir(args.models, settings.serving_runtime)
    print("\n| uploads | clients | req/s | p99 ms | errors | peak RSS MB gateway | worker |\n|" + "---|" * 7)
    with tempfile.TemporaryDirectory(prefix="upload-memory-") as scratch:
        for name, files in sets.items():  # a fresh system per set: VmHWM is a peak since start
            with running_system(
                models, args.workers, settings.worker_max_batch, Path(scratch), Path(scratch)
            ) as system:
                level = drive(system, name, files, args.clients, 5.0, args.seconds)
            rss = level.peak_rss_mb
            print(
                f"| {name} | {args.clients} | {level.requests_per_s:.1f} | {level.percentile_ms(99):.0f} "
                f"| {level.errors} | {rss['gateway']:.0f} | {rss['worker']:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

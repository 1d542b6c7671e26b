"""Where the gateway and a worker spend their CPU under load: py-spy samples at 50 clients.

Starts the system as bench/end_to_end.py does (gateway + workers as processes, fresh broker
namespace, temporary filesystem store), drives closed-loop clients, and meanwhile samples
the gateway (with its gunicorn children) and the first worker with py-spy. Prints, per
process, the functions with the most samples on top of the stack (self) and the project's
own functions with the most samples anywhere in the stack (inclusive). Idle threads are not
sampled, so the shares are of the time the process was busy.

    PYTHONPATH=. .venv/bin/python -m bench.profile_request_path --clients 50 --uploads 224px
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from bench.end_to_end import DEFAULT_IMAGES, UPLOAD_SETS, drive, load_images, models_dir, upload_sets
from bench.system import running_system
from shared.settings import REPO_ROOT, Settings

PY_SPY = Path(sys.executable).with_name("py-spy")
OWN_CODE = (f"{REPO_ROOT}/services/", f"{REPO_ROOT}/shared/")


def record(pid: int, seconds: float, output: Path, gil_only: bool = False) -> subprocess.Popen[bytes]:
    """py-spy in raw (collapsed stacks) format, following gunicorn's forked children."""
    command = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200"]
    command += ["--subprocesses", "--nonblocking", "--format", "raw", "--output", str(output)]
    if gil_only:  # only threads holding the GIL: the Python work that the threads queue for
        command.append("--gil")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize(collapsed: Path, top: int) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top self frames, top inclusive own-code frames) of a py-spy raw file."""
    own_self: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")[1:]]  # the first is the process/thread
        total += count
        own_self[frames[-1] if frames else "?"] += count
        for frame in set(frames):
            if frame.startswith(("services/", "shared/")):
                inclusive[frame] += count
    return total, own_self.most_common(top), inclusive.most_common(top)


def _short(frame: str) -> str:
    """`function (path:line)` -> `path:function`, paths relative to the checkout or site-packages."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for root in (f"{REPO_ROOT}/", "site-packages/", "lib/python3.11/"):
        if root in path:
            path = path.split(root, 1)[1]
            break
    return f"{path}:{name}"


def print_summary(name: str, collapsed: Path, top: int) -> None:
    total, by_self, by_inclusive = summarize(collapsed, top)
    print(f"\n### {name}: {total} busy samples\n\n| self % | function |\n|---|---|")
    for frame, count in by_self:
        print(f"| {100 * count / max(total, 1):.1f} | `{frame}` |")
    print("\n| inclusive % | project function |\n|---|---|")
    for frame, count in by_inclusive:
        print(f"| {100 * count / max(total, 1):.1f} | `{frame}` |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--uploads", choices=list(UPLOAD_SETS), default="224px")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--gil", action="store_true", help="sample only threads that hold the GIL")
    args = parser.parse_args(argv)
    models = models_dir(args.models, Settings.from_env().serving_runtime)
    images = upload_sets([args.uploads], load_images(args.images, 64))[args.uploads]
    with (
        tempfile.TemporaryDirectory(prefix="profile-") as scratch,
        running_system(
            models, args.workers, Settings.from_env().worker_max_batch, Path(scratch), Path(scratch)
        ) as system,
    ):
        outputs = {"gateway": Path(scratch) / "gateway.txt", "worker": Path(scratch) / "worker.txt"}
        pids = {"gateway": system.process_groups["gateway"][0], "worker": system.process_groups["workers"][0]}
        warmup_s = 5.0
        load = threading.Thread(target=drive, args=(system, args.uploads, images, args.clients, warmup_s, args.seconds))
        load.start()
        threading.Event().wait(warmup_s)
        samplers = [record(pids[name], args.seconds, outputs[name], args.gil) for name in outputs]
        for sampler in samplers:
            sampler.wait(args.seconds + 60)
        load.join(args.seconds + 60)
        for name, output in outputs.items():
            print_summary(name, output, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())

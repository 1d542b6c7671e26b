"""The measured inputs of the capacity model (docs/scaling.md) and of the Kubernetes resources.

One run, on this machine, prints JSON with:

1. raw model speed: images/s of one worker's ServingModel with one runtime thread (so per
   core) at batch 1, 2, 4, 8 and 16; batch 1 is measured again at the end, so the spread
   says how noisy the shared machine was during the run;
2. the real gateway + one worker (fresh broker namespace, temporary filesystem store)
   under closed-loop clients: requests/s, latency, CPU seconds per request of the gateway,
   the worker and the broker, and resident memory (idle after start, peak under load) of
   each process group;
3. bytes written to the store per prediction (upload + result);
4. the broker alone: persistent messages/s into and out of a quorum queue with publisher
   confirms and manual acks, and the broker's CPU seconds per message;
5. the insights and trainer services' resident memory when idle.

    PYTHONPATH=. .venv/bin/python -m bench.capacity_inputs --clients 8 --seconds 20

Speed is only printed here, never asserted. Other work on the machine shows in the
`other_cpu_percent` figures and the raw batch-1 start/end spread.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

from bench.end_to_end import DEFAULT_IMAGES, drive, load_images, models_dir, raw_throughput
from bench.system import _broker_process_groups, _group_cpu_s, _spawn, _stop, free_port, running_system
from shared.images import model_input_from_bytes
from shared.messaging.rabbitmq import close_quietly, connect, publish_raw
from shared.serving import registry
from shared.settings import REPO_ROOT, Settings
from shared.storage import FilesystemStore

BATCH_SIZES = (1, 2, 4, 8, 16)
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
READY_TIMEOUT_S = 180.0


# Resident memory of process groups, from /proc


def group_rss_bytes(leaders: list[int]) -> int:
    """Resident bytes of every live process in the groups led by `leaders` (gunicorn forks)."""
    wanted, total = set(leaders), 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in wanted:  # fields[2]: process group; fields[21]: resident pages
            total += int(fields[21]) * PAGE_BYTES
    return total


@dataclass
class PeakSampler:
    """Samples the groups' resident memory every `interval_s` in a thread; keeps the peak of each."""

    groups: dict[str, list[int]]
    interval_s: float = 0.25
    peaks: dict[str, int] = field(default_factory=dict)
    _stopping: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            for name, leaders in self.groups.items():
                self.peaks[name] = max(self.peaks.get(name, 0), group_rss_bytes(leaders))

    @contextmanager
    def running(self) -> Iterator[PeakSampler]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stopping.set()
            thread.join(5)


def mib(value: float) -> float:
    return round(value / 2**20, 1)


# 1. Raw model speed per core


def raw_speeds(models: Path, pixels: np.ndarray, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="capacity-raw-") as store_dir:
        store = FilesystemStore(Path(store_dir))
        registry.seed_from_directory(store, models)
        model = registry.load_production(store, threads=1)
    start = raw_throughput(model, pixels, 1, seconds)
    by_batch = {size: round(raw_throughput(model, pixels, size, seconds), 1) for size in BATCH_SIZES}
    end = raw_throughput(model, pixels, 1, seconds)
    return {
        "model": f"{model.version} ({model.runtime.name})",
        "threads": 1,
        "images_per_s_by_batch": by_batch,
        "batch1_start_end": [round(start, 1), round(end, 1)],
    }


# 2 and 3. The system under closed-loop load, and what it wrote to the store


def store_bytes_per_prediction(store_dir: Path) -> dict[str, float]:
    """Upload and result bytes on disk, divided by the number of results written."""
    uploads = [p.stat().st_size for p in (store_dir / "uploads" / "predictions").rglob("*") if p.is_file()]
    results = [p.stat().st_size for p in (store_dir / "results" / "predictions").rglob("*") if p.is_file()]
    count = max(len(results), 1)
    return {
        "predictions": len(results),
        "upload_bytes_mean": round(sum(uploads) / count),
        "result_bytes_mean": round(sum(results) / count),
    }


def system_under_load(models: Path, images: list[bytes], clients: int, seconds: float, log_dir: Path) -> dict:
    with (
        tempfile.TemporaryDirectory(prefix="capacity-store-") as store_dir,
        running_system(models, 1, Settings().worker_max_batch, Path(store_dir), log_dir) as system,
    ):
        groups = {name: pids for name, pids in system.process_groups.items() if name != "broker"}
        time.sleep(2)
        idle = {name: mib(group_rss_bytes(pids)) for name, pids in groups.items()}
        with PeakSampler(groups).running() as sampler:
            level = drive(system, images, clients, 5.0, seconds)
        done = len(level.latencies_ms)
        cpu_ms_per_request = {
            name: round(10 * level.cpu[name] * seconds / max(done, 1), 2)  # % of a core x s / requests -> ms
            for name in ("gateway", "workers", "broker", "clients")
        }
        return {
            "clients": clients,
            "seconds": seconds,
            "requests_per_s": round(level.requests_per_s, 1),
            "p50_ms": round(level.percentile_ms(50), 1),
            "p99_ms": round(level.percentile_ms(99), 1),
            "errors": level.errors,
            "mean_batch": round(level.mean_batch, 2),
            "cpu_percent": {name: round(value, 1) for name, value in level.cpu.items()},
            "cpu_ms_per_request": cpu_ms_per_request,
            "rss_mib_idle": idle,
            "rss_mib_peak": {name: mib(value) for name, value in sampler.peaks.items()},
            "store": store_bytes_per_prediction(Path(store_dir)),
        }


# 4. The broker alone


def broker_rates(amqp_url: str, messages: int, body_bytes: int) -> dict[str, object]:
    """Publish `messages` persistent messages one confirm at a time (as the gateway does), then
    consume them with manual acks and prefetch 8 (as a worker does), into a fresh quorum queue."""
    queue = f"capacity-{uuid.uuid4().hex[:8]}.probe"
    body = b"x" * body_bytes
    broker = _broker_process_groups()
    connection = connect(amqp_url, timeout_s=10)
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
        channel.confirm_delivery()
        cpu_before, started = _group_cpu_s(broker), time.perf_counter()
        for _ in range(messages):
            publish_raw(channel, "", queue, body, persistent=True, mandatory=False)
        publish_s, publish_cpu = time.perf_counter() - started, _group_cpu_s(broker) - cpu_before
        channel.basic_qos(prefetch_count=8)
        cpu_before, started, received = _group_cpu_s(broker), time.perf_counter(), 0
        for method, _properties, _body in channel.consume(queue, inactivity_timeout=10):
            if method is None:
                break
            channel.basic_ack(method.delivery_tag)
            received += 1
            if received == messages:
                break
        channel.cancel()
        consume_s, consume_cpu = time.perf_counter() - started, _group_cpu_s(broker) - cpu_before
        channel.queue_delete(queue)
    finally:
        close_quietly(connection)
    return {
        "messages": messages,
        "body_bytes": body_bytes,
        "publish_confirmed_per_s": round(messages / publish_s, 1),
        "consume_acked_per_s": round(received / consume_s, 1),
        "broker_cpu_ms_per_message_in_out": round(1000 * (publish_cpu + consume_cpu) / messages, 3),
        "single_publisher_note": "one connection, one message in flight: a floor, not the broker's ceiling",
    }


# 5. Idle services


def idle_rss(module: str, port_setting: str, args: tuple[str, ...], env: dict[str, str], log_path: Path) -> float:
    port = free_port()
    process = _spawn_with_args(module, args, {**env, port_setting: str(port)}, log_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ready(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{module} did not become ready; see {log_path}")
            time.sleep(0.5)
        time.sleep(3)
        return mib(group_rss_bytes([process.pid]))
    finally:
        _stop(process)


def _spawn_with_args(module: str, args: tuple[str, ...], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    if not args:
        return _spawn(module, env, log_path)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _ready(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def idle_services(models: Path, log_dir: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="capacity-idle-") as store_dir:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO_ROOT),
            "MODELS_DIR": str(models),
            "STORE_DIR": store_dir,
            "BROKER_NAMESPACE": f"capacity-{uuid.uuid4().hex[:8]}.",
        }
        return {
            "insights": idle_rss("services.insights", "INSIGHTS_METRICS_PORT", (), env, log_dir / "insights.log"),
            "trainer": idle_rss("services.trainer", "TRAINER_METRICS_PORT", ("serve",), env, log_dir / "trainer.log"),
        }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients against the gateway")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds of load")
    parser.add_argument("--raw-seconds", type=float, default=4.0, help="seconds per raw batch size")
    parser.add_argument("--messages", type=int, default=3000, help="messages for the broker measurement")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of JPEGs to post")
    return parser.parse_args(argv)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds, so every started process is stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    settings = Settings.from_env()
    models = models_dir(None, settings.serving_runtime)
    images = load_images(args.images, 64)
    limits = {"max_bytes": settings.max_upload_bytes, "max_pixels": settings.max_image_pixels}
    pixels = np.stack([model_input_from_bytes(image, **limits) for image in images])
    log_dir = REPO_ROOT / "var" / "bench-logs" / f"capacity-{time.strftime('%Y%m%dT%H%M%S')}"
    log_dir.mkdir(parents=True)
    machine_before = os.getloadavg()[0]
    result = {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "load_average_at_start": round(machine_before, 2),
        "posted_image_bytes_mean": round(sum(map(len, images)) / len(images)),
        "raw": raw_speeds(models, pixels, args.raw_seconds),
        "system": system_under_load(models, images, args.clients, args.seconds, log_dir),
        "broker": broker_rates(settings.amqp_url, args.messages, 400),
        "idle_rss_mib": idle_services(models, log_dir),
        "load_average_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end benchmark: the served model's raw throughput against the whole system's.

One run measures, on the same machine and model:

1. raw in-process ServingModel throughput (images/s) at batch 1 and at the worker's batch
   size, with one runtime thread and with one per core, at the start and at the end
   (the spread shows how noisy the machine was);
2. the real system (gateway + N workers as processes, fresh broker namespace, temporary
   filesystem store) driven by closed-loop HTTP clients at several concurrency levels:
   requests/s, p50/p95/p99 latency, errors, and the ratio of e2e requests/s to the best raw
   batch images/s, measured again right before each level.

An upload-size axis (`--uploads`) sends, against the same running system, the 224 px test
images, 4000x3000 JPEGs (about 3 MB: the test images scaled up with mild noise, so they
compress like camera images) and 12 MP PNGs, all made at run time; one table, one run.

Beside each level it reports where the CPU went (gateway, workers, broker, these clients,
the rest of the machine) and the workers' mean batch size, so a missed target points at
its cause, and the peak RSS of the gateway and of the largest worker so far. Speed is only
ever printed here, never asserted in tests.

`--runtime` (default: the SERVING_RUNTIME setting) picks the serving runtime, onnxruntime or
litert, so two runs compare them on the same model: the shipped model when it is served by
that runtime, else the shipped model re-exported for it, else a random-weight stand-in.

    PYTHONPATH=. .venv/bin/python -m bench.end_to_end --workers 1 2 --concurrency 1 8 50
    PYTHONPATH=. .venv/bin/python -m bench.end_to_end --runtime litert --workers 1 2 --concurrency 1 8 50
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from bench.system import System, batch_totals, cpu_percent, cpu_snapshot, peak_rss_mb, running_system
from shared.images import model_input_from_bytes
from shared.serving import registry
from shared.serving.card import SERVING_ARTIFACT
from shared.serving.runtime import ServingModel, artifact_for_runtime
from shared.settings import REPO_ROOT, SERVING_RUNTIMES, Settings
from shared.storage import FilesystemStore

# The shared HAM10000 test split beside the checkout; read in place, never copied.
DEFAULT_IMAGES = Settings.from_env().datasets_dir / "ham10000" / "test"
# One models folder per runtime: var/bench-model/{onnxruntime,litert}/.
BENCH_MODEL_CACHE = REPO_ROOT / "var" / "bench-model"
BENCH_VERSION = "bench-random"
BENCH_LOGS = REPO_ROOT / "var" / "bench-logs"


# Upload sets of the size axis: name -> (width, height, format) of what the clients post.
UPLOAD_SETS = {"224px": None, "jpeg-4000x3000": (4000, 3000, "JPEG"), "png-4000x3000": (4000, 3000, "PNG")}
LARGE_IMAGE_COUNT = 6  # distinct large images per set (each is posted many times)
JPEG_NOISE_SD = 6.0  # grey levels: enough grain that a 12 MP JPEG at quality 92 is about 3 MB
PNG_NOISE_SD = 0.0  # PNG is lossless: with any grain a 12 MP PNG no longer fits the 10 MiB limit


@dataclass
class Level:
    """One concurrency level's measurements; CPU figures are % of one core (200 = 2 cores)."""

    workers: int
    clients: int
    uploads: str
    latencies_ms: list[float]
    errors: int
    seconds: float
    mean_batch: float
    cpu: dict[str, float]
    raw_batch: float = float("nan")  # raw batch images/s measured just before this level
    round: int = 0  # with --rounds: which pass over the levels this one belongs to
    peak_rss_mb: dict[str, float] = field(default_factory=dict)  # gateway (all processes), largest worker

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


# Model and images


def models_dir(requested: Path | None, runtime: str) -> Path:
    """`requested` as it is; else the shipped production model if `runtime` serves it; else a
    cached copy of it re-exported for `runtime` (from its model.keras), or without one a
    cached random-weight stand-in of the same shape."""
    if requested is not None:
        return requested
    shipped = REPO_ROOT / "models"
    source = _production_folder(shipped)
    if source is not None and _card(source).get("serving_artifact", SERVING_ARTIFACT) == artifact_for_runtime(runtime):
        return shipped
    if source is not None and not (source / registry.KERAS_FILE).is_file():
        source = None
    cache = BENCH_MODEL_CACHE / runtime
    cached = _production_folder(cache)
    if cached is None or cached.name != (source.name if source is not None else BENCH_VERSION):
        _build_cached_model(cache, runtime, source)
    return cache


def _production_folder(models: Path) -> Path | None:
    alias = models / "aliases" / "production.json"
    return models / "versions" / json.loads(alias.read_text())["version"] if alias.is_file() else None


def _card(version_dir: Path) -> dict:
    return json.loads((version_dir / registry.CARD_FILE).read_text())


def _build_cached_model(target: Path, runtime: str, source: Path | None) -> None:
    """Export the Keras model of version folder `source` for `runtime` into the models folder
    `target`, keeping its card's threshold and calibration; without `source`, a MobileNetV2
    alpha 1.0 with random weights (as fast as the trained one). Minutes; done once."""
    artifact_name = artifact_for_runtime(runtime)
    # TensorFlow is imported only here: runs with a cached or shipped model stay light.
    import keras

    from shared.model.architecture import build_model
    from shared.model.card import export_checked, parity_record

    if source is None:
        print(f"no shipped Keras model; building a random-weight MobileNetV2 into {target} (once)", flush=True)
        model = build_model(None)
        card = {"version": BENCH_VERSION, "threshold": 0.5, "calibration": None}
    else:
        print(f"exporting the shipped model {source.name} for {runtime} into {target} (once)", flush=True)
        model = keras.saving.load_model(source / registry.KERAS_FILE, compile=False)
        card = _card(source)
    probe = np.random.default_rng(0).integers(0, 256, (4, *model.input_shape[1:])).astype(np.float32)
    artifact, worst = export_checked(model, probe, artifact_name)  # raises ParityError
    card = {**card, "serving_artifact": artifact_name, "parity": parity_record(runtime, worst, len(probe))}
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built beside the cache and renamed: an interrupted build leaves no half-written cache.
    staging = Path(tempfile.mkdtemp(prefix="bench-model-", dir=target.parent))
    version_dir = staging / "versions" / card["version"]
    version_dir.mkdir(parents=True)
    (version_dir / artifact_name).write_bytes(artifact)
    (version_dir / registry.CARD_FILE).write_text(json.dumps(card))
    (staging / "aliases").mkdir()
    (staging / "aliases" / "production.json").write_text(json.dumps({"version": card["version"]}))
    if target.exists():  # a cache of an older shipped version
        shutil.rmtree(target)
    staging.rename(target)


def load_images(folder: Path, count: int) -> list[bytes]:
    """Up to `count` JPEGs from `folder` (recursively, evenly spread), or synthetic ones."""
    paths = sorted(folder.rglob("*.jpg")) if folder.is_dir() else []
    if not paths:
        print(f"no JPEGs under {folder}; using synthetic images", flush=True)
        return _synthetic_jpegs(count)
    step = max(len(paths) // count, 1)
    return [path.read_bytes() for path in paths[::step][:count]]


def large_images(
    small: list[bytes], size: tuple[int, int], image_format: str, count: int, noise_sd: float | None = None
) -> list[bytes]:
    """`count` camera-sized files made from the test images: scaled up, with grain so they compress like photos."""
    generator = np.random.default_rng(1)
    if noise_sd is None:
        noise_sd = JPEG_NOISE_SD if image_format == "JPEG" else PNG_NOISE_SD
    made = []
    for data in small[:count]:
        scaled = Image.open(io.BytesIO(data)).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        grain = generator.normal(0, noise_sd, (size[1], size[0], 3)).astype(np.float32)
        pixels = np.clip(np.asarray(scaled, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        options = {"quality": 92} if image_format == "JPEG" else {"compress_level": 6}
        Image.fromarray(pixels).save(buffer, image_format, **options)
        made.append(buffer.getvalue())
    return made


def upload_sets(names: list[str], small: list[bytes]) -> dict[str, list[bytes]]:
    sets = {}
    for name in names:
        shape = UPLOAD_SETS[name]
        sets[name] = small if shape is None else large_images(small, shape[:2], shape[2], LARGE_IMAGE_COUNT)
        sizes_mb = [len(data) / 2**20 for data in sets[name]]
        print(f"uploads {name}: {len(sizes_mb)} files, {min(sizes_mb):.2f}-{max(sizes_mb):.2f} MiB", flush=True)
    return sets


def _synthetic_jpegs(count: int) -> list[bytes]:
    generator = np.random.default_rng(0)
    images = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(generator.integers(0, 256, (224, 224, 3), np.uint8)).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


# Raw in-process throughput


def raw_throughput(model: ServingModel, pixels: np.ndarray, batch_size: int, seconds: float) -> float:
    """Images per second of back-to-back `model.predict` calls on batches of `batch_size`."""
    batch = np.stack([pixels[i % len(pixels)] for i in range(batch_size)])
    model.predict(batch)  # warm-up: the first run of a shape allocates buffers
    images = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        model.predict(batch)
        images += batch_size
    return images / (time.perf_counter() - started)


@dataclass
class RawBench:
    """The served model loaded with one runtime thread and with one per core.

    On an idle machine all cores win; when other processes hold a core, threads that wait
    for each other make one thread faster. The best of the two is the model's capacity now.
    """

    models: dict[int, ServingModel]  # by intra-op thread count
    pixels: np.ndarray
    seconds: float

    def measure(self, batch_size: int) -> dict[int, float]:
        """Images/s by thread count."""
        return {
            threads: raw_throughput(model, self.pixels, batch_size, self.seconds)
            for threads, model in self.models.items()
        }

    def best(self, batch_size: int) -> float:
        return max(self.measure(batch_size).values())


def load_raw_bench(folder: Path, pixels: np.ndarray, seconds: float) -> RawBench:
    """The production model of `folder`, loaded as a worker loads it, once per thread count."""
    with tempfile.TemporaryDirectory(prefix="bench-raw-store-") as store_dir:
        store = FilesystemStore(Path(store_dir))
        registry.seed_from_directory(store, folder)
        models = {
            threads: registry.load_production(store, threads=threads) for threads in sorted({1, os.cpu_count() or 1})
        }
    return RawBench(models, pixels, seconds)


# The system under test


@dataclass
class _Window:
    """What the clients record: requests started inside [start, end) count, warm-up ones do not."""

    start: float
    end: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, started: float, ok: bool) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        if started < self.start:
            return
        with self.lock:
            if ok:
                self.latencies_ms.append(elapsed_ms)
            else:
                self.errors += 1


def _client(url: str, images: list[bytes], first: int, step: int, window: _Window, timeout_s: float) -> None:
    """One closed-loop client: post an image, wait for the answer, post the next."""
    with requests.Session() as session:
        turn = first
        while (started := time.perf_counter()) < window.end:
            data = images[turn % len(images)]
            name, content_type = ("lesion.png", "image/png") if data[:4] == b"\x89PNG" else ("lesion.jpg", "image/jpeg")
            files = {"file": (name, data, content_type)}
            turn += step
            try:
                ok = session.post(f"{url}/api/v1/predictions", files=files, timeout=timeout_s).status_code == 200
            except requests.RequestException:
                ok = False
            window.record(started, ok)


def drive(system: System, uploads: str, images: list[bytes], clients: int, warmup_s: float, seconds: float) -> Level:
    """Run `clients` closed-loop clients for `warmup_s` + `seconds`; measure the last `seconds`."""
    timeout_s = Settings.from_env().predict_timeout_s + 5
    start = time.perf_counter() + warmup_s
    window = _Window(start=start, end=start + seconds)
    threads = [
        threading.Thread(target=_client, args=(system.url, images, i, clients, window, timeout_s), daemon=True)
        for i in range(clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(max(window.start - time.perf_counter(), 0))
    cpu_before, batches_before = cpu_snapshot(system), batch_totals(system)
    time.sleep(max(window.end - time.perf_counter(), 0))
    cpu_after, batches_after = cpu_snapshot(system), batch_totals(system)
    for thread in threads:
        thread.join(timeout_s)
    batches = batches_after[1] - batches_before[1]
    return Level(
        workers=len(system.worker_metrics_urls),
        clients=clients,
        uploads=uploads,
        latencies_ms=window.latencies_ms,
        errors=window.errors,
        seconds=seconds,
        mean_batch=(batches_after[0] - batches_before[0]) / batches if batches else float("nan"),
        cpu=cpu_percent(cpu_before, cpu_after, seconds),
        peak_rss_mb=peak_rss_mb(system),
    )


# Report


def print_report(raw: dict[str, dict[int, dict[int, float]]], batch_size: int, levels: list[Level], model: str) -> None:
    """`raw[when][batch size][threads]` is images/s at the start and the end of the run."""
    print(f"\nmodel: {model}; {os.cpu_count()} CPUs; load average now {os.getloadavg()[0]:.2f}")
    print("\n| raw in-process | threads | start img/s | end img/s |\n|---|---|---|---|")
    for size, by_threads in raw["start"].items():
        for threads, start in by_threads.items():
            print(f"| batch {size} | {threads} | {start:.1f} | {raw['end'][size][threads]:.1f} |")
    print(
        f"\n| uploads | workers | clients | req/s | p50 ms | p95 ms | p99 ms | errors | raw batch-{batch_size} img/s "
        "| e2e/raw | req/s vs 224px | mean batch | CPU % gateway | workers | broker | clients | other "
        "| peak RSS MB gateway | worker |\n|" + "---|" * 19
    )
    nan = float("nan")
    for level in levels:
        cpu = level.cpu
        print(
            f"| {level.uploads} | {level.workers} | {level.clients} | {level.requests_per_s:.1f} "
            f"| {level.percentile_ms(50):.0f} | {level.percentile_ms(95):.0f} | {level.percentile_ms(99):.0f} "
            f"| {level.errors} | {level.raw_batch:.1f} | {level.requests_per_s / level.raw_batch:.2f} "
            f"| {_versus_small(level, levels):.2f} | {level.mean_batch:.1f} "
            f"| {cpu['gateway']:.0f} | {cpu['workers']:.0f} "
            f"| {cpu['broker']:.0f} | {cpu['clients']:.0f} | {cpu['other']:.0f} "
            f"| {level.peak_rss_mb.get('gateway', nan):.0f} | {level.peak_rss_mb.get('worker', nan):.0f} |"
        )
    print(
        "\ne2e/raw = e2e req/s / best raw img/s (1 thread or all cores) measured just before the level, "
        f"system idle. CPU in % of one core ({100 * (os.cpu_count() or 1)}% = all); other = rest of the machine. "
        "req/s vs 224px: against the 224 px level of the same workers, clients and round in this run. Peak RSS: "
        "the gateway's processes summed, the largest worker, highest so far in the run."
    )
    if any(level.round for level in levels):
        print_rounds_summary(levels)


def _versus_small(level: Level, levels: list[Level]) -> float:
    """req/s against the 224 px level of the same workers, clients and round (NaN without one)."""
    for small in levels:
        if small.uploads == "224px" and (small.workers, small.clients, small.round) == (
            level.workers,
            level.clients,
            level.round,
        ):
            return level.requests_per_s / small.requests_per_s
    return float("nan")


def print_rounds_summary(levels: list[Level]) -> None:
    """Per level, the median and range over the rounds: what a target should be judged on."""
    print(
        "\n| uploads | workers | clients | rounds | req/s median (range) | p99 ms median (range) "
        "| req/s vs 224px median (range) | CPU ms per request, whole machine, median |\n|" + "---|" * 8
    )
    groups: dict[tuple[str, int, int], list[Level]] = {}
    for level in levels:
        groups.setdefault((level.uploads, level.workers, level.clients), []).append(level)
    for (uploads, workers, clients), group in groups.items():
        rates = [level.requests_per_s for level in group]
        p99s = [level.percentile_ms(99) for level in group]
        ratios = [_versus_small(level, levels) for level in group]
        cpu_ms = [sum(level.cpu.values()) * 10 / level.requests_per_s for level in group if level.requests_per_s]
        print(
            f"| {uploads} | {workers} | {clients} | {len(group)} | {_median_range(rates, 1)} "
            f"| {_median_range(p99s, 0)} | {_median_range(ratios, 2)} | {np.median(cpu_ms):.1f} |"
        )


def _median_range(values: list[float], digits: int) -> str:
    return f"{np.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def _positive(convert: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type that refuses zero and negative numbers with a message naming the value."""

    def parse(text: str) -> float:
        value = convert(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, received {text}")
        return value

    return parse


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the docstring's layout and shows every default."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument(
        "--models",
        type=Path,
        help="models folder (versions/, aliases/production.json); by default models/ when it has a production "
        "model, else a random-weight MobileNetV2 cached in var/bench-model/",
    )
    parser.add_argument(
        "--runtime",
        choices=SERVING_RUNTIMES,
        default=Settings.from_env().serving_runtime,
        help="serving runtime of the model (ignored with --models, whose card decides)",
    )
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of JPEGs to post")
    parser.add_argument(
        "--image-count", type=_positive(int), default=64, help="how many images to sample and cycle through"
    )
    parser.add_argument(
        "--duration", type=_positive(float), default=20.0, help="measured seconds per concurrency level"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each level")
    parser.add_argument("--raw-duration", type=_positive(float), default=5.0, help="seconds per raw measurement")
    parser.add_argument(
        "--concurrency", type=_positive(int), nargs="+", default=[1, 8, 50], help="closed-loop client counts"
    )
    parser.add_argument(
        "--workers", type=_positive(int), nargs="+", default=[1], help="worker counts; one system per count"
    )
    parser.add_argument(
        "--uploads", nargs="+", choices=list(UPLOAD_SETS), default=list(UPLOAD_SETS), help="upload sets (size axis)"
    )
    parser.add_argument(
        "--rounds",
        type=_positive(int),
        default=1,
        help="passes over all levels; with more than one, a summary gives each level's median and range",
    )
    parser.add_argument(
        "--batch-size",
        type=_positive(int),
        default=Settings.from_env().worker_max_batch,
        help="WORKER_MAX_BATCH of the workers",
    )
    return parser.parse_args(argv)


def measure_system(
    models: Path, workers: int, args: argparse.Namespace, raw: RawBench, sets: dict[str, list[bytes]], log_root: Path
) -> list[Level]:
    """Every concurrency level against one fresh system of `workers` workers; its logs go to `log_root`."""
    log_dir = log_root / f"workers-{workers}"
    log_dir.mkdir(parents=True)
    levels = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-store-") as store_dir,
        running_system(models, workers, args.batch_size, Path(store_dir), log_dir) as system,
    ):
        # Rounds outermost: each round's 224 px and large levels run minutes apart at most, so
        # the ratio between them is taken under the same machine speed.
        for round_index in range(args.rounds):
            for uploads, images in sets.items():
                for clients in args.concurrency:
                    # A baseline right before each level, with the system idle: on a shared, noisy
                    # machine the ratio then compares figures taken under the same background load.
                    baseline = raw.best(args.batch_size)
                    level = drive(system, uploads, images, clients, args.warmup, args.duration)
                    level.raw_batch = baseline
                    level.round = round_index
                    levels.append(level)
                    print(
                        f"measured {uploads}, {workers} worker(s), {clients} client(s), round {round_index + 1}: "
                        f"{level.requests_per_s:.1f} req/s, {level.errors} errors",
                        flush=True,
                    )
    return levels


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # SystemExit unwinds the stack, so the `finally` blocks stop what this run started.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    settings = Settings.from_env()
    models = models_dir(args.models, args.runtime)
    images = load_images(args.images, args.image_count)
    limits = {"max_bytes": settings.max_upload_bytes, "max_pixels": settings.max_image_pixels}
    pixels = np.stack([model_input_from_bytes(image, **limits) for image in images])
    raw = load_raw_bench(models, pixels, args.raw_duration)
    sizes = sorted({1, args.batch_size})
    results = {"start": {size: raw.measure(size) for size in sizes}}
    log_root = BENCH_LOGS / time.strftime("%Y%m%dT%H%M%S")
    sets = upload_sets(args.uploads, images)
    levels = [level for workers in args.workers for level in measure_system(models, workers, args, raw, sets, log_root)]
    results["end"] = {size: raw.measure(size) for size in sizes}
    served = next(iter(raw.models.values()))
    print_report(results, args.batch_size, levels, f"{served.version} in {served.runtime.name} from {models}")
    print(f"service logs: {log_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One typed settings object, read from environment variables once at start-up.

Every default works on one machine: the local RabbitMQ, and a filesystem store under
`var/store` unless `S3_ENDPOINT` names a MinIO/S3 endpoint.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parent.parent
# Values of SERVING_RUNTIME (shared.serving.runtime.RUNTIME_ARTIFACTS maps each to its artifact).
SERVING_RUNTIMES = ("onnxruntime", "litert")


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float:
    """The CPUs this process may use: its container's CPU quota when it has one, else its cores.

    `os.cpu_count()` is the host's: a gateway limited to one CPU on a 32-core node would size
    its pools for 32. Reads cgroup v2 `cpu.max`, then v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`.
    """
    cores = float(len(os.sched_getaffinity(0)))
    quota = _cgroup_cpu_quota(cgroup_root)
    return min(cores, quota) if quota is not None else cores


def _cgroup_cpu_quota(root: Path) -> float | None:
    try:
        limit, period = (root / "cpu.max").read_text().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:
        limit = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
        period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        return None if int(limit) <= 0 else int(limit) / int(period)
    except (OSError, ValueError):
        return None


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean, got {text!r}")


@dataclass(frozen=True)
class Settings:
    """Configuration of every service. Field `foo_bar` is read from env `FOO_BAR`."""

    # Broker
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    # Prefix for every queue and exchange name; lets tests and tenants share one broker.
    broker_namespace: str = ""
    # True: each service declares every queue and exchange when it connects (one machine, one
    # broker user). False where `python -m services.bootstrap` declared them and each service's
    # own broker user may not (compose, Kubernetes): services then only check they exist.
    declare_topology: bool = True
    predict_queue_max_length: int = 2000
    # Deliveries a job may have before it is dead-lettered. Transient failures do not spend
    # them (workers hold the job); a worker death or broker restart with the job in hand does.
    delivery_limit: int = 5
    # TLS to the broker: an `amqps://` AMQP_URL verifies the broker's certificate and host name
    # against the CA certificates (PEM) in this file; unset, against the system's. A plain
    # `amqp://` URL does not use it (shared/messaging/rabbitmq.py).
    amqp_ca_file: Path | None = None
    # Storage: filesystem store under store_dir unless s3_endpoint is set.
    s3_endpoint: str = ""
    s3_access_key: str = "minioadmin"
    s3_secret_key: str = "minioadmin"
    s3_secure: bool = False
    # With S3_SECURE=true, the S3 endpoint's certificate is verified against the CA certificates
    # (PEM) in this file; unset, against the system's (shared/storage/s3.py).
    s3_ca_file: Path | None = None
    s3_region: str = "us-east-1"
    # Prefix for bucket names, so several deployments or test runs can share one endpoint.
    s3_bucket_prefix: str = ""
    store_dir: Path = REPO_ROOT / "var" / "store"
    # Privacy: images sent for prediction and their results are deleted this many days after
    # they were stored; 0 keeps nothing once the answer was delivered (at most an hour).
    # Labelled dataset images are never expired. See shared/retention.py.
    prediction_retention_days: int = 30
    # How often the insights service sweeps expired predictions out of the store.
    retention_sweep_interval_s: float = 300.0
    # Gateway
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    gateway_processes: int = 1
    gateway_threads: int = 64
    predict_timeout_s: float = 10.0
    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_files_per_request: int = 32
    write_token: str = ""
    max_dataset_files_per_request: int = 200
    # A client has this long to send its request line and headers, and may pause no longer
    # while sending its body; until its request is whole it holds no gateway thread.
    client_read_timeout_s: float = 10.0
    # Reverse proxies in front of the gateway whose X-Forwarded-For/-Proto/-Host are believed
    # (compose and Kubernetes: 1, the proxy); 0 trusts none, so a client cannot forge its address.
    proxy_hops: int = 0
    # Requests of one gateway process that check and store uploads at once; 0: twice the CPUs
    # the process may use (its container's CPU quota, not the host's core count).
    upload_slots: int = 0
    # Decoded pixels (width x height x bytes per pixel as held in memory) one request may cost,
    # and all requests of a gateway process at once: a few KB of PNG can decode to 160 MB.
    max_decoded_bytes_per_request: int = 512 * 1024 * 1024
    max_decoded_bytes_per_process: int = 256 * 1024 * 1024
    # Prediction jobs one client (address) may have waiting in one gateway process: a few
    # anonymous clients cannot fill the queue (PREDICT_QUEUE_MAX_LENGTH) for everyone.
    max_queued_jobs_per_client: int = 200
    # Training requests may ask for fewer epochs than this, never more.
    max_training_epochs: int = 30
    # Worker
    # Measured on 2 cores (docs/history/performance-runs.md): per-image speed is flat from batch 1 to 16,
    # so small batches and one inference thread per worker (one worker per core) win.
    worker_max_batch: int = 4
    worker_max_wait_ms: float = 5.0
    worker_metrics_port: int = 9101
    inference_threads: int = 1  # 0 = one per core
    # Trainer and insights expose /metrics, /healthz and /readyz on their own ports.
    trainer_metrics_port: int = 9102
    insights_metrics_port: int = 9103
    # Labelled images imported into the store on first start: {train,test}/{benign,malignant}/.
    data_dir: Path = REPO_ROOT / "data"
    # Labelled images of another collection (benign/ and malignant/ at its root, e.g. Derm7pt),
    # imported on start into the store's `external` split: never trained on, and the gate
    # compares candidate and production on it as well as on test. Unset: no external split.
    external_data_dir: Path | None = None
    # The collections DATA_DIR and EXTERNAL_DATA_DIR are imported as; empty: the folder's name.
    data_collection: str = ""
    external_data_collection: str = ""
    # Share of every new trained-on collection held out (by patient, else by image hash) and
    # never trained on: where the collection's metrics come from. Fixed per collection when
    # it is created, so a change never moves an image already stored.
    holdout_fraction: float = 0.2
    # Trainer: "full" is the real recipe; "quick" trains a tiny model in seconds (tests, demos).
    training_profile: str = "full"
    # The gate: a candidate may trail production's test AUC by at most this much, and its
    # test sensitivity at its own operating point by at most the second (0: "not lower").
    gate_auc_tolerance: float = 0.005
    gate_sensitivity_tolerance: float = 0.0
    # A collection's held-out part is judged by the gate with this many malignant cases;
    # smaller ones are reported only.
    gate_min_malignant: int = 30
    # The shared image collections (ham10000/, derm7pt/, isic2020/, clinical-sd198/): read by
    # the benchmarks and by the tests that need real images (heat-map faithfulness, drift).
    datasets_dir: Path = REPO_ROOT.parent / "shared" / "datasets"
    # Clinical photographs (benign/, malignant/; not dermoscopy, e.g. SD-198): half of them
    # train each new version's `not_dermoscopy` warning, the other half is kept out to report
    # on (shared/serving/domain.py). Unset: versions get the `unlike_training` caution only.
    clinical_photos_dir: Path | None = None
    # Model
    models_dir: Path = REPO_ROOT / "models"
    pretrained_weights: str = "imagenet"
    # The runtime new versions are exported, parity-checked and served for: "litert"
    # (model.tflite; the fastest here, docs/model.md) or "onnxruntime" (model.onnx). Workers
    # serve each version with the runtime its card names, so versions of both kinds can be
    # promoted and rolled back freely.
    serving_runtime: str = "litert"
    # Bootstrap only (`python -m services.bootstrap`, run with the administrators' AMQP_URL and
    # S3 keys): RabbitMQ's management API, where it makes each service's broker user; "minio"
    # to make each service's store user and policy too (SeaweedFS reads them from a file); and
    # each service's secret: its broker password and S3 secret key (user slc-<service>).
    # A service whose secret is empty gets no user of its own.
    rabbitmq_management_url: str = ""
    s3_admin_api: str = ""
    gateway_secret: str = dataclasses.field(default="", repr=False)
    worker_secret: str = dataclasses.field(default="", repr=False)
    trainer_secret: str = dataclasses.field(default="", repr=False)
    insights_secret: str = dataclasses.field(default="", repr=False)
    keda_secret: str = dataclasses.field(default="", repr=False)
    bootstrap_timeout_s: float = 300.0
    # Logging
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.prediction_retention_days < 0:
            raise ConfigurationError(
                f"setting PREDICTION_RETENTION_DAYS={self.prediction_retention_days} must be 0 or more days"
            )
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ConfigurationError(f"setting HOLDOUT_FRACTION={self.holdout_fraction} must be in [0, 1)")
        if self.s3_admin_api not in ("", "minio"):
            raise ConfigurationError(f"setting S3_ADMIN_API={self.s3_admin_api!r} must be empty or 'minio'")
        if self.serving_runtime not in SERVING_RUNTIMES:
            raise ConfigurationError(
                f"setting SERVING_RUNTIME={self.serving_runtime!r} is not one of {', '.join(SERVING_RUNTIMES)}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from `environ` (default `os.environ`), then apply `overrides`."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in dataclasses.fields(cls):
            raw = environ.get(spec.name.upper())
            if raw is None:
                continue
            values[spec.name] = _convert(spec.name, spec.type, raw)
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    @property
    def uses_s3(self) -> bool:
        return bool(self.s3_endpoint)

    @property
    def max_request_bytes(self) -> int:
        """Whole-request bound: every file at its own limit, plus room for the form's framing."""
        return self.max_files_per_request * self.max_upload_bytes + 64 * 1024

    @property
    def upload_slot_count(self) -> int:
        """UPLOAD_SLOTS, or twice the CPUs this process may use (the checks are CPU-bound)."""
        return self.upload_slots or max(1, math.ceil(2 * available_cpus()))


_CONVERTERS = {
    "int": int,
    "float": float,
    "bool": _parse_bool,
    "Path": Path,
    # An empty value means unset (`EXTERNAL_DATA_DIR=` in an env file).
    "Path | None": lambda raw: Path(raw) if raw else None,
    "str": str,
}


def _convert(name: str, type_name: object, raw: str) -> object:
    converter = _CONVERTERS.get(str(type_name))
    if converter is None:
        raise ConfigurationError(f"setting {name.upper()} has unsupported type {type_name}")
    try:
        return converter(raw)
    except ValueError as error:
        raise ConfigurationError(f"setting {name.upper()}={raw!r} is not a valid {type_name}: {error}") from error

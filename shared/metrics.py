"""Prometheus metrics of every service, defined once so names cannot drift.

Buckets sit around the latency goal (p99 <= 500 ms through the gateway). The gateway runs
several gunicorn processes, so its metrics use prometheus_client's multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, set by services/gateway/__main__.py before this is imported).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)
INFERENCE_BUCKETS_S = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
PROBABILITY_BUCKETS = tuple(round(step / 20, 2) for step in range(1, 21))
DOMAIN_SCORE_BUCKETS = (0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0)

# Gateway
HTTP_REQUESTS = Counter(
    "slc_http_requests_total", "HTTP requests answered by the gateway.", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "slc_http_request_duration_seconds", "Time to answer an HTTP request.", ["route"], buckets=LATENCY_BUCKETS_S
)
JOBS_PUBLISHED = Counter("slc_prediction_jobs_published_total", "Prediction jobs published to the broker.")
JOBS_REJECTED = Counter("slc_prediction_jobs_rejected_total", "Prediction jobs refused before publishing.", ["reason"])

# Worker
JOBS_PROCESSED = Counter("slc_worker_jobs_total", "Prediction jobs finished by a worker.", ["outcome"])
BATCH_SIZE = Histogram("slc_worker_batch_size", "Images per inference batch.", buckets=BATCH_SIZE_BUCKETS)
QUEUE_WAIT = Histogram(
    "slc_worker_queue_wait_seconds", "Time from submission to the start of inference.", buckets=LATENCY_BUCKETS_S
)
INFERENCE_DURATION = Histogram(
    "slc_worker_inference_seconds", "Model run time of one batch.", buckets=INFERENCE_BUCKETS_S
)
PREDICTIONS = Counter("slc_predictions_total", "Predictions made, by predicted label.", ["label"])
PROBABILITY = Histogram(
    "slc_prediction_probability",
    "Calibrated probability of malignant, per model version (watch for drift).",
    ["model_version"],
    buckets=PROBABILITY_BUCKETS,
)
DOMAIN_SCORE = Histogram(
    "slc_domain_score",
    "Out-of-domain score per model version (1 is the unlike_training threshold; watch for drift).",
    ["model_version"],
    buckets=DOMAIN_SCORE_BUCKETS,
)
DOMAIN_WARNINGS = Counter(
    "slc_domain_warnings_total",
    "Predictions with a domain warning, per model version (unlike_training, not_dermoscopy).",
    ["model_version", "warning"],
)
RETAKE_HINTS = Counter(
    "slc_retake_hints_total",
    "Predictions whose image should be taken again, by reason (blurred, dark, bright).",
    ["reason"],
)
JOBS_HELD = Counter(
    "slc_worker_job_holds_total", "Times a job was held for a retry because the store or the model was unavailable."
)
MODEL_INFO = Gauge("slc_model_info", "1 for the model version a worker serves.", ["version"])
MODEL_SWAPS = Counter("slc_worker_model_swaps_total", "Model versions a worker switched to.")
MODEL_ARTIFACTS_REFUSED = Counter(
    "slc_model_artifacts_refused_total",
    "Model files refused because their SHA-256 differs from the one their card recorded, by version.",
    ["version"],
)

# Trainer
TRAINING_RUNS = Counter("slc_training_runs_total", "Training runs by outcome.", ["outcome"])
TRAINING_DURATION = Histogram(
    "slc_training_duration_seconds", "Wall time of a training run.", buckets=(60, 300, 900, 1800, 3600, 7200)
)

# Insights
INSIGHTS_COMPUTE = Histogram(
    "slc_insights_compute_seconds", "Time to recompute the dataset snapshot.", buckets=(0.1, 0.5, 1, 5, 15, 60, 300)
)
INSIGHTS_IMAGES = Counter("slc_insights_images_processed_total", "Images whose statistics were computed.")
INSIGHTS_SNAPSHOT_TIME = Gauge(
    "slc_insights_snapshot_timestamp_seconds", "Unix time of the latest snapshot (age = now - this)."
)

# Retention (the sweep runs in the insights service)
RETENTION_DELETED = Counter(
    "slc_retention_deleted_objects_total", "Prediction uploads, results, heat maps and tombstones deleted as expired."
)
RETENTION_SWEEP_DURATION = Histogram(
    "slc_retention_sweep_seconds", "Time of one retention sweep over the store.", buckets=(0.1, 0.5, 1, 5, 15, 60, 300)
)

# Input drift (the insights service; services/insights/drift.py)
INPUT_DRIFT = Gauge(
    "slc_input_drift",
    "MMD between the projections of a version's last predictions and its validation images (0: alike).",
    ["model_version"],
)
INPUT_FLAGGED_SHARE = Gauge(
    "slc_input_flagged_share",
    "Share of a version's last predictions with a domain warning (unlike_training, not_dermoscopy).",
    ["model_version", "warning"],
)
INPUT_DRIFT_WINDOW = Gauge(
    "slc_input_drift_window_predictions", "Predictions in a version's drift window.", ["model_version"]
)
INPUT_DRIFT_PREDICTIONS = Counter(
    "slc_input_drift_predictions_total", "Scored predictions the drift monitor took in.", ["model_version"]
)

# Heat maps (workers render them on request; shared/heatmap.py)
HEATMAPS = Counter(
    "slc_heatmaps_total",
    "Heat-map requests a worker answered, by outcome (rendered, refused, unavailable, failed).",
    ["outcome"],
)
HEATMAP_DURATION = Histogram(
    "slc_heatmap_render_seconds",
    "Time to read, draw and store one heat map.",
    buckets=(0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28),
)

#!/usr/bin/env bash
# Start the system on one machine: workers, trainer (which imports DATA_DIR), insights, gateway.
# Ctrl-C (or SIGTERM) stops them all. Uses the local RabbitMQ (AMQP_URL) and, unless
# S3_ENDPOINT is set, a filesystem store under var/store.
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
# One worker per core: each runs ONNX Runtime on one thread (docs/performance.md).
WORKERS=${WORKERS:-$(nproc)}
export PYTHONPATH=${PYTHONPATH:-$(pwd)}
mkdir -p var/log

pids=()
stop() {
  trap - INT TERM EXIT
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

for i in $(seq 1 "$WORKERS"); do
  WORKER_METRICS_PORT=$(( ${WORKER_METRICS_PORT:-9101} + 10 * (i - 1) )) \
    "$PYTHON" -m services.worker >"var/log/worker-$i.log" 2>&1 &
  pids+=($!)
done
"$PYTHON" -m services.trainer serve >var/log/trainer.log 2>&1 &
pids+=($!)
"$PYTHON" -m services.insights >var/log/insights.log 2>&1 &
pids+=($!)
"$PYTHON" -m services.gateway >var/log/gateway.log 2>&1 &
pids+=($!)

url="http://${HTTP_HOST:-127.0.0.1}:${HTTP_PORT:-8000}"
for _ in $(seq 1 120); do
  if "$PYTHON" -c "import urllib.request; urllib.request.urlopen('$url/readyz', timeout=1)" 2>/dev/null; then
    echo "Ready: $url/  (logs in var/log/, Ctrl-C to stop)"
    break
  fi
  sleep 0.5
done
wait -n "${pids[@]}"
echo "a service exited; stopping the rest (see var/log/)" >&2

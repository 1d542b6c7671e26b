#!/usr/bin/env bash
# Start the system on one machine: workers, then the gateway. Ctrl-C (or SIGTERM) stops all.
# Uses the local RabbitMQ (AMQP_URL) and, unless S3_ENDPOINT is set, a filesystem store in var/.
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
WORKERS=${WORKERS:-1}
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
  WORKER_METRICS_PORT=$(( ${WORKER_METRICS_PORT:-9101} + i - 1 )) \
    "$PYTHON" -m services.worker >"var/log/worker-$i.log" 2>&1 &
  pids+=($!)
done
"$PYTHON" -m services.gateway &
pids+=($!)

host=${HTTP_HOST:-127.0.0.1}
port=${HTTP_PORT:-8000}
for _ in $(seq 1 120); do
  if "$PYTHON" -c "import urllib.request,sys; urllib.request.urlopen('http://$host:$port/readyz', timeout=1)" 2>/dev/null; then
    echo "Ready: http://$host:$port/  (logs in var/log/, Ctrl-C to stop)"
    break
  fi
  sleep 0.5
done
wait -n "${pids[@]}"

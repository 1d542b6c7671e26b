#!/usr/bin/env bash
# Start the system on one machine: workers, trainer (which imports DATA_DIR, and EXTERNAL_DATA_DIR
# as an external collection when set: EXTERNAL_DATA_DIR=../shared/datasets/derm7pt), insights, gateway.
# supervise.py restarts a service that exits (with backoff); Ctrl-C (or SIGTERM) stops them all.
# Uses the local RabbitMQ (AMQP_URL) and, unless S3_ENDPOINT is set, a filesystem store under var/store.
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
# One worker per core: each runs its model (the runtime the version's card names) on one thread
# (docs/performance.md).
WORKERS=${WORKERS:-$(nproc)}
export PYTHONPATH=${PYTHONPATH:-$(pwd)}
python=$(printf %q "$PYTHON")  # quoted for the shell-like split of each --service command

services=()
for i in $(seq 1 "$WORKERS"); do
  port=$(( ${WORKER_METRICS_PORT:-9101} + 10 * (i - 1) ))
  services+=(--service "worker-$i=WORKER_METRICS_PORT=$port $python -m services.worker")
done
services+=(--service "trainer=$python -m services.trainer serve")
services+=(--service "insights=$python -m services.insights")
services+=(--service "gateway=$python -m services.gateway")

if [ -z "${WRITE_TOKEN:-}" ]; then
  echo "No WRITE_TOKEN: writes are accepted from the gateway's own pages and from non-browser clients only (set WRITE_TOKEN to require a token)."
fi

# exec: SIGTERM and Ctrl-C go straight to the supervisor, which stops the services in turn.
exec "$PYTHON" deploy/local/supervise.py --log-dir var/log --pid-dir var/run \
  --ready-url "http://${HTTP_HOST:-127.0.0.1}:${HTTP_PORT:-8000}" "${services[@]}"

#!/usr/bin/env bash
# Writes a .env for docker compose with fresh random secrets; never overwrites one.
#
#   deploy/compose/new-env.sh            # writes .env in the repository root
#   deploy/compose/new-env.sh other.env  # or another file (docker compose --env-file other.env)
#
# Hex secrets: nothing in them needs quoting or percent-encoding in AMQP_URL. RabbitMQ and
# Grafana read their passwords only when their volume is new; see docs/operations.md to change them.
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${1:-.env}
if [ -e "$target" ]; then
  echo "$target exists; remove it first to replace its secrets" >&2
  exit 1
fi
secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
umask 077
cat > "$target" <<ENV
# Written by deploy/compose/new-env.sh on $(date -u +%Y-%m-%d). Keep out of git (.gitignore).
COMPOSE_PROJECT_NAME=slc
WRITE_TOKEN=$(secret)
MINIO_ROOT_USER=slc-admin
MINIO_ROOT_PASSWORD=$(secret)
RABBITMQ_USER=slc
RABBITMQ_PASSWORD=$(secret)
# Only the 3-node broker of docker-compose.cluster.yml reads it: the Erlang cookie its nodes share.
RABBITMQ_CLUSTER_COOKIE=$(secret)
GRAFANA_ADMIN_USER=admin
GRAFANA_ADMIN_PASSWORD=$(secret)
ENV
echo "wrote $target (WRITE_TOKEN is the bearer token for uploads, training and promotion)"

#!/usr/bin/env bash
# Writes a .env for docker compose with fresh random secrets; never overwrites one.
#
#   deploy/compose/new-env.sh            # writes .env in the repository root
#   deploy/compose/new-env.sh other.env  # or another file (docker compose --env-file other.env)
#   deploy/compose/new-env.sh .env slc.example.org   # the certificate also names this host
#
# The proxy's TLS certificate: SLC_TLS_CERT and SLC_TLS_KEY from the environment when both are
# set (your own; paths relative to the repository root or absolute), else the one in
# SLC_TLS_DIR (default deploy/compose/tls), which deploy/compose/new-cert.sh writes when
# there is none there (self-signed, for localhost, 127.0.0.1 and the optional host name).
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
if [ -n "${SLC_TLS_CERT:-}" ] && [ -n "${SLC_TLS_KEY:-}" ]; then
  tls_cert=$SLC_TLS_CERT
  tls_key=$SLC_TLS_KEY
elif [ -n "${SLC_TLS_CERT:-}${SLC_TLS_KEY:-}" ]; then
  echo "set both SLC_TLS_CERT and SLC_TLS_KEY (your certificate and its key), or neither" >&2
  exit 1
else
  tls_dir=${SLC_TLS_DIR:-deploy/compose/tls}
  deploy/compose/new-cert.sh "$tls_dir" "${2:-${SLC_TLS_HOSTNAME:-}}"
  # Compose reads relative bind-mount sources from the repository root, as ./path.
  case $tls_dir in /*) ;; *) tls_dir=./$tls_dir ;; esac
  tls_cert=$tls_dir/cert.pem
  tls_key=$tls_dir/key.pem
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
# Each service's own secret: its broker password and S3 secret key, as user slc-<service>
# (only the bootstrap service holds the administrators' ones above; docs/security.md).
SLC_GATEWAY_SECRET=$(secret)
SLC_WORKER_SECRET=$(secret)
SLC_TRAINER_SECRET=$(secret)
SLC_INSIGHTS_SECRET=$(secret)
# Only the 3-node broker of docker-compose.cluster.yml reads it: the Erlang cookie its nodes share.
RABBITMQ_CLUSTER_COOKIE=$(secret)
GRAFANA_ADMIN_USER=admin
GRAFANA_ADMIN_PASSWORD=$(secret)
# The proxy's certificate (chain) and key (docs/proxy-and-tls.md, "TLS").
SLC_TLS_CERT=$tls_cert
SLC_TLS_KEY=$tls_key
ENV
echo "wrote $target (WRITE_TOKEN is the bearer token for uploads, training and promotion)"

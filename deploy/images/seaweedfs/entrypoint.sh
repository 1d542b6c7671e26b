#!/bin/sh
# One `weed server` (master, volume server, filer, S3 gateway) serving S3 on :9000 from /data,
# with one identity allowed everything: MINIO_ROOT_USER / MINIO_ROOT_PASSWORD, the variables
# the MinIO service of docker-compose.yml takes, so the app services need no other settings.
set -eu
: "${MINIO_ROOT_USER:?set MINIO_ROOT_USER}"
: "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD}"
umask 077
cat > /data/s3-identities.json <<JSON
{"identities": [{"name": "root",
  "credentials": [{"accessKey": "$MINIO_ROOT_USER", "secretKey": "$MINIO_ROOT_PASSWORD"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
JSON
# One new volume per bucket instead of seven: a small deployment does not need the spread.
export WEED_MASTER_VOLUME_GROWTH_COPY_1=1
exec weed server \
  -dir=/data \
  -s3 -s3.port=9000 -s3.config=/data/s3-identities.json \
  -s3.port.iceberg=0 -s3.port.lance=0 \
  -master.telemetry=false \
  -master.resumeState=false \
  -master.volumeSizeLimitMB=1024 \
  -volume.max=0 \
  "$@"

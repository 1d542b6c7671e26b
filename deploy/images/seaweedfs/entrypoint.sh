#!/bin/sh
# One `weed server` (master, volume server, filer, S3 gateway) serving S3 on :9000 from /data.
#
# Identities (/etc/seaweedfs/identities.json, services/bootstrap/access.py's table for SeaweedFS):
# the administrator, MINIO_ROOT_USER / MINIO_ROOT_PASSWORD as for the MinIO service of
# docker-compose.yml, used by bootstrap only; and one per service, slc-<service> with the
# secret SLC_<SERVICE>_SECRET, allowed only its own part of the store.
#
# Only S3 listens beyond this container: the master, volume server and filer APIs (and their
# gRPC ports) answer no credentials, so they listen on 127.0.0.1 alone.
set -eu
: "${MINIO_ROOT_USER:?set MINIO_ROOT_USER}"
: "${MINIO_ROOT_PASSWORD:?set MINIO_ROOT_PASSWORD}"
: "${SLC_GATEWAY_SECRET:?set SLC_GATEWAY_SECRET}"
: "${SLC_WORKER_SECRET:?set SLC_WORKER_SECRET}"
: "${SLC_TRAINER_SECRET:?set SLC_TRAINER_SECRET}"
: "${SLC_INSIGHTS_SECRET:?set SLC_INSIGHTS_SECRET}"
umask 077
# The secrets are the hex of deploy/compose/new-env.sh: nothing in them is special to sed.
sed -e "s/@MINIO_ROOT_USER@/$MINIO_ROOT_USER/" \
    -e "s/@MINIO_ROOT_PASSWORD@/$MINIO_ROOT_PASSWORD/" \
    -e "s/@SLC_GATEWAY_SECRET@/$SLC_GATEWAY_SECRET/" \
    -e "s/@SLC_WORKER_SECRET@/$SLC_WORKER_SECRET/" \
    -e "s/@SLC_TRAINER_SECRET@/$SLC_TRAINER_SECRET/" \
    -e "s/@SLC_INSIGHTS_SECRET@/$SLC_INSIGHTS_SECRET/" \
    /etc/seaweedfs/identities.json > /data/s3-identities.json
# One new volume per bucket instead of seven: a small deployment does not need the spread.
export WEED_MASTER_VOLUME_GROWTH_COPY_1=1
exec weed server \
  -dir=/data \
  -ip=127.0.0.1 -ip.bind=127.0.0.1 \
  -s3 -s3.port=9000 -s3.ip.bind=0.0.0.0 -s3.config=/data/s3-identities.json \
  -s3.port.iceberg=0 -s3.port.lance=0 \
  -master.telemetry=false \
  -master.resumeState=false \
  -master.volumeSizeLimitMB=1024 \
  -volume.max=0 \
  "$@"

#!/usr/bin/env bash
# The two base images of the air-gapped stack (docker-compose.airgap.yml), built without any
# image registry: slc-debian:bookworm (debootstrap + docker import, skipped when present) and
# slc-python:3.11-bookworm (Debian's Python 3.11 on it). Run before `docker compose build`.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEBIAN_BASE_IMAGE=${SLC_AIRGAP_DEBIAN_IMAGE:-slc-debian:bookworm}
PYTHON_BASE_IMAGE=${SLC_AIRGAP_PYTHON_IMAGE:-slc-python:3.11-bookworm}
DEBIAN_BASE_IMAGE=$DEBIAN_BASE_IMAGE deploy/images/debian-base.sh
# Cached by docker: rebuilt only when the Debian base or this Dockerfile changes.
docker build --quiet --build-arg DEBIAN_BASE="$DEBIAN_BASE_IMAGE" -t "$PYTHON_BASE_IMAGE" deploy/images/python

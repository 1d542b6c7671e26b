#!/usr/bin/env bash
# Rewrites the Debian locks of the images built on the Debian base: deploy/images/*/debian.lock,
# every package `apt-get install` adds to the base for that image (dependencies included), as
# name=version. The Dockerfiles install exactly those versions, so a mirror that no longer has
# one (a point release or security update replaced it) fails the build instead of drifting.
# Run it then (`make debian-lock`), look at the diff and commit it.
#
# A lock's second line names what the image asks for; this script installs those on the base
# (slc-debian:bookworm, deploy/images/debian-base.sh) in a throwaway container and records what
# was added or changed. Every one of these images
# is built on that base (the app images on slc-python, which is the python lock's).
set -euo pipefail
cd "$(dirname "$0")/../.."
DEBIAN_BASE=${DEBIAN_BASE:-${SLC_AIRGAP_DEBIAN_IMAGE:-slc-debian:bookworm}}

# packages_of LOCK: the names on its "# install:" line.
packages_of() { sed -n 's/^# install: *//p' "$1"; }

# lock IMAGE_DIR: rewrites IMAGE_DIR/debian.lock.
lock() {
  local lockfile=$1/debian.lock wanted body
  wanted=$(packages_of "$lockfile")
  [ -n "$wanted" ] || { echo "$lockfile: no '# install:' line" >&2; exit 2; }
  body=$(docker run --rm --network host "$DEBIAN_BASE" sh -ec "
    apt-get update -qq
    dpkg-query -W -f '\${Package}=\${Version}\n' | sort > /tmp/before
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $wanted >/tmp/log 2>&1 || { cat /tmp/log >&2; exit 1; }
    dpkg-query -W -f '\${Package}=\${Version}\n' | sort > /tmp/after
    comm -13 /tmp/before /tmp/after")
  {
    sed -n '1,/^# install:/p' "$lockfile"
    echo "$body"
  } > "$lockfile.new"
  mv "$lockfile.new" "$lockfile"
  echo "$lockfile: $(echo "$body" | grep -c .) packages"
}

lock deploy/images/python
lock deploy/images/rabbitmq
lock deploy/images/nginx
lock deploy/images/prometheus
lock deploy/images/seaweedfs

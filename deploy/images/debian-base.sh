#!/usr/bin/env bash
# Builds the Debian base image of the air-gapped stack without any image registry:
# debootstrap a minimal Debian bookworm from a Debian mirror, then `docker import` it.
#
#   deploy/images/debian-base.sh            # tags slc-debian:bookworm (skips if present)
#   FORCE=1 deploy/images/debian-base.sh    # rebuild even if the image exists
#
# DEBIAN_MIRROR defaults to the first Debian mirror this machine's apt uses (so a site mirror
# keeps working); DEBIAN_SECURITY_MIRROR likewise. Needs root and debootstrap.
#
# DEBIAN_SNAPSHOT=20261201T000000Z (a snapshot.debian.org time stamp) takes the packages from
# that snapshot of the archive instead, for the base and, through its sources.list, for every
# image built on it: two builds then get the same minbase set too. Not the default: it needs
# snapshot.debian.org, which not every network reaches; the images' debian.lock files must then
# be made from the same snapshot (deploy/images/debian-lock.sh).
set -euo pipefail

IMAGE=${DEBIAN_BASE_IMAGE:-slc-debian:bookworm}
SUITE=bookworm

if [ "${FORCE:-0}" != 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE exists (FORCE=1 rebuilds it)"
  exit 0
fi

# The first URI of a configured Debian archive whose path ends in $1 (debian or debian-security).
apt_mirror() {
  local suffix=$1
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -v '^\s*#' | grep -oE '(https?|file)://[^ ]+' | grep -E "/${suffix}/?$" | head -n 1 || true
}
if [ -n "${DEBIAN_SNAPSHOT:-}" ]; then
  MIRROR=${DEBIAN_MIRROR:-http://snapshot.debian.org/archive/debian/$DEBIAN_SNAPSHOT}
  SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://snapshot.debian.org/archive/debian-security/$DEBIAN_SNAPSHOT}
else
  MIRROR=${DEBIAN_MIRROR:-$(apt_mirror debian)}
  SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(apt_mirror debian-security)}
fi
if [ -z "$MIRROR" ]; then
  echo "no Debian mirror found in /etc/apt; set DEBIAN_MIRROR" >&2
  exit 2
fi

ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/slc-rootfs.XXXXXX")
trap 'rm -rf --one-file-system "$ROOTFS"' EXIT

# Docs, man pages and translations are never read in a container; leaving them out keeps
# every image built on this base smaller. Written before debootstrap installs anything.
mkdir -p "$ROOTFS/etc/dpkg/dpkg.cfg.d"
cat > "$ROOTFS/etc/dpkg/dpkg.cfg.d/01-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG

debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$ROOTFS" "$MIRROR"

{
  echo "deb $MIRROR $SUITE main"
  echo "deb $MIRROR $SUITE-updates main"
  if [ -n "$SECURITY_MIRROR" ]; then echo "deb $SECURITY_MIRROR $SUITE-security main"; fi
} > "$ROOTFS/etc/apt/sources.list"
# Images install with --no-install-recommends anyway; this makes it the default.
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' > "$ROOTFS/etc/apt/apt.conf.d/01-slim"
# A snapshot's Release files are past their Valid-Until date by design.
if [ -n "${DEBIAN_SNAPSHOT:-}" ]; then
  echo 'Acquire::Check-Valid-Until "false";' > "$ROOTFS/etc/apt/apt.conf.d/02-snapshot"
fi
# debootstrap unpacks its first packages without dpkg's excludes: remove those files now, and
# the package caches (every image runs apt-get update before installing).
find "$ROOTFS"/usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
  "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
  "$ROOTFS"/var/log/*.log

tar --numeric-owner -C "$ROOTFS" -c . \
  | docker import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE"
echo "built $IMAGE"

#!/usr/bin/env bash
# Build Jeroboam's container image offline, as root: a Debian root filesystem from debootstrap
# (against the host's configured Debian mirror), Debian's dockerd/iproute2/iptables for the
# worker and PostgreSQL for the database container, and a venv in /opt/jeroboam holding this
# checkout's wheel and its dependencies (built with the host's pip configuration, installed in
# the chroot with --no-index). Nothing comes from a container registry.
#
# Prints the path of the image tarball. Cached: the base rootfs by its package list, the image
# by the checkout's content, both in $JEROBOAM_IMAGE_CACHE (default /var/cache/jeroboam/images).
# With --import, also `docker import`s it as jeroboam:<hash> (and jeroboam:latest) into the
# dockerd that DOCKER_HOST names, unless that tag is already there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${JEROBOAM_IMAGE_CACHE:-/var/cache/jeroboam/images}
SUITE=bookworm
# The first Debian mirror apt is configured with (deb822 or one-line format); the host's sources stay untouched.
MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p; s/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\(http[^[:space:]]*debian\)[[:space:]].*/\2/p' \
  /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | grep -v security | head -n1 || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
# python3 (3.11 on bookworm) for the service; docker.io, iproute2, iptables, busybox-static for the
# worker's local provider (the same commands scripts/host-prereqs.sh installs on a host); postgresql.
PACKAGES="python3 python3-venv ca-certificates docker.io iproute2 iptables busybox-static postgresql"

[[ $(id -u) -eq 0 ]] || { echo "build-images: must run as root (debootstrap, chroot)" >&2; exit 1; }
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"; flock 9   # concurrent builds wait for each other instead of racing

work=$(mktemp -d "$CACHE/.build-XXXXXX")
cleanup() {
  # /proc is mounted in the chroot only while apt runs; never leave it behind
  mountpoint -q "$work/rootfs/proc" && umount -l "$work/rootfs/proc"
  rm -rf "$work"
}
trap cleanup EXIT

in_root() {  # a command in the chroot, with a clean environment (the host's pip settings point at host paths)
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive chroot "$work/rootfs" "$@"
}

base=$CACHE/rootfs-$SUITE-$(echo "$MIRROR $PACKAGES" | sha1sum | cut -c1-12).tar
if [[ ! -s $base ]]; then
  echo "build-images: debootstrap $SUITE from $MIRROR" >&2
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$work/rootfs" "$MIRROR" >&2
  # Daemons must not start inside the chroot while their packages install (they would run on
  # the host), and postgresql gets its cluster from the container's entry point instead.
  printf '#!/bin/sh\nexit 101\n' >"$work/rootfs/usr/sbin/policy-rc.d"; chmod 755 "$work/rootfs/usr/sbin/policy-rc.d"
  mkdir -p "$work/rootfs/etc/postgresql-common"
  echo "create_main_cluster = false" >"$work/rootfs/etc/postgresql-common/createcluster.conf"
  cp /etc/resolv.conf "$work/rootfs/etc/resolv.conf"
  mount -t proc proc "$work/rootfs/proc"
  in_root apt-get update -qq >&2
  # shellcheck disable=SC2086
  in_root apt-get install -y -qq --no-install-recommends $PACKAGES >&2
  in_root apt-get clean
  umount "$work/rootfs/proc"
  rm -f "$work/rootfs/usr/sbin/policy-rc.d" "$work/rootfs/etc/resolv.conf"
  rm -rf "$work/rootfs/var/lib/apt/lists"/*
  tar -C "$work/rootfs" -cf "$base.tmp" . && mv "$base.tmp" "$base"
  rm -rf "$work/rootfs"
fi

# The image's identity: the base plus the files the service is built from (not the README,
# though the wheel carries it as its description: a documentation change needs no new image).
hash=$( { basename "$base"; cd "$ROOT" && git ls-files -co --exclude-standard -- pyproject.toml jeroboam \
  | grep -v __pycache__ | sort | xargs sha1sum; } | sha1sum | cut -c1-12)
image=$CACHE/jeroboam-$hash.tar
if [[ ! -s $image ]]; then
  echo "build-images: image $hash" >&2
  mkdir -p "$work/rootfs" "$work/wheels" "$work/src"
  tar -C "$work/rootfs" -xf "$base"
  # Built from a copy of the checkout's files: setuptools' build/ in the checkout may hold stale modules.
  (cd "$ROOT" && git ls-files -co --exclude-standard | tar -cf - -T -) | tar -C "$work/src" -xf -
  # Wheels with the host's pip (its index and constraints), so the chroot never needs the network.
  python3 -m venv "$work/pip"
  # (its output only on failure: the host's config names index dirs that may be absent, each a warning)
  if ! "$work/pip/bin/pip" wheel -q --disable-pip-version-check -w "$work/wheels" "$work/src" >"$work/pip.log" 2>&1; then
    cat "$work/pip.log" >&2; exit 1
  fi
  mv "$work/wheels" "$work/rootfs/tmp/wheels"
  in_root python3 -m venv /opt/jeroboam
  in_root /opt/jeroboam/bin/pip install -q --no-index --find-links /tmp/wheels --disable-pip-version-check jeroboam >&2
  rm -rf "$work/rootfs/tmp/wheels"
  # The API runs as this user (no capabilities); the worker as root.
  in_root useradd --system --home-dir /var/lib/jeroboam --create-home --shell /usr/sbin/nologin jeroboam
  mkdir -p "$work/rootfs/etc/jeroboam" "$work/rootfs/var/lib/postgresql/data"
  in_root chown postgres:postgres /var/lib/postgresql/data
  in_root /opt/jeroboam/bin/jeroboam --version >&2
  tar -C "$work/rootfs" -cf "$image.tmp" . && mv "$image.tmp" "$image"
  # older images of this cache are superseded
  find "$CACHE" -maxdepth 1 -name 'jeroboam-*.tar' ! -name "$(basename "$image")" -delete
fi

if [[ ${1:-} == --import ]]; then
  if ! docker image inspect "jeroboam:$hash" >/dev/null 2>&1; then
    docker import \
      --change 'ENV PATH=/opt/jeroboam/bin:/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'CMD ["jeroboam", "--help"]' \
      "$image" "jeroboam:$hash" >&2
  fi
  docker tag "jeroboam:$hash" jeroboam:latest
fi
echo "$image"

#!/usr/bin/env bash
# Install, as root on Debian, what the `local` infrastructure provider needs.
# Idempotent: when every command is present it only checks and exits (well under a second).
set -euo pipefail

# command -> Debian package providing it
declare -A NEED=(
  [dockerd]=docker.io            # dockerd 20.10 + its containerd and runc
  [busybox]=busybox-static       # the base image's rootfs (must be statically linked)
  [ip]=iproute2
  [iptables]=iptables            # dockerd --iptables=true inside each node's netns
  [nsenter]=util-linux
  [unshare]=util-linux
  [mount]=mount
)

missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
# busybox may come from the dynamically linked `busybox` package, useless in a bare rootfs
if command -v busybox >/dev/null 2>&1 && ! dpkg -s busybox-static >/dev/null 2>&1; then
  missing+=(busybox-static)
fi
[[ ${#missing[@]} -eq 0 ]] && exit 0

[[ $(id -u) -eq 0 ]] || { echo "host-prereqs: must run as root to install: ${missing[*]}" >&2; exit 1; }
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)

# The provider runs its own dockerds; the package's system dockerd must not start (it would
# claim /run/containerd and add docker0 plus its routes to the host).
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
echo "host-prereqs: installed ${pkgs[*]}"

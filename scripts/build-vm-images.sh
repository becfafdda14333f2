#!/usr/bin/env bash
# Node images of the `vm` infrastructure provider, built offline from Debian packages.
# Idempotent: when the cache is complete it only checks and prints its directory (<1 s).
#
# Leaves in $JEROBOAM_VM_IMAGES (default /var/cache/jeroboam/vm/<IMAGE_VERSION>):
#   vmlinuz       Debian's cloud kernel (from the .deb: nothing is installed into /boot)
#   initrd.img    busybox-static + the virtio modules; it mounts the root disk, unpacks the
#                 node's config disk (a tar, second virtio disk) into /run/jeroboam and
#                 switch_roots to /run/jeroboam/init (written by the provider, per node)
#   rootfs.img    ext4 of a debootstrap'd bookworm with docker.io, iptables, iproute2, python3
#                 and the kernel's modules; nodes boot on a qcow2 overlay of it (a symlink to
#                 rootfs-<time>.img: a rebuild never changes an image that overlays use)
#   VERSION       what was built (the provider's image_id names it)
# The system's apt sources are never changed: the kernel comes by `apt-get download` + `dpkg -x`,
# the root filesystem by debootstrap against the mirror already in the apt sources.
# Kubernetes nodes: etcd and the CNI plugins come as Debian packages; with the Kubernetes
# binaries built (scripts/build-kubernetes.sh, default /var/cache/jeroboam/kubernetes/v1.20.2/bin,
# or $JEROBOAM_K8S_BIN) they go to the same path in the root filesystem, where the kubernetes
# driver's [kubernetes] bin_dir names them; a later run adds them (the image is rebuilt).
set -euo pipefail

IMAGE_VERSION=v1  # bump when what goes into the images changes
CACHE=${JEROBOAM_VM_IMAGES:-/var/cache/jeroboam/vm/$IMAGE_VERSION}
K8S_BIN=${JEROBOAM_K8S_BIN:-/var/cache/jeroboam/kubernetes/v1.20.2/bin}
SUITE=bookworm
ROOT_SIZE=3G
PACKAGES=docker.io,iptables,iproute2,ca-certificates,kmod,procps,netbase,python3,conntrack,ethtool,socat,util-linux,mount,etcd-server,containernetworking-plugins
# Modules the initramfs loads (and their dependencies), in this order.
INITRD_MODULES=(virtio_mmio virtio_blk virtio_net virtio_console ext4)
say() { echo "build-vm-images: $*" >&2; }

k8s_stamp() { [[ -d $K8S_BIN ]] && ls -l --time-style=+%s "$K8S_BIN" | md5sum | cut -c1-12 || echo none; }
complete() {
  [[ -s $CACHE/vmlinuz && -s $CACHE/initrd.img && -s $CACHE/rootfs.img && -s $CACHE/VERSION ]] &&
    grep -qx "k8s $(k8s_stamp)" "$CACHE/VERSION"
}
if complete; then
  say "cached in $CACHE"
  echo "$CACHE"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || { say "must run as root"; exit 1; }
for cmd in qemu-system-x86_64 qemu-img debootstrap mke2fs busybox depmod; do
  command -v "$cmd" >/dev/null || missing+=("$cmd")
done
if [[ -n ${missing[*]:-} ]]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends qemu-system-x86 qemu-utils debootstrap \
    e2fsprogs busybox-static kmod >/dev/null
fi

mkdir -p "$CACHE"
# One build at a time (the main job and the tests may both call this).
exec 9>"$CACHE/.lock"
flock 9
if complete; then echo "$CACHE"; exit 0; fi
WORK=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- kernel --------------------------------------------------------------------------------
KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[[ -n $KPKG ]] || { say "no Debian cloud kernel package found (apt-get update?)"; exit 1; }
KVER=${KPKG#linux-image-}
if [[ ! -s $CACHE/kernel/boot/vmlinuz-$KVER ]]; then
  say "downloading $KPKG"
  (cd "$WORK" && apt-get download -qq -o APT::Sandbox::User=root "$KPKG")
  rm -rf "$CACHE/kernel"
  dpkg -x "$WORK"/"$KPKG"_*.deb "$WORK/kernel"
  depmod -b "$WORK/kernel" "$KVER"  # the .deb ships no modules.dep
  mv "$WORK/kernel" "$CACHE/kernel"
fi
KDIR=$CACHE/kernel

# --- initramfs -----------------------------------------------------------------------------
I=$WORK/initrd
mkdir -p "$I"/{bin,dev,proc,sys,newroot,modules}
cp "$(command -v busybox)" "$I/bin/busybox"
for a in sh mount umount mkdir insmod sleep tar switch_root cat echo ls; do ln -s busybox "$I/bin/$a"; done
: >"$I/modules/order"
for m in "${INITRD_MODULES[@]}"; do
  modprobe -d "$KDIR" -S "$KVER" --show-depends "$m" | awk '$1 == "insmod" {print $2}' |
    while read -r path; do
      base=$(basename "$path")
      grep -qx "$base" "$I/modules/order" && continue
      cp "$path" "$I/modules/$base"
      echo "$base" >>"$I/modules/order"
    done
done
cat >"$I/init" <<'EOF'
#!/bin/sh
# The node's first seconds: load the virtio drivers, mount the root disk (ext4), unpack the
# config disk (a tar the provider wrote) into the new root's /run/jeroboam, hand over.
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
for m in $(cat /modules/order); do insmod "/modules/$m" 2>/dev/null; done
n=0
while [ ! -b /dev/vda ] || [ ! -b /dev/vdb ]; do
  n=$((n + 1)); [ $n -gt 200 ] && { echo "jeroboam: no virtio disks"; sleep 5; exit 1; }
  sleep 0.05
done
# virtio-mmio disks are not named in command-line order: the root disk is the ext4 one
for d in /dev/vda /dev/vdb; do
  if mount -t ext4 -o noatime "$d" /newroot 2>/dev/null; then root=$d; else config=$d; fi
done
[ -n "$root" ] && [ -n "$config" ] || { echo "jeroboam: cannot mount root"; exit 1; }
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /newroot/run
mkdir -p /newroot/run/jeroboam
tar -xf "$config" -C /newroot/run/jeroboam || { echo "jeroboam: bad config disk"; exit 1; }
echo "jeroboam: initramfs done"
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /run/jeroboam/init
EOF
chmod 755 "$I/init"
(cd "$I" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) >"$WORK/initrd.img"

# --- root filesystem -----------------------------------------------------------------------
# the first Debian archive of the apt sources (not its security archive, nor third parties')
MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null |
  grep -oE '^(URIs:|deb) +[^ ]+/debian/?( |$)' | awk '{print $2; exit}' || true)
[[ -n $MIRROR ]] || { say "no Debian mirror in the apt sources"; exit 1; }
if [[ ! -s $CACHE/rootfs.tar ]]; then
  say "debootstrap $SUITE from $MIRROR (a minute or more)"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$WORK/rootfs" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; exit 1; }
  rm -rf "$WORK/rootfs/var/cache/apt/archives/"*.deb "$WORK/rootfs/var/lib/apt/lists/"*
  # the base system, kept so that adding the Kubernetes binaries later needs no debootstrap
  tar -C "$WORK/rootfs" -cf "$CACHE/rootfs.tar.tmp" . && mv "$CACHE/rootfs.tar.tmp" "$CACHE/rootfs.tar"
else
  mkdir "$WORK/rootfs" && tar -C "$WORK/rootfs" -xf "$CACHE/rootfs.tar"
fi
R=$WORK/rootfs
mkdir -p "$R/lib/modules"
cp -a "$KDIR/lib/modules/$KVER" "$R/lib/modules/"
# dockerd, kubelet, etc. are started by the node's agent, never by an init system
rm -f "$R"/etc/systemd/system/multi-user.target.wants/* "$R/etc/docker/daemon.json"
echo node >"$R/etc/hostname"
printf '127.0.0.1 localhost\n' >"$R/etc/hosts"
: >"$R/etc/resolv.conf"
if [[ -d $K8S_BIN ]]; then
  say "adding the Kubernetes binaries of $K8S_BIN"
  mkdir -p "$R$K8S_BIN"
  cp -a "$K8S_BIN"/. "$R$K8S_BIN/"
fi
mke2fs -q -t ext4 -L jeroboam-root -E root_owner=0:0 -d "$R" "$WORK/rootfs.img" "$ROOT_SIZE"

cp "$KDIR/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
printf 'image %s\nkernel %s\nsuite %s\nk8s %s\n' "$IMAGE_VERSION" "$KVER" "$SUITE" "$(k8s_stamp)" \
  >"$WORK/VERSION"
# Nodes' overlays name the root image they were made on: a new one gets a new name, and
# rootfs.img (a symlink) points to the newest. VERSION last: it marks the cache complete.
root=rootfs-$(date +%s).img
mv "$WORK/rootfs.img" "$CACHE/$root"
ln -sfn "$root" "$WORK/rootfs.img"
for f in vmlinuz initrd.img rootfs.img VERSION; do mv -T "$WORK/$f" "$CACHE/$f"; done
say "built in $CACHE"
echo "$CACHE"

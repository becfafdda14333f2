#!/bin/sh
# A vm node's init (the provider puts it on the node's config disk; the initramfs runs it as
# PID 1 on the real root): mounts, modules, network from /run/jeroboam/node.env, then the
# agent (agent.py), which stays PID 1.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# one cgroup v1 hierarchy per controller, as on the hosts of local nodes: Kubernetes 1.20's
# kubelet and the drivers' cgroup set-up expect that layout
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
for c in $(awk '!/^#/ && $4 == 1 {print $1}' /proc/cgroups); do
  mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
done
mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
. /run/jeroboam/node.env
hostname "$HOSTNAME"
echo "$HOSTNAME" >/etc/hostname
printf '127.0.0.1 localhost\n%s %s\n' "$ADDRESS" "$HOSTNAME" >/etc/hosts
# what dockerd (bridge, overlay networks, NAT) and kubelet/kube-proxy need
for m in overlay br_netfilter veth vxlan nf_conntrack ip_tables iptable_filter iptable_nat \
    iptable_mangle xt_conntrack xt_MASQUERADE xt_addrtype xt_mark nf_nat ipt_REJECT ip_vs \
    virtio_balloon; do
  modprobe "$m" 2>/dev/null
done
ip link set lo up
ip addr add "$ADDRESS/$PREFIXLEN" dev eth0
ip link set eth0 up
ip route add default via "$GATEWAY"
echo "jeroboam: network up $ADDRESS"
exec python3 -I -S /run/jeroboam/agent.py

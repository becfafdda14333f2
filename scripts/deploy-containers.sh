#!/usr/bin/env bash
# Run Jeroboam as containers, as root: PostgreSQL, the API and a worker, each its own container
# of the image scripts/build-images.sh makes, on a dockerd of their own.
#
#   deploy-containers.sh up     start (or complete) the deployment; prints the API's URL
#   deploy-containers.sh down   remove the containers, the dockerd and everything under the
#                               deploy dir (delete the clusters first: their nodes are host state)
#
# Settings (environment): JEROBOAM_DEPLOY_DIR (default /var/lib/jeroboam-ctr; keep it short,
# node sockets live under it), JEROBOAM_DEPLOY_API_PORT (9511), JEROBOAM_DEPLOY_DB_PORT (5439),
# JEROBOAM_DEPLOY_CONFIG (an INI file put in jeroboam.conf.d/, read after the generated jeroboam.conf).
#
# The dockerd: own data-root, exec-root, pidfile and unix socket under the deploy dir, with
# --bridge=none --iptables=false --ip-forward=false --ip-masq=false, so it adds no docker0, no
# route and no iptables rule to the host. Every container therefore uses the host's network
# (--net=host): the worker must (below); PostgreSQL and the API listen on 127.0.0.1 only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
D=${JEROBOAM_DEPLOY_DIR:-/var/lib/jeroboam-ctr}
API_PORT=${JEROBOAM_DEPLOY_API_PORT:-9511}
DB_PORT=${JEROBOAM_DEPLOY_DB_PORT:-5439}
export DOCKER_HOST=unix://$D/docker.sock
CONTAINERS=(jeroboam-worker jeroboam-api jeroboam-postgres)

[[ $(id -u) -eq 0 ]] || { echo "deploy-containers: must run as root" >&2; exit 1; }

dockerd_pid() { [[ -s $D/dockerd.pid ]] && kill -0 "$(cat "$D/dockerd.pid")" 2>/dev/null && cat "$D/dockerd.pid"; }

start_dockerd() {
  dockerd_pid >/dev/null && return 0
  # dockerd 20.10 silently adopts a containerd listening there instead of running its own
  if [[ -S /run/containerd/containerd.sock ]]; then
    echo "deploy-containers: /run/containerd/containerd.sock exists; refusing to share that containerd" >&2
    exit 1
  fi
  mkdir -p "$D/docker" "$D/exec"
  echo '{}' >"$D/daemon.json"   # not the host's /etc/docker/daemon.json
  setsid dockerd --config-file "$D/daemon.json" --data-root "$D/docker" --exec-root "$D/exec" \
    --pidfile "$D/dockerd.pid" -H "$DOCKER_HOST" --bridge=none --iptables=false --ip-forward=false \
    --ip-masq=false --cgroup-parent /jeroboam-ctr --storage-driver overlay2 --log-level warn \
    </dev/null >"$D/dockerd.log" 2>&1 &
  for _ in $(seq 300); do
    docker version >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "deploy-containers: dockerd did not start; see $D/dockerd.log" >&2
  tail -n 20 "$D/dockerd.log" >&2
  exit 1
}

# Capability names by bit number (linux/capability.h).
CAPS=(chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap linux_immutable
  net_bind_service net_broadcast net_admin net_raw ipc_lock ipc_owner sys_module sys_rawio sys_chroot
  sys_ptrace sys_pacct sys_admin sys_boot sys_nice sys_resource sys_time sys_tty_config mknod lease
  audit_write audit_control setfcap mac_override mac_admin syslog wake_alarm block_suspend audit_read
  perfmon bpf checkpoint_restore)

# `--privileged`, or, where this host's capability bounding set lacks some capabilities (runc
# then refuses --privileged: "unable to apply caps"), what it amounts to without those: every
# other capability, no seccomp or AppArmor profile, /proc and /sys unmasked, every device.
# Sets the array PRIVILEGED.
privileged() {
  local bnd drop=() i
  bnd=$((16#$(awk '/^CapBnd:/ {print $2}' /proc/self/status)))
  for i in "${!CAPS[@]}"; do (( bnd >> i & 1 )) || drop+=(--cap-drop "${CAPS[i]^^}"); done
  if [[ ${#drop[@]} -eq 0 ]]; then
    PRIVILEGED=(--privileged)
  else
    PRIVILEGED=(--cap-add ALL "${drop[@]}" --security-opt seccomp=unconfined --security-opt apparmor=unconfined
      --security-opt systempaths=unconfined --device-cgroup-rule 'a *:* rwm')
  fi
}

# Sets HOST_ACCESS: the worker's privileges and mounts (see up).
host_access() {
  privileged
  HOST_ACCESS=("${PRIVILEGED[@]}" --net=host --pid=host --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup
    -v /run/netns:/run/netns:rshared -v "$D/data:$D/data")
}

running() { [[ $(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null) == true ]]; }

up() {
  mkdir -p "$D" && chmod 700 "$D"
  start_dockerd
  local image
  image=$(bash "$ROOT/scripts/build-images.sh" --import)   # .../jeroboam-<hash>.tar, imported as jeroboam:<hash>
  image=jeroboam:$(basename "$image" .tar | cut -d- -f2)

  # A network namespace the worker makes must be visible on the host (and the reverse): the
  # worker gets /run/netns with shared propagation, which needs it to be a shared mount point,
  # as `ip netns add` itself makes it.
  mkdir -p /run/netns
  if ! mountpoint -q /run/netns; then
    mount --bind /run/netns /run/netns
    touch "$D/netns-mount"   # ours to undo on down
  fi
  mount --make-shared /run/netns

  [[ -s $D/db-password ]] || (umask 077; head -c 18 /dev/urandom | base64 | tr '+/' '-_' >"$D/db-password")
  local password db_url
  password=$(cat "$D/db-password")
  db_url="postgresql://jeroboam:$password@127.0.0.1:$DB_PORT/jeroboam"
  rm -rf "$D/etc/jeroboam.conf.d"
  mkdir -p "$D/etc/jeroboam.conf.d" "$D/data"
  printf '[DEFAULT]\nstate_path = %s\n\n[database]\nconnection = %s\n' "$D/data" "$db_url" >"$D/etc/jeroboam.conf"
  [[ -z ${JEROBOAM_DEPLOY_CONFIG:-} ]] || cp "$JEROBOAM_DEPLOY_CONFIG" "$D/etc/jeroboam.conf.d/deploy.conf"
  # the API's user reads them; $D itself is root's only
  chmod -R a+rX "$D/etc"
  # every command finds /etc/jeroboam/jeroboam.conf and jeroboam.conf.d/*.conf there (oslo.config's search)
  local conf=(-v "$D/etc:/etc/jeroboam:ro")

  cat >"$D/pg-init.sh" <<'EOF'
set -e
data=/var/lib/postgresql/data
if [ ! -s $data/PG_VERSION ]; then
  initdb -D $data -U postgres --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  printf "CREATE ROLE jeroboam LOGIN PASSWORD '%s';\nCREATE DATABASE jeroboam OWNER jeroboam;\n" \
    "$JEROBOAM_DB_PASSWORD" | postgres --single -D $data postgres >/dev/null
fi
exec postgres -D $data -c listen_addresses=127.0.0.1 -c port="$PGPORT" -c unix_socket_directories=/tmp
EOF
  chmod 644 "$D/pg-init.sh"
  # PostgreSQL: Debian's server as user postgres, no capabilities; data in a volume of this dockerd.
  if ! running jeroboam-postgres; then
    docker rm -f jeroboam-postgres >/dev/null 2>&1 || true
    docker run -d --name jeroboam-postgres --net=host --user postgres --cap-drop ALL \
      --security-opt no-new-privileges -v jeroboam-pgdata:/var/lib/postgresql/data \
      -v "$D/pg-init.sh:/pg-init.sh:ro" -e JEROBOAM_DB_PASSWORD="$password" -e PGPORT="$DB_PORT" \
      "$image" sh /pg-init.sh >/dev/null
  fi
  for _ in $(seq 300); do
    docker exec jeroboam-postgres pg_isready -q -h 127.0.0.1 -p "$DB_PORT" && break
    running jeroboam-postgres || { docker logs jeroboam-postgres >&2; exit 1; }
    sleep 0.2
  done

  # Schema, as the API's user.
  docker run --rm --net=host --user jeroboam --cap-drop ALL "${conf[@]}" "$image" jeroboam db upgrade >/dev/null

  # API: unprivileged user, no capabilities, no privilege gain, read-only root filesystem.
  if ! running jeroboam-api; then
    docker rm -f jeroboam-api >/dev/null 2>&1 || true
    docker run -d --name jeroboam-api --net=host --user jeroboam --cap-drop ALL \
      --security-opt no-new-privileges --read-only --tmpfs /tmp "${conf[@]}" \
      "$image" jeroboam api --bind "127.0.0.1:$API_PORT" >/dev/null
  fi

  # Worker: it does on the host what a `jeroboam worker` run there does, so it needs
  #  --privileged       create network namespaces, veths and bridges, mount (sysfs, tmpfs,
  #                     cgroups) in each node's mount namespace, and run the nodes' dockerds,
  #                     which need every capability and the devices of a privileged daemon;
  #  --net=host         the node bridges, veths and routes belong in the host's network
  #                     namespace: clients on the host reach the nodes at their addresses;
  #  --pid=host         a worker adopts or removes nodes left by an earlier one (its dockerds are
  #                     gone with its container) by the PIDs in the state dir and by scanning
  #                     /proc for processes in node netns and cgroups, which must be the host's;
  #  --cgroupns=host and /sys/fs/cgroup: nodes' containers go under cgroup parents named after
  #                     the node, which the worker finds and removes at the host's top level;
  #  /run/netns (rshared): named netns are bind mounts there, shared with the host both ways;
  #  $D/data at the same path: node state (sockets, TLS, data-roots) that survives the container.
  if ! running jeroboam-worker; then
    docker rm -f jeroboam-worker >/dev/null 2>&1 || true
    host_access
    docker run -d --name jeroboam-worker "${HOST_ACCESS[@]}" "${conf[@]}" "$image" \
      jeroboam worker --name "jeroboam-worker@$(hostname)" >/dev/null
  fi
  echo "http://127.0.0.1:$API_PORT"
}

down() {
  if dockerd_pid >/dev/null; then
    # the worker first: it gets to finish its step (a task taken over later resumes there)
    docker stop -t 30 jeroboam-worker >/dev/null 2>&1 || true
    docker rm -f "${CONTAINERS[@]}" >/dev/null 2>&1 || true
    # Nodes of clusters not deleted are host state (netns, veths, bridges, cgroups, dockerds):
    # removed as the worker removes a deleted cluster's leftovers, before their state dir goes.
    if [[ -n $(ls -A "$D/data/local/nodes" "$D/data/local/networks" 2>/dev/null) ]]; then
      echo "deploy-containers: removing the nodes of clusters still there" >&2
      host_access
      docker run --rm "${HOST_ACCESS[@]}" jeroboam:latest python3 -c '
import sys
from jeroboam.infra.local import LocalProvider
from jeroboam.infra.local.resources import prefix_for
LocalProvider(sys.argv[1], prefix=prefix_for(sys.argv[1])).remove_leftovers([], [])' "$D/data/local"
    fi
    docker volume rm -f jeroboam-pgdata >/dev/null 2>&1 || true
    local pid; pid=$(dockerd_pid)
    kill "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  # whatever dockerd left mounted under the deploy dir (after a crash)
  grep -o " $D/[^ ]*" /proc/self/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rmdir /sys/fs/cgroup/*/jeroboam-ctr /sys/fs/cgroup/jeroboam-ctr 2>/dev/null || true
  if [[ -e $D/netns-mount ]] && [[ -z $(ls -A /run/netns) ]]; then
    umount /run/netns
  fi
  rm -rf "$D"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

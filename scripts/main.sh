#!/usr/bin/env bash
# The main job, from a fresh Debian machine (as root): install what is needed, start
# `jeroboam serve` on the embedded default (SQLite), and show how to reach it.
# When a cluster driver for the local provider is installed it also builds a cluster
# and runs a workload on it (see README).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash scripts/host-prereqs.sh
bash scripts/build-kubernetes.sh   # the kubernetes driver's binaries (cached after the first run)
bash scripts/build-vm-images.sh >/dev/null   # server_type vm's node images (cached likewise)
source scripts/setup.sh
DATA=${JEROBOAM_DATA_DIR:-$ROOT/.data}
BIND=${JEROBOAM_BIND:-127.0.0.1:9511}
URL=http://$BIND
mkdir -p "$DATA"
# serve runs its API as the jeroboam user ([DEFAULT] api_user, see README), which must reach
# this checkout, its venv and the data directory: a clone under /root is out of its reach,
# and this demo then keeps the API root, saying so.
if ! runuser -u jeroboam -- sh -c 'cd / && "$1" -c "import jeroboam.cli.main" && test -x "$2"' - \
    "$JEROBOAM_VENV/bin/python" "$DATA" 2>/dev/null; then
  echo "main: the jeroboam user cannot reach $ROOT: the API runs as root (JEROBOAM_DEFAULT_API_USER=root)" >&2
  export JEROBOAM_DEFAULT_API_USER=root
fi

if ! curl -sf "$URL/healthcheck" >/dev/null 2>&1; then
  nohup jeroboam serve --data-dir "$DATA" --bind "$BIND" >"$DATA/serve.log" 2>&1 &
  echo $! >"$DATA/serve.pid"
  for _ in $(seq 1 100); do curl -sf "$URL/healthcheck" >/dev/null 2>&1 && break; sleep 0.1; done
fi
curl -sf "$URL/healthcheck" >/dev/null || { echo "jeroboam did not start; see $DATA/serve.log" >&2; exit 1; }

if [[ -x scripts/demo-cluster.sh ]]; then
  bash scripts/demo-cluster.sh "$URL"
fi
if [[ ${JEROBOAM_DEMO_KUBERNETES:-1} != 0 ]]; then
  bash scripts/demo-kubernetes.sh "$URL"
fi
# The same swarm on QEMU VMs: minutes under TCG on a busy host, hence off by default.
if [[ ${JEROBOAM_DEMO_VM:-0} != 0 ]]; then
  JEROBOAM_DEMO_CLUSTER=demo-vm JEROBOAM_DEMO_SERVER_TYPE=vm bash scripts/demo-cluster.sh "$URL"
fi

cat <<EOT

Jeroboam is serving the Magnum v1 API at $URL (pid $(cat "$DATA/serve.pid" 2>/dev/null || echo '?'), log $DATA/serve.log).
  curl -s $URL/v1/clustertemplates
  export OS_AUTH_TYPE=none OS_ENDPOINT=$URL/v1
  $JEROBOAM_VENV/bin/openstack coe cluster list      # after: pip install python-openstackclient python-magnumclient
Stop it with: kill \$(cat $DATA/serve.pid)
EOT

#!/usr/bin/env bash
# Cluster bench (issue 4, item 9): 3- and 10-node swarms created, resized and deleted through
# the API, beside the bare bash recipe of ../shared/notes/local-swarm; a 1+2 Kubernetes cluster
# created and deleted, with its steps; with --server-type vm, 1+2 Swarm and Kubernetes clusters
# on QEMU VMs. As root.
#   bash bench/clusters/run.sh [--runs 3] [--coe all|swarm|kubernetes] [--json FILE]
#                              [--server-type local|vm]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bash "$root/scripts/host-prereqs.sh"
bash "$root/scripts/build-kubernetes.sh"
python="$root/.venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
exec "$python" "$here/bench.py" "$@"

#!/usr/bin/env bash
# The main job's Kubernetes part: through the Magnum API at $1 with the real OpenStack client, a
# `kubernetes` template and a 1 master + 2 worker cluster, then the kubeconfig that
# `openstack coe cluster config` writes and `kubectl get nodes` with it. Re-running reuses the
# template and a healthy cluster. Called by scripts/main.sh (JEROBOAM_DEMO_KUBERNETES=0 skips it).
set -euo pipefail
URL=${1:?usage: demo-kubernetes.sh API_URL}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${JEROBOAM_VENV:-$ROOT/.venv}
NAME=${JEROBOAM_DEMO_K8S_CLUSTER:-demo-k8s}
DIR=${JEROBOAM_DEMO_K8S_DIR:-${JEROBOAM_DATA_DIR:-$ROOT/.data}/$NAME}
KUBECTL=$(bash "$ROOT/scripts/build-kubernetes.sh" >/dev/null && echo /var/cache/jeroboam/kubernetes/v1.20.2/bin/kubectl)

if [[ ! -x $VENV/bin/openstack ]]; then
  echo "installing python-openstackclient and python-magnumclient into $VENV"
  "$VENV/bin/pip" install -q python-openstackclient python-magnumclient
fi
export OS_AUTH_TYPE=none OS_ENDPOINT=$URL/v1
coe() { "$VENV/bin/openstack" coe "$@"; }

if ! coe cluster template show "$NAME" >/dev/null 2>&1; then
  coe cluster template create "$NAME" --coe kubernetes --image jeroboam-node --server-type local \
    --external-network none >/dev/null
  echo "cluster template $NAME created (coe kubernetes)"
fi
status=$(coe cluster show "$NAME" -f value -c status 2>/dev/null || true)
if [[ $status == *_FAILED ]]; then
  echo "cluster $NAME is $status: deleting it"
  coe cluster delete "$NAME"
  while coe cluster show "$NAME" >/dev/null 2>&1; do sleep 1; done
  status=
fi
started=$SECONDS
if [[ -z $status ]]; then
  echo "\$ openstack coe cluster create $NAME --cluster-template $NAME --master-count 1 --node-count 2"
  coe cluster create "$NAME" --cluster-template "$NAME" --master-count 1 --node-count 2
fi
while [[ $(coe cluster show "$NAME" -f value -c status) == *_IN_PROGRESS ]]; do sleep 1; done
coe cluster show "$NAME" -f value -c status -c api_address -c coe_version -c health_status \
  | paste -sd' ' | sed "s/^/cluster $NAME (after $((SECONDS - started)) s): /"
[[ $(coe cluster show "$NAME" -f value -c status) == *_COMPLETE ]] || exit 1

mkdir -p "$DIR"
echo
echo "\$ openstack coe cluster config $NAME --dir $DIR --force"
eval "$(SHELL=/bin/bash coe cluster config "$NAME" --dir "$DIR" --force | tee /dev/stderr)"
echo "\$ kubectl get nodes -o wide"
"$KUBECTL" get nodes -o wide
cat <<EOT

Kubernetes cluster "$NAME": KUBECONFIG=$KUBECONFIG $KUBECTL get nodes
(no cluster DNS here; images must be in the nodes: busybox:latest is, with imagePullPolicy: Never)
Remove it with: OS_AUTH_TYPE=none OS_ENDPOINT=$URL/v1 $VENV/bin/openstack coe cluster delete $NAME
EOT

#!/usr/bin/env bash
# The main job's workload: through the Magnum API at $1 (noauth), a cluster template and a
# 3-node Docker Swarm (1 manager + 2 workers), a client certificate signed through the API,
# then a 3-replica service run with the docker CLI over TLS, and how to reach the cluster.
# Re-running reuses the template and a healthy cluster. Called by scripts/main.sh.
# JEROBOAM_DEMO_SERVER_TYPE: the template's server_type (default local; vm: QEMU VMs).
set -euo pipefail
URL=${1:?usage: demo-cluster.sh API_URL}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${JEROBOAM_VENV:-$ROOT/.venv}/bin/python
NAME=${JEROBOAM_DEMO_CLUSTER:-demo}
SERVER_TYPE=${JEROBOAM_DEMO_SERVER_TYPE:-local}
CERTS=${JEROBOAM_DEMO_CERTS:-${JEROBOAM_DATA_DIR:-$ROOT/.data}/$NAME-certs}
SERVICE=$NAME-web

JEROBOAM=${JEROBOAM_VENV:-$ROOT/.venv}/bin/jeroboam
# Prepended to each Python step below: one JSON call to the API.
CALL='
import json, sys, urllib.error, urllib.request
HEADERS = {"Content-Type": "application/json", "OpenStack-API-Version": "container-infra latest"}


def call(method, path, body=None):
    request = urllib.request.Request(URL + path, method=method, headers=HEADERS,
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            text = reply.read()
            return reply.status, (json.loads(text) if text else None), reply.headers
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null"), error.headers


def say(text):
    print(text, file=sys.stderr, flush=True)
'

# Template and cluster, created or reused: prints the cluster's uuid and the task to follow
# ("latest" for one already in progress, "-" for none). A failed cluster is deleted first.
started=$(date +%s.%N)
while true; do
  read -r CLUSTER TASK < <("$PY" - "$URL" "$NAME" "$SERVER_TYPE" < <(printf '%s\n' "$CALL"; cat <<'EOF'
URL, name, server_type = sys.argv[1:]
template = f"{name}-swarm"
if call("GET", f"/v1/clustertemplates/{template}")[0] == 404:
    status, body, _ = call("POST", "/v1/clustertemplates", {
        "name": template, "coe": "swarm-mode", "image_id": "jeroboam-node",
        "server_type": server_type})
    assert status == 201, body
    say(f"cluster template {template} created (coe swarm-mode, image jeroboam-node, "
        f"server_type {server_type})")
status, cluster, _ = call("GET", f"/v1/clusters/{name}")
if status == 200 and cluster["status"].endswith("_FAILED"):
    say(f"cluster {name} is {cluster['status']} ({cluster['status_reason']}): deleting it")
    _, _, headers = call("DELETE", f"/v1/clusters/{name}")
    print("deleted", headers["Location"].rsplit("/", 1)[1])
elif status == 404:
    status, body, headers = call("POST", "/v1/clusters", {
        "name": name, "cluster_template_id": template, "master_count": 1, "node_count": 2})
    assert status == 202, body
    say(f"cluster {name} ({body['uuid']}) accepted")
    print(body["uuid"], headers["Location"].rsplit("/", 1)[1])
else:
    print(cluster["uuid"], "latest" if cluster["status"].endswith("_IN_PROGRESS") else "-")
EOF
  ))
  # The long part: the task's steps live until it ends (as `openstack coe task wait` shows them).
  if [[ $TASK == latest ]]; then
    "$JEROBOAM" task wait --url "$URL" --resource "$CLUSTER" || true
  elif [[ $TASK != - ]]; then
    "$JEROBOAM" task wait --url "$URL" "$TASK" || [[ $CLUSTER != deleted ]]
  fi
  [[ $CLUSTER == deleted ]] || break
done

# The cluster's state and addresses, then certificates into $CERTS; prints the api_address.
API_ADDRESS=$("$PY" - "$URL" "$NAME" "$CERTS" "$TASK" "$started" < <(printf '%s\n' "$CALL"; cat <<'EOF'
import os, time
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

URL, name, certs, task, started = sys.argv[1:]
cluster = call("GET", f"/v1/clusters/{name}")[1]
if cluster["status"] not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
    sys.exit(f"cluster {name} is {cluster['status']}: {cluster['status_reason']}")
took = f" after {time.time() - float(started):.2f} s" if task != "-" else ""
say(f"cluster {name} is {cluster['status']}{took}: "
    f"manager {cluster['master_addresses']}, workers {cluster['node_addresses']}, "
    f"docker {cluster['coe_version']}, health {cluster['health_status']}")

# What `openstack coe cluster config --output-certs` does: the CA, and a CSR signed by it.
os.makedirs(certs, mode=0o700, exist_ok=True)
key = ec.generate_private_key(ec.SECP256R1())
csr = (x509.CertificateSigningRequestBuilder()
       .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")]))
       .sign(key, hashes.SHA256()))
status, signed, _ = call("POST", "/v1/certificates", {
    "cluster_uuid": cluster["uuid"], "csr": csr.public_bytes(serialization.Encoding.PEM).decode()})
assert status == 201, signed
files = {
    "ca.pem": call("GET", f"/v1/certificates/{cluster['uuid']}")[1]["pem"],
    "cert.pem": signed["pem"],
    "key.pem": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode(),
}
for fname, text in files.items():
    with open(os.open(os.path.join(certs, fname), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
              "w") as f:
        f.write(text)
say(f"client certificate signed through the API, written to {certs}")
print(cluster["api_address"])
EOF
))

export DOCKER_HOST=$API_ADDRESS DOCKER_CERT_PATH=$CERTS DOCKER_TLS_VERIFY=1
echo
echo "\$ docker node ls      (over TLS, $DOCKER_HOST)"
docker node ls
docker service rm "$SERVICE" >/dev/null 2>&1 || true
echo
# dnsrr: the kernel here has no IPVS for virtual IPs; the image is on every node already
create=(docker service create --detach --quiet --name "$SERVICE" --replicas 3 --endpoint-mode dnsrr
        --no-resolve-image --stop-grace-period 1s busybox:latest httpd -f -p 8080)
echo "\$ ${create[*]}"
"${create[@]}" >/dev/null
deadline=$((SECONDS + 300))  # a VM node under TCG takes its time
while ((SECONDS < deadline)); do
  running=$(docker service ps "$SERVICE" --filter desired-state=running \
    --format '{{.CurrentState}}' | grep -c '^Running' || true)
  [[ $running -eq 3 ]] && break
  sleep 0.1
done
if [[ $running -ne 3 ]]; then
  docker service ps --no-trunc "$SERVICE" >&2
  echo "the service did not start" >&2
  exit 1
fi
docker service ps "$SERVICE" --filter desired-state=running \
  --format 'table {{.Name}}\t{{.Node}}\t{{.CurrentState}}'

cat <<EOT

The swarm "$NAME" answers on $DOCKER_HOST with TLS (certificates from its own CA). To use it:
  export DOCKER_HOST=$DOCKER_HOST DOCKER_CERT_PATH=$CERTS DOCKER_TLS_VERIFY=1
  docker node ls; docker service ls
or let the OpenStack client fetch a certificate (pip install python-openstackclient python-magnumclient):
  OS_AUTH_TYPE=none OS_ENDPOINT=$URL/v1 openstack coe cluster config $NAME --dir DIR --output-certs
(with the docker Python SDK, unset REQUESTS_CA_BUNDLE: requests would prefer it to the cluster CA)
Remove the cluster with: curl -X DELETE $URL/v1/clusters/$NAME
EOT

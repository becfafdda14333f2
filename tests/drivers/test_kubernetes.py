"""A real Kubernetes cluster (1 master + 2 workers, with Magnum's auto-heal label) through
python-magnumclient and the openstack CLI: kubectl with the kubeconfig `openstack coe cluster
config` writes, a Deployment spread over the nodes, a ClusterIP Service across nodes, logs and
exec, a dead kubelet (UNHEALTHY, then the node replaced), resize, a nodegroup, CA rotation,
and a delete that leaves the host as it was. The tests run in order on the same cluster."""

import base64
import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import kubernetes
import pytest
import yaml
from cryptography import x509

from jeroboam import config
from jeroboam.drivers.kubernetes import CONVERGE_STEPS, CREATE_STEPS
from jeroboam.drivers.kubernetes_conf import KUBELET_SYSCTLS
from tests.drivers.conftest import (coe_cluster_config, delete_leaves_the_host_as_before,
                                    new_cluster, nodes_of, wait_for, wait_status)

BIN_DIR = config.load().get("kubernetes", "bin_dir")
KUBECTL = f"{BIN_DIR}/kubectl"


def host_sysctls() -> dict[str, str]:
    """The host-wide kernel settings a kubelet would rewrite if it could."""
    return {p: Path("/proc/sys", p).read_text().strip() for p in KUBELET_SYSCTLS}


@contextmanager
def kube_cluster(service, magnum, name: str, **fields):
    """A Kubernetes cluster (``fields`` of the create: counts, labels); the host's sysctls as
    they were before it, in service.sysctls."""
    if not os.access(KUBECTL, os.X_OK):
        pytest.skip("no Kubernetes binaries: run scripts/build-kubernetes.sh")
    service.sysctls = host_sysctls()
    with new_cluster(magnum, "kubernetes", name, **fields) as uuid:
        yield uuid


@pytest.fixture(scope="module")
def cluster(service, magnum):
    with kube_cluster(service, magnum, "kube", master_count=1, node_count=2,
                      labels={"auto_healing_enabled": "true"}) as uuid:
        yield uuid


def kubeconfig_of(service, cluster_uuid: str, directory: Path) -> str:
    """The kubeconfig `openstack coe cluster config` writes, unchanged (its CSR signed by the
    API, the cluster CA, api_address)."""
    exports = coe_cluster_config(service, cluster_uuid, directory)
    assert exports == {"KUBECONFIG": f"{directory}/config"}
    return exports["KUBECONFIG"]


@pytest.fixture(scope="module")
def kubeconfig(service, cluster, tmp_path_factory) -> str:
    wait_status(service.magnum(), cluster, "CREATE_COMPLETE", timeout=180)
    return kubeconfig_of(service, cluster, tmp_path_factory.mktemp("kubeconfig"))


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None, check=True) -> str:
    out = subprocess.run([KUBECTL, "--kubeconfig", kubeconfig, *args], input=stdin,
                         capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
    return out.stdout


def ready_nodes(kubeconfig: str) -> dict[str, bool]:
    items = json.loads(kubectl(kubeconfig, "get", "nodes", "-o", "json"))["items"]
    return {n["metadata"]["name"]: any(c["type"] == "Ready" and c["status"] == "True"
                                       for c in n["status"]["conditions"]) for n in items}


def test_create_runs_kubernetes(service, magnum, cluster):
    started = time.monotonic()
    done = wait_status(magnum, cluster, "CREATE_COMPLETE", timeout=180)
    print(f"1+2 Kubernetes cluster CREATE_COMPLETE after {time.monotonic() - started:.2f} s")
    [master] = done.master_addresses
    assert len(done.node_addresses) == 2
    assert done.api_address == f"https://{master}:6443"
    assert done.coe_version == "v1.20.2"
    assert done.health_status == "HEALTHY"
    assert done.health_status_reason == {"api": "ok", "kube-master-0.Ready": "True",
                                         "kube-node-0.Ready": "True", "kube-node-1.Ready": "True"}
    [task] = service.tasks(cluster)
    assert [(s["name"], s["state"]) for s in task["steps"]] == [
        (name, "SUCCEEDED") for name in CREATE_STEPS]
    # the kubelets found the sysctls they want in their own mount namespaces
    assert host_sysctls() == service.sysctls


def test_kubectl_sees_every_node_ready(kubeconfig):
    assert ready_nodes(kubeconfig) == {"kube-master-0": True, "kube-node-0": True,
                                       "kube-node-1": True}
    nodes = json.loads(kubectl(kubeconfig, "get", "nodes", "-o", "json"))["items"]
    taints = {n["metadata"]["name"]: [t["key"] for t in n["spec"].get("taints") or []]
              for n in nodes}
    assert taints == {"kube-master-0": ["node-role.kubernetes.io/master"], "kube-node-0": [],
                      "kube-node-1": []}
    assert len({n["spec"]["podCIDR"] for n in nodes}) == 3
    # the admin identity is what the CSR of magnumclient asked for; RBAC is on
    assert kubectl(kubeconfig, "auth", "can-i", "delete", "nodes").strip() == "yes"
    assert kubectl(kubeconfig, "auth", "can-i", "get", "pods", "--as", "nobody",
                   check=False).strip() == "no"


def deployment(name: str, command: str, extra: str = "") -> str:
    """A 3-replica Deployment of busybox (in every node; nothing is pulled) running
    ``command``; ``extra`` goes into its pod spec."""
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1{extra}
      containers:
      - name: main
        image: busybox:latest
        imagePullPolicy: Never
        command: [sh, -c, '{command}']
"""


WEB = deployment("web", "mkdir -p /www && hostname > /www/index.html && echo serving from "
                        "$(hostname) && exec httpd -f -v -p 8080 -h /www", """
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway,
         labelSelector: {matchLabels: {app: web}}}""") + """---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"""


def test_deployment_service_logs_and_exec_across_nodes(kubeconfig):
    kubectl(kubeconfig, "apply", "-f", "-", stdin=WEB)
    kubectl(kubeconfig, "rollout", "status", "deployment/web", "--timeout=90s")
    pods = json.loads(kubectl(kubeconfig, "get", "pods", "-l", "app=web", "-o", "json"))["items"]
    where = {p["metadata"]["name"]: (p["spec"]["nodeName"], p["status"]["podIP"]) for p in pods}
    assert len(where) == 3
    assert {node for node, _ in where.values()} == {"kube-node-0", "kube-node-1"}

    name, (node, ip) = sorted(where.items())[0]
    assert f"serving from {name}" in kubectl(kubeconfig, "logs", name)
    other = next((n, i) for n, (nd, i) in where.items() if nd != node)
    # pod to pod across nodes, by address
    # (this busybox's wget crashes with -T)
    assert kubectl(kubeconfig, "exec", name, "--", "wget", "-q", "-O", "-",
                   f"http://{other[1]}:8080/").strip() == other[0]
    # the ClusterIP Service through kube-proxy's rules: each answer names the pod serving it;
    # from a pod on one node, a pod on another node answers (once kube-proxy has every endpoint)
    service_ip = json.loads(kubectl(kubeconfig, "get", "service", "web", "-o", "json"))[
        "spec"]["clusterIP"]

    def from_another_node() -> bool:
        answers = set(kubectl(kubeconfig, "exec", name, "--", "sh", "-c",
                              f"for i in $(seq 10); do wget -q -O - http://{service_ip}/ "
                              "|| echo failed; done").split())
        assert answers and answers <= set(where), answers
        return any(where[a][0] != node for a in answers)
    wait_for(from_another_node, 60, "an answer from a pod on another node", interval=0.5)
    kubectl(kubeconfig, "delete", "deployment", "web")


def healthy(magnum, cluster_uuid: str, timeout: float = 15):
    return wait_for(lambda: (c := magnum.clusters.get(cluster_uuid)).health_status == "HEALTHY"
                    and c, timeout, "cluster HEALTHY")


def test_dead_kubelet_turns_the_cluster_unhealthy_and_auto_heal_replaces_the_node(
        service, magnum, cluster, kubeconfig):
    # healthy first, or the wait for UNHEALTHY below would prove nothing
    assert healthy(magnum, cluster).health_status_reason == {
        "api": "ok", "kube-master-0.Ready": "True", "kube-node-0.Ready": "True",
        "kube-node-1.Ready": "True"}
    worker = next(n for n in nodes_of(service, cluster) if n.hostname == "kube-node-1")
    killed = time.monotonic()
    os.kill(worker.process_pid("kubelet"), signal.SIGKILL)
    sick = wait_for(lambda: (c := magnum.clusters.get(cluster)).health_status == "UNHEALTHY"
                    and c, 15, "cluster UNHEALTHY")
    print(f"dead kubelet seen after {time.monotonic() - killed:.1f} s")
    # as Magnum's Kubernetes monitor words it: the API's /healthz, each Node's Ready condition
    assert sick.health_status_reason == {"api": "ok", "kube-master-0.Ready": "True",
                                         "kube-node-0.Ready": "True",
                                         "kube-node-1.Ready": "False"}

    # auto_healing_enabled: the monitor's own update replaces the node (no one resized)
    healed = wait_for(lambda: (c := magnum.clusters.get(cluster)).status.startswith("UPDATE_")
                      and not c.status.endswith("IN_PROGRESS") and c, 180, "auto-heal ends")
    assert healed.status == "UPDATE_COMPLETE", healed.status_reason
    assert healed.node_count == 2
    task = service.tasks(cluster)[-1]
    assert task["action"] == "cluster.update"
    assert [s["name"] for s in task["steps"]] == CONVERGE_STEPS
    workers = [n for n in nodes_of(service, cluster) if "-node-" in n.hostname]
    assert [n.hostname for n in workers] == ["kube-node-0", "kube-node-2"]
    assert sorted(healed.node_addresses) == sorted(n.address for n in workers)
    assert not Path(worker.state_dir).exists()
    assert ready_nodes(kubeconfig) == {"kube-master-0": True, "kube-node-0": True,
                                       "kube-node-2": True}
    assert healthy(magnum, cluster).health_status_reason == {
        "api": "ok", "kube-master-0.Ready": "True", "kube-node-0.Ready": "True",
        "kube-node-2.Ready": "True"}


IDLE = deployment("idle", "exec sleep 3600")


def test_resize_2_3_1_drains_the_nodes_that_go(service, magnum, cluster, kubeconfig):
    magnum.clusters.resize(cluster, 3)
    grown = wait_status(magnum, cluster, "UPDATE_COMPLETE", timeout=120)
    assert len(grown.node_addresses) == 3
    assert ready_nodes(kubeconfig) == {"kube-master-0": True, "kube-node-0": True,
                                       "kube-node-2": True, "kube-node-3": True}

    kubectl(kubeconfig, "apply", "-f", "-", stdin=IDLE)
    kubectl(kubeconfig, "rollout", "status", "deployment/idle", "--timeout=90s")

    keep = next(n for n in nodes_of(service, cluster) if n.hostname == "kube-node-2")
    magnum.clusters.resize(cluster, 1, nodes_to_remove=[
        n.address for n in nodes_of(service, cluster) if n.hostname in ("kube-node-0", "kube-node-3")])
    shrunk = wait_status(magnum, cluster, "UPDATE_COMPLETE", timeout=120)
    assert shrunk.node_addresses == [keep.address]
    assert ready_nodes(kubeconfig) == {"kube-master-0": True, "kube-node-2": True}
    kubectl(kubeconfig, "rollout", "status", "deployment/idle", "--timeout=90s")
    pods = json.loads(kubectl(kubeconfig, "get", "pods", "-l", "app=idle", "-o", "json"))["items"]
    assert {p["spec"]["nodeName"] for p in pods if p["status"]["phase"] == "Running"} == {
        "kube-node-2"}
    task = service.tasks(cluster)[-1]
    assert [s["name"] for s in task["steps"]] == CONVERGE_STEPS
    kubectl(kubeconfig, "delete", "deployment", "idle")


PINNED = """
apiVersion: v1
kind: Pod
metadata: {name: pinned}
spec:
  nodeSelector: {magnum.openstack.org/nodegroup: extra}
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: busybox:latest, imagePullPolicy: Never, command: [sleep, '3600']}
"""


def traces(service, node) -> list[str]:
    """Whatever of the node the provider's inventory of the host still shows (its name's
    digest names its netns, veth, cgroup, state directory, processes' paths)."""
    digest = node.name.rsplit("-", 1)[1]
    return [f"{kind}: {item}" for kind, items in service.provider.inventory().items()
            for item in items if digest in item]


def test_nodegroup_of_one_node_joins_and_goes_without_a_trace(service, magnum, cluster,
                                                              kubeconfig):
    magnum.nodegroups.create(cluster, name="extra", node_count=1)
    wait_status(magnum, cluster, "UPDATE_COMPLETE", timeout=120)
    group = magnum.nodegroups.get(cluster, "extra")
    assert group.status == "CREATE_COMPLETE" and len(group.node_addresses) == 1
    [node] = [n for n in nodes_of(service, cluster) if n.hostname == "kube-extra-0"]
    assert group.node_addresses == [node.address]
    assert ready_nodes(kubeconfig) == {"kube-master-0": True, "kube-node-2": True,
                                       "kube-extra-0": True}
    labels = json.loads(kubectl(kubeconfig, "get", "node", "kube-extra-0", "-o", "json"))[
        "metadata"]["labels"]
    assert labels["magnum.openstack.org/nodegroup"] == "extra"
    # a pod runs on it (its pod network is up)
    kubectl(kubeconfig, "apply", "-f", "-", stdin=PINNED)
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "pod/pinned", "--timeout=60s")
    pod = json.loads(kubectl(kubeconfig, "get", "pod", "pinned", "-o", "json"))
    assert pod["spec"]["nodeName"] == "kube-extra-0"
    assert traces(service, node)

    magnum.nodegroups.delete(cluster, "extra")
    wait_status(magnum, cluster, "UPDATE_COMPLETE", timeout=120)
    assert "extra" not in [g.name for g in magnum.nodegroups.list(cluster)]
    assert ready_nodes(kubeconfig) == {"kube-master-0": True, "kube-node-2": True}
    # drained: the pod bound to it went with it
    assert "NotFound" in subprocess.run(
        [KUBECTL, "--kubeconfig", kubeconfig, "get", "pod", "pinned"], capture_output=True,
        text=True, timeout=60).stderr
    assert not [n for n in nodes_of(service, cluster) if n.hostname == "kube-extra-0"]
    assert traces(service, node) == []


def certificates(service, cluster_uuid: str) -> dict[str, x509.Certificate]:
    """Every certificate on the cluster's nodes ("hostname:path" -> it): the files of the
    Kubernetes components and of dockerd, and those kubeconfigs carry inline (not what pods'
    volumes hold)."""
    found = {}
    for node in nodes_of(service, cluster_uuid):
        state = Path(node.state_dir)
        pods = Path(node.path("k8s/kubelet"))
        for path in sorted([*(state / "tls").iterdir(), *Path(node.path("k8s")).rglob("*")]):
            if path.is_relative_to(pods) or not path.is_file():
                continue
            where = f"{node.hostname}:{path.relative_to(state)}"
            if path.suffix == ".kubeconfig":
                user = yaml.safe_load(path.read_text())["users"][0]["user"]
                found[where] = x509.load_pem_x509_certificate(
                    base64.b64decode(user["client-certificate-data"]))
            elif path.suffix in (".pem", ".crt") and "CERTIFICATE" in (text := path.read_text()):
                found[where] = x509.load_pem_x509_certificate(text.encode())
    return found


def cluster_ca(magnum, cluster_uuid: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(
        magnum.certificates.get(cluster_uuid=cluster_uuid).pem.encode())


def signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, x509.InvalidSignature):
        return False
    return True


def python_client_nodes(config: str) -> list[str]:
    """The Ready nodes as the `kubernetes` Python client sees them with ``config``."""
    settings = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=config, client_configuration=settings)
    settings.retries = 0  # a refused handshake is final
    with kubernetes.client.ApiClient(settings) as api:
        nodes = kubernetes.client.CoreV1Api(api).list_node(_request_timeout=20).items
    return sorted(n.metadata.name for n in nodes
                  if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions))


def insecure_copy(config: str, path: Path) -> str:
    """The kubeconfig trusting any server: what its client certificate alone is worth."""
    kc = yaml.safe_load(Path(config).read_text())
    cluster = kc["clusters"][0]["cluster"]
    del cluster["certificate-authority-data"]
    cluster["insecure-skip-tls-verify"] = True
    path.write_text(yaml.safe_dump(kc))
    return str(path)


def test_ca_rotation_reissues_every_certificate_and_old_kubeconfigs_stop_working(
        service, magnum, cluster, kubeconfig, tmp_path):
    old_ca = cluster_ca(magnum, cluster)
    nodes = sorted(ready_nodes(kubeconfig))
    worker = next(n for n in nodes if "-node-" in n)
    assert python_client_nodes(kubeconfig) == nodes
    kubectl(kubeconfig, "create", "configmap", "before-rotation", "--from-literal=k=v")
    before = certificates(service, cluster)
    assert len(before) > 20 and all(signed_by(c, old_ca) for c in before.values())

    magnum.certificates.rotate_ca(cluster_uuid=cluster)
    wait_status(magnum, cluster, "UPDATE_COMPLETE", timeout=180)
    new_ca = cluster_ca(magnum, cluster)
    assert new_ca != old_ca

    # every certificate on every node re-issued from the new CA
    after = certificates(service, cluster)
    assert set(after) == set(before)
    assert [p for p, c in after.items() if not signed_by(c, new_ca)] == []
    assert [p for p, c in after.items() if c.serial_number == before[p].serial_number] == []

    # the kubeconfig from before: the servers' certificates are no longer its CA's, and its
    # client certificate is refused even by a client that trusts any server
    refused = subprocess.run([KUBECTL, "--kubeconfig", kubeconfig, "get", "nodes"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "certificate" in refused.stderr, refused.stderr
    blind = insecure_copy(kubeconfig, tmp_path / "old-insecure")
    refused = subprocess.run([KUBECTL, "--kubeconfig", blind, "get", "nodes"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "Unauthorized" in refused.stderr, refused.stderr
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):  # urllib3's, as it is
        python_client_nodes(kubeconfig)
    with pytest.raises(kubernetes.client.ApiException) as denied:
        python_client_nodes(blind)
    assert denied.value.status == 401

    # a new one from `coe cluster config`: kubectl and the Python client, every node Ready,
    # etcd's data kept, the kubelets' serving certificates good for logs and exec
    (tmp_path / "new").mkdir()
    fresh = kubeconfig_of(service, cluster, tmp_path / "new")
    assert ready_nodes(fresh) == {n: True for n in nodes}
    assert python_client_nodes(fresh) == nodes
    assert json.loads(kubectl(fresh, "get", "configmap", "before-rotation", "-o", "json"))[
        "data"] == {"k": "v"}
    kubectl(fresh, "apply", "-f", "-", stdin=PINNED.replace(
        "{magnum.openstack.org/nodegroup: extra}", f"{{kubernetes.io/hostname: {worker}}}"))
    kubectl(fresh, "wait", "--for=condition=Ready", "pod/pinned", "--timeout=60s")
    assert kubectl(fresh, "exec", "pinned", "--", "echo", "through the kubelet").strip() == \
        "through the kubelet"
    assert healthy(magnum, cluster).health_status_reason == {
        "api": "ok", **{f"{n}.Ready": "True" for n in nodes}}


def delete_leaves_the_host_as_it_was(service, magnum, cluster_uuid: str) -> None:
    delete_leaves_the_host_as_before(service, magnum, cluster_uuid)
    assert host_sysctls() == service.sysctls


def test_delete_leaves_the_host_as_before(service, magnum, cluster):
    delete_leaves_the_host_as_it_was(service, magnum, cluster)

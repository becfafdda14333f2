"""A real Kubernetes cluster (1 master + 2 workers) through python-magnumclient and the
openstack CLI: kubectl with the kubeconfig `openstack coe cluster config` writes, a Deployment
spread over the nodes, a ClusterIP Service across nodes, logs and exec, a dead kubelet, resize,
and a delete that leaves the host as it was. The tests run in order on the same cluster."""

import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

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
def kube_cluster(service, magnum, name: str, **counts):
    """A Kubernetes cluster; the host's sysctls as they were before it, in service.sysctls."""
    if not os.access(KUBECTL, os.X_OK):
        pytest.skip("no Kubernetes binaries: run scripts/build-kubernetes.sh")
    service.sysctls = host_sysctls()
    with new_cluster(magnum, "kubernetes", name, **counts) as uuid:
        yield uuid


@pytest.fixture(scope="module")
def cluster(service, magnum):
    with kube_cluster(service, magnum, "kube", master_count=1, node_count=2) as uuid:
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


def test_dead_kubelet_turns_the_cluster_unhealthy(service, magnum, cluster):
    worker = next(n for n in nodes_of(service, cluster) if n.hostname == "kube-node-1")
    killed = time.monotonic()
    os.kill(worker.process_pid("kubelet"), signal.SIGKILL)
    sick = wait_for(lambda: (c := magnum.clusters.get(cluster)).health_status == "UNHEALTHY"
                    and c, 15, "cluster UNHEALTHY")
    print(f"dead kubelet seen after {time.monotonic() - killed:.1f} s")
    assert sick.health_status_reason["kube-node-1.Ready"] == "False"
    assert sick.health_status_reason["kube-node-0.Ready"] == "True"
    assert sick.health_status_reason["api"] == "ok"


IDLE = deployment("idle", "exec sleep 3600")


def test_resize_2_3_1_replaces_the_dead_node_and_drains(service, magnum, cluster, kubeconfig):
    magnum.clusters.resize(cluster, 3)  # the dead node is replaced, one more joins
    grown = wait_status(magnum, cluster, "UPDATE_COMPLETE", timeout=120)
    assert len(grown.node_addresses) == 3
    assert ready_nodes(kubeconfig) == {"kube-master-0": True, "kube-node-0": True,
                                       "kube-node-2": True, "kube-node-3": True}
    healthy = wait_for(lambda: (c := magnum.clusters.get(cluster)).health_status == "HEALTHY"
                       and c, 15, "cluster HEALTHY")
    assert "kube-node-1.Ready" not in healthy.health_status_reason

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


def delete_leaves_the_host_as_it_was(service, magnum, cluster_uuid: str) -> None:
    delete_leaves_the_host_as_before(service, magnum, cluster_uuid)
    assert host_sysctls() == service.sysctls


def test_delete_leaves_the_host_as_before(service, magnum, cluster):
    delete_leaves_the_host_as_it_was(service, magnum, cluster)

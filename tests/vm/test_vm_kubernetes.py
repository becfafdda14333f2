"""The unchanged Kubernetes driver on VMs: a tenant (a plain member, its template naming no
server_type) creates 1 master + 1 worker through python-magnumclient; kubectl, with a kubeconfig
made as `openstack coe cluster config` makes it, sees both nodes Ready and a pod answering
through a ClusterIP Service; a resize up adds a VM that joins Ready, and a resize down that
removes the first worker drains its pods onto the new one; the delete leaves the host as before."""

import json
import os
import time

import pytest
from magnumclient.common import utils as magnum_utils

from tests.drivers.conftest import wait_for, wait_gone, wait_status
from tests.drivers.test_kubernetes import KUBECTL, WEB, kubectl, ready_nodes
from tests.support import host_snapshot
from tests.vm.conftest import assert_qemu_confined, tenant, vm_nodes, vm_provider_of

BOOT = 1800  # seconds: a control plane on a TCG guest of a busy 2-core host


@pytest.fixture(scope="module")
def cluster(service):
    if not os.access(KUBECTL, os.X_OK):
        pytest.skip("no Kubernetes binaries: run scripts/build-kubernetes.sh")
    magnum = tenant(service, "p-vm-k8s")
    template = magnum.cluster_templates.create(name="vm-k8s", coe="kubernetes",
                                               image_id="jeroboam-node")
    created = magnum.clusters.create(name="vmk", cluster_template_id=template.uuid,
                                     master_count=1, node_count=1)
    try:
        yield magnum, created.uuid, time.monotonic()
    finally:
        try:
            magnum.clusters.delete(created.uuid)
            wait_gone(magnum, created.uuid, timeout=180)
        except Exception:  # noqa: BLE001 (deleted by the last test)
            pass


def kubeconfig_of(magnum, cluster_uuid: str, directory) -> str:
    """The kubeconfig `openstack coe cluster config` writes (the tenant's own CSR signed by the
    API), through the same magnumclient code."""
    cluster = magnum.clusters.get(cluster_uuid)
    template = magnum.cluster_templates.get(cluster.cluster_template_id)
    csr = magnum_utils.generate_csr_and_key()
    certs = {"ca": magnum.certificates.get(cluster_uuid=cluster_uuid).pem,
             "cert": magnum.certificates.create(cluster_uuid=cluster_uuid, csr=csr["csr"]).pem,
             "key": csr["key"]}
    os.environ.setdefault("SHELL", "/bin/bash")
    magnum_utils.config_cluster(cluster, template, str(directory), certs=certs)
    return f"{directory}/config"


def test_kubernetes_on_vms_serves_a_pod_through_a_service(service, cluster, tmp_path):
    magnum, uuid, started = cluster
    done = wait_status(magnum, uuid, "CREATE_COMPLETE", timeout=BOOT)
    print(f"vm kubernetes 1+1 CREATE_COMPLETE after {time.monotonic() - started:.1f} s "
          f"(load {os.getloadavg()[0]:.1f})")
    assert magnum.cluster_templates.get(done.cluster_template_id).server_type == "vm"
    assert done.health_status_reason.get("vmk-node-0.Ready") == "True"
    assert_qemu_confined(vm_provider_of(service.data))
    config = kubeconfig_of(magnum, uuid, tmp_path)
    assert ready_nodes(config) == {"vmk-master-0": True, "vmk-node-0": True}

    kubectl(config, "apply", "-f", "-", stdin=WEB)
    assert web_answers_through_its_service(config) == {"vmk-node-0"}  # the master is tainted


def web_answers_through_its_service(config: str) -> set[str]:
    """Wait for deployment web to roll out and for its pods to answer through the ClusterIP
    Service, each answer naming the pod serving it (kube-proxy's rules reach them); the nodes
    the pods run on."""
    wait_for(lambda: "successfully rolled out" in kubectl(
        config, "rollout", "status", "deployment/web", "--timeout=45s", check=False),
        600, "deployment web rolled out", interval=1)
    pods = [p for p in json.loads(kubectl(config, "get", "pods", "-l", "app=web", "-o", "json"))[
        "items"] if p["status"]["phase"] == "Running" and "deletionTimestamp" not in p["metadata"]]
    names = {p["metadata"]["name"] for p in pods}
    service_ip = json.loads(kubectl(config, "get", "service", "web", "-o", "json"))[
        "spec"]["clusterIP"]

    def answers() -> set[str]:
        # an exec may fail while it lasts: the kubelet asks the API (slow on a TCG guest) to
        # authorize it, and a timed-out review is an "Authorization error", tried again here
        out = kubectl(config, "exec", sorted(names)[0], "--", "sh", "-c",
                      f"for i in $(seq 6); do wget -q -O - http://{service_ip}/ || echo failed; "
                      "done", check=False)
        return set(out.split()) if out and "failed" not in out else set()
    assert wait_for(answers, 120, "answers through the Service", interval=2) <= names
    return {p["spec"]["nodeName"] for p in pods}


def test_resize_up_then_down_drains_the_web_onto_the_new_vm(service, cluster, tmp_path):
    magnum, uuid, _ = cluster
    config = kubeconfig_of(magnum, uuid, tmp_path)
    magnum.clusters.resize(uuid, 2)
    assert len(wait_status(magnum, uuid, "UPDATE_COMPLETE", timeout=BOOT).node_addresses) == 2
    nodes = ready_nodes(config)
    [new] = set(nodes) - {"vmk-master-0", "vmk-node-0"}
    assert nodes == {"vmk-master-0": True, "vmk-node-0": True, new: True}
    old, kept = (next(n for n in vm_nodes(service, uuid) if n.hostname == name)
                 for name in ("vmk-node-0", new))
    magnum.clusters.resize(uuid, 1, nodes_to_remove=[old.address])
    shrunk = wait_status(magnum, uuid, "UPDATE_COMPLETE", timeout=BOOT)
    assert shrunk.node_addresses == [kept.address]
    # once in three CI runs the kept worker showed NotReady right after UPDATE_COMPLETE under
    # TCG (cause not found; README): it must be Ready within minutes, not at once
    wait_for(lambda: ready_nodes(config) == {"vmk-master-0": True, new: True}, 300,
             "the master and the kept worker Ready, the other one gone", interval=2)
    assert old.name not in vm_provider_of(service.data)._processes_by_node().values()
    # the node that went was drained: the web runs, and answers, on the one that came
    assert web_answers_through_its_service(config) == {new}


def test_delete_leaves_the_host_as_before(service, cluster):
    magnum, uuid, _ = cluster
    magnum.clusters.delete(uuid)
    wait_gone(magnum, uuid, timeout=180)
    provider = vm_provider_of(service.data)
    inventory, snapshot = service.before
    assert provider.inventory() == inventory
    assert host_snapshot(provider.prefix) == snapshot

"""master_count 3: a 3-member etcd and three API servers; with one master dead the API still
answers and still writes (etcd keeps its quorum)."""

import json
import os
import subprocess

import pytest
import yaml

from tests.drivers.conftest import delete_cluster, host_snapshot, wait_gone, wait_status
from tests.drivers.test_kubernetes import KUBECTL, OPENSTACK, host_sysctls, kubectl, nodes_of, ready_nodes


@pytest.fixture(scope="module")
def cluster(service, magnum):
    if not os.access(KUBECTL, os.X_OK):
        pytest.skip("no Kubernetes binaries: run scripts/build-kubernetes.sh")
    service.sysctls = host_sysctls()
    template = magnum.cluster_templates.create(name="k8s-ha", coe="kubernetes",
                                               image_id="jeroboam-node", server_type="local")
    created = magnum.clusters.create(name="ha", cluster_template_id=template.uuid,
                                     master_count=3, node_count=1)
    try:
        yield created.uuid
    finally:
        delete_cluster(magnum, created.uuid)


def test_three_masters_survive_losing_one(service, magnum, cluster, tmp_path):
    done = wait_status(magnum, cluster, "CREATE_COMPLETE", timeout=240)
    assert len(done.master_addresses) == 3 and done.health_status == "HEALTHY"
    env = {**os.environ, "OS_AUTH_TYPE": "none", "OS_ENDPOINT": service.url + "/v1",
           "SHELL": "/bin/bash"}
    out = subprocess.run([OPENSTACK, "coe", "cluster", "config", cluster, "--dir",
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    config = str(tmp_path / "config")
    assert ready_nodes(config) == {"ha-master-0": True, "ha-master-1": True,
                                   "ha-master-2": True, "ha-node-0": True}

    # the master api_address names goes down for good (dockerd and every process of it)
    first = next(n for n in nodes_of(service, cluster) if n.hostname == "ha-master-0")
    assert done.api_address == f"https://{first.address}:6443"
    service.provider.stop_node(first.name)

    # the same credentials against another master: reads and writes still work
    other = next(n for n in nodes_of(service, cluster) if n.hostname == "ha-master-1")
    kc = yaml.safe_load(open(config))
    kc["clusters"][0]["cluster"]["server"] = f"https://{other.address}:6443"
    moved = tmp_path / "config-master-1"
    moved.write_text(yaml.safe_dump(kc))
    kubectl(str(moved), "create", "configmap", "after-loss", "--from-literal=k=v")
    got = json.loads(kubectl(str(moved), "get", "configmap", "after-loss", "-o", "json"))
    assert got["data"] == {"k": "v"}
    assert {"ha-master-1", "ha-master-2", "ha-node-0"} <= set(ready_nodes(str(moved)))


def test_delete_leaves_the_host_as_before(service, magnum, cluster):
    magnum.clusters.delete(cluster)
    wait_gone(magnum, cluster)
    inventory, snapshot = service.before
    assert service.provider.inventory() == inventory
    assert host_snapshot() == snapshot
    assert host_sysctls() == service.sysctls

"""master_count 3: a 3-member etcd and three API servers; with one master dead the API still
answers and still writes (etcd keeps its quorum)."""

import json
import subprocess

import pytest
import yaml

from tests.drivers.conftest import nodes_of, wait_for, wait_status
from tests.drivers.test_kubernetes import (KUBECTL, delete_leaves_the_host_as_it_was,
                                           kube_cluster, kubeconfig_of, kubectl, ready_nodes)


@pytest.fixture(scope="module")
def cluster(service, magnum):
    with kube_cluster(service, magnum, "ha", master_count=3, node_count=1) as uuid:
        yield uuid


def test_three_masters_survive_losing_one(service, magnum, cluster, tmp_path):
    done = wait_status(magnum, cluster, "CREATE_COMPLETE", timeout=240)
    assert len(done.master_addresses) == 3 and done.health_status == "HEALTHY"
    config = kubeconfig_of(service, cluster, tmp_path)
    assert ready_nodes(config) == {"ha-master-0": True, "ha-master-1": True,
                                   "ha-master-2": True, "ha-node-0": True}

    # the master api_address names goes down for good (its dockerd and every process of it)
    first = next(n for n in nodes_of(service, cluster) if n.hostname == "ha-master-0")
    assert done.api_address == f"https://{first.address}:6443"
    service.provider.stop_node(first.name)

    # the same credentials against another master: reads and writes still work
    other = next(n for n in nodes_of(service, cluster) if n.hostname == "ha-master-1")
    with open(config) as f:
        kc = yaml.safe_load(f)
    kc["clusters"][0]["cluster"]["server"] = f"https://{other.address}:6443"
    moved = tmp_path / "config-master-1"
    moved.write_text(yaml.safe_dump(kc))
    # if it led etcd, the other two elect a leader first (a second or two): writes fail until then
    def write() -> bool:
        out = subprocess.run([KUBECTL, "--kubeconfig", str(moved), "create", "configmap",
                              "after-loss", "--from-literal=k=v"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 or "leader changed" in out.stderr \
            or "timed out" in out.stderr, out.stderr
        return out.returncode == 0
    wait_for(write, 30, "a write after the election", interval=0.5)
    got = json.loads(kubectl(str(moved), "get", "configmap", "after-loss", "-o", "json"))
    assert got["data"] == {"k": "v"}
    assert set(ready_nodes(str(moved))) == {"ha-master-0", "ha-master-1", "ha-master-2",
                                            "ha-node-0"}


def test_delete_leaves_the_host_as_before(service, magnum, cluster):
    delete_leaves_the_host_as_it_was(service, magnum, cluster)

"""A real 3-node swarm (1 manager + 2 workers) on the local provider, with real TLS."""

import io
import os
import signal
import subprocess
import tarfile
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests

from jeroboam.drivers import swarm_ops as swarm
from jeroboam.infra import wait_until
from jeroboam.infra.local import (BASE_IMAGE, ImageTarball, LocalProvider, NodeInfo, NodeSpec,
                                  tls_client)
from jeroboam.pki import KeyPair, issue_client_cert, new_ca

NET = "swarm-net"


@dataclass
class Cluster:
    ca: KeyPair
    nodes: list[NodeInfo]

    @property
    def manager(self) -> NodeInfo:
        return self.nodes[0]


def cluster_specs():
    return [NodeSpec(f"swarm-node-{i}", NET, hostname=f"node{i}") for i in range(3)]


def delete_cluster(provider):
    provider.destroy_nodes([provider.node_name(s.node_id) for s in cluster_specs()])
    if provider.get_network(NET) is not None:
        provider.delete_network(NET)


@pytest.fixture(scope="module")
def cluster(provider):
    ca = new_ca("jbt-test-cluster")
    try:
        provider.create_network(NET)
        nodes = provider.start_nodes(cluster_specs(), ca)
        swarm.form_swarm(nodes[:1], nodes[1:])
        yield Cluster(ca, nodes)
    finally:
        delete_cluster(provider)  # names are deterministic: also finds half-made nodes


def test_nodes_are_separate_hosts(provider, cluster):
    engine_ids = set()
    for node in cluster.nodes:
        with closing(node.client()) as client:
            info = client.info()
        engine_ids.add(info["ID"])
        assert info["Name"] == node.hostname
        assert info["Swarm"]["NodeAddr"] == node.address
        routes = subprocess.run(["ip", "-n", node.name, "route"], capture_output=True,
                                text=True, check=True).stdout
        assert "default" not in routes  # nothing a node does can leave the host
        link = subprocess.run(["ip", "-n", node.name, "link", "show", "eth0"],
                              capture_output=True, text=True, check=True).stdout
        assert node.mac in link
    assert len(engine_ids) == 3  # own /etc/docker/key.json each
    # each dockerd runs its own containerd, none uses a system one
    daemons = [p for p in provider.inventory()["processes"] if " containerd --config " in p]
    for node in cluster.nodes:
        assert sum(f"{node.state_dir}/exec/" in p for p in daemons) == 1
        pid = Path(node.state_dir, "docker.pid").read_text().strip()
        mounts = Path(f"/proc/{pid}/mountinfo").read_text()
        assert " /run/containerd " in mounts and " /etc/docker " in mounts


def test_create_is_idempotent(provider, cluster):
    def daemons():
        return [p for p in provider.inventory()["processes"] if " dockerd " in p]
    node = cluster.manager
    before = daemons()
    assert provider.create_node(cluster_specs()[0], cluster.ca) == node
    assert provider.check_node_create(node.name)
    assert daemons() == before


def test_replicated_service_spreads_over_nodes(cluster):
    with closing(cluster.manager.client()) as mgr:
        service = mgr.services.create(
            BASE_IMAGE, ["sleep", "600"], name="spread",
            mode=docker.types.ServiceMode("replicated", replicas=3),
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),  # no IPVS for VIPs here
            stop_grace_period=1_000_000_000)
        try:
            def running():
                tasks = [t for t in service.tasks() if t["Status"]["State"] == "running"]
                return tasks if len(tasks) == 3 else None
            tasks = wait_until(running, 60, "service running")
            assert len({t["NodeID"] for t in tasks}) == 3
        finally:
            service.remove()
    for node in cluster.nodes:
        log = Path(node.state_dir, "dockerd.log").read_text()
        assert "pull" not in log.lower(), log  # the image came from the node itself


def test_tls_endpoint_needs_a_cert_from_the_cluster_ca(cluster):
    endpoint = cluster.manager.api_address
    admin = issue_client_cert(cluster.ca, "admin")
    for node in cluster.nodes:
        with closing(tls_client(node.api_address, cluster.ca.cert_pem, admin)) as client:
            assert client.version()["ApiVersion"]
    with closing(tls_client(endpoint, cluster.ca.cert_pem, admin)) as client:
        assert len(client.nodes.list()) == 3

    rogue = new_ca("rogue")
    refused = [
        (cluster.ca.cert_pem, None),  # no client certificate
        (cluster.ca.cert_pem, issue_client_cert(rogue, "admin")),  # foreign CA
        (rogue.cert_pem, admin),  # server not trusted by a client of another CA
    ]
    for ca_pem, cert in refused:
        with closing(tls_client(endpoint, ca_pem, cert, timeout=10)) as client:
            with pytest.raises(requests.exceptions.ConnectionError):
                client.version()
    plain = requests.get(f"http://{cluster.manager.address}:2376/version", timeout=10)
    assert "ApiVersion" not in plain.text


def test_restart_with_a_new_ca_keeps_the_swarm(provider, cluster):
    worker = cluster.nodes[2]
    new = new_ca("jbt-rotated")
    provider.restart_node(worker.name, ca=new)
    provider.wait_nodes([worker.name])
    with closing(cluster.manager.client()) as mgr:
        swarm.wait_ready(mgr, 3)
    with closing(tls_client(worker.api_address, new.cert_pem,
                            issue_client_cert(new, "admin"))) as client:
        assert client.info()["Swarm"]["LocalNodeState"] == "active"
    with closing(tls_client(worker.api_address, new.cert_pem,
                            issue_client_cert(cluster.ca, "admin"), timeout=10)) as client:
        with pytest.raises(requests.exceptions.ConnectionError):
            client.version()


def rootfs_tarball(path: Path) -> Path:
    data = b"hello\n"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_dead_dockerd_is_reported_down_then_adopted_and_removed(provider, cluster, tmp_path):
    manager = cluster.manager
    with closing(manager.client()) as mgr:
        mgr.api.tag(BASE_IMAGE, "jbt/saved", "1")
        saved = tmp_path / "saved.tar"
        with open(saved, "wb") as f:
            for chunk in mgr.api.get_image("jbt/saved:1"):
                f.write(chunk)
    spec = NodeSpec("swarm-node-extra", NET, hostname="extra", images=(
        ImageTarball(str(rootfs_tarball(tmp_path / "rootfs.tar")), "jbt/rootfs:1"),
        ImageTarball(str(saved))))
    name = provider.node_name(spec.node_id)
    try:
        [extra] = provider.start_nodes([spec], cluster.ca)
        with closing(extra.client()) as client, closing(manager.client()) as mgr:
            tags = {t for image in client.images.list() for t in image.tags}
            assert {BASE_IMAGE, "jbt/rootfs:1", "jbt/saved:1"} <= tags
            node_id = swarm.join(client, extra.address, manager.address,
                                 swarm.join_tokens(mgr)["worker"])
            swarm.wait_ready(mgr, 4)

            t0 = time.monotonic()
            os.kill(int(Path(extra.state_dir, "docker.pid").read_text()), signal.SIGKILL)
            wait_until(
                lambda: {n.id: n.state for n in swarm.node_states(mgr)}[node_id] == "down",
                15, "node reported down", interval=0.2)
            print(f"dead dockerd reported down after {time.monotonic() - t0:.1f} s")

            # a fresh provider (as after a restart of ours) adopts the node and restarts dockerd
            again = LocalProvider(str(provider.state_dir), prefix=provider.prefix)
            assert again.adopt([NET], [spec.node_id]) == {spec.node_id: extra}
            again.wait_nodes([name])
            swarm.wait_ready(mgr, 4)  # rejoined on its old state

            swarm.remove_node(mgr, node_id, leaving=client)
            assert node_id not in {n.id for n in swarm.node_states(mgr)}
        removed = again.remove_leftovers([s.node_id for s in cluster_specs()], [NET])
        assert removed == [name]
        leftovers = {k: [x for x in v if extra.name in x or again._veth(name) in x]
                     for k, v in again.inventory().items()}
        assert leftovers == {k: [] for k in leftovers}
    finally:
        provider.destroy_nodes([name])


def test_delete_leaves_the_host_as_before(provider, cluster, before, host_snapshot):
    t0 = time.monotonic()
    delete_cluster(provider)
    print(f"3-node cluster deleted in {time.monotonic() - t0:.2f} s")
    inventory, snapshot = before
    assert provider.inventory() == inventory
    assert host_snapshot() == snapshot

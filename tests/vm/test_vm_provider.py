"""The vm provider on real QEMU VMs: two nodes booted in parallel on one cluster network, what
a driver does with them, what a tenant root in a node cannot do, and a delete leaving nothing.
The tests run in order on the same nodes (a boot costs tens of seconds under TCG)."""

import os
import socket
import threading
import uuid
from contextlib import closing
from pathlib import Path

import docker
import pytest

from jeroboam.infra import InfraError, ProcessSpec, wait_until
from jeroboam.infra.local import BASE_IMAGE, tls_client
from jeroboam.infra.local.provider import NodeSpec
from jeroboam.pki import new_ca
from tests.support import host_snapshot
from tests.vm.conftest import PREFIX, assert_qemu_confined, privileged_view_of_host

NETWORK = "net-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def cluster(vm_provider):
    before = vm_provider.inventory(), host_snapshot(PREFIX)
    ca = new_ca("vm-test")
    vm_provider.create_network(NETWORK)
    try:
        nodes = vm_provider.start_nodes(
            [NodeSpec(f"{NETWORK}/g/{i}", NETWORK, f"vmt-node-{i}") for i in range(2)], ca)
        yield ca, nodes, before
    finally:
        vm_provider.destroy_nodes([n.name for n in vm_provider.nodes()])
        if vm_provider.get_network(NETWORK) is not None:
            vm_provider.delete_network(NETWORK)


def test_acceleration_is_chosen_by_trial(vm_provider):
    accel = vm_provider.acceleration()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        assert (accel["accel"], accel["reason"]) == ("tcg", "no usable /dev/kvm")
    else:  # the trial booted, or said it did not
        assert accel["reason"].startswith("a trial guest" if accel["accel"] == "kvm" else "/dev/kvm is there")


def test_nodes_serve_docker_over_tls_with_the_cluster_ca(cluster):
    ca, nodes, _ = cluster
    assert len({n.address for n in nodes}) == 2
    for node in nodes:
        assert node.api_address == f"tcp://{node.address}:2376"
        with closing(node.client()) as client:
            info = client.info()
            assert info["Name"] == node.hostname
            assert client.images.get(BASE_IMAGE)
        # each node has a kernel of its own: not the host's
        assert node.run(["uname", "-r"]).strip() != os.uname().release
    # without a client certificate from the cluster CA the node refuses
    with closing(tls_client(nodes[0].api_address, ca.cert_pem, None, timeout=10)) as anonymous:
        with pytest.raises(Exception):
            anonymous.version()


def test_qemu_runs_unprivileged_and_confined(cluster, vm_provider):
    assert sorted(vm_provider._processes_by_node().values()) == sorted(n.name for n in cluster[1])
    assert_qemu_confined(vm_provider)


def test_files_commands_and_supervised_processes(cluster):
    node = cluster[1][0]
    path = node.put_file("conf/hello.txt", "hello\n", mode=0o640)
    assert path == node.path("conf/hello.txt")
    assert node.run(["cat", path]) == "hello\n"
    assert node.run(["stat", "-c", "%a", path]).strip() == "640"
    with pytest.raises(InfraError):
        node.path("../../etc/passwd")
    with pytest.raises(InfraError, match="false"):
        node.run(["false"])
    assert node.run(["tr", "a-z", "A-Z"], input="abc") == "ABC"
    pid = node.start_process(ProcessSpec("ticker", ("sh", "-c", "echo started; exec sleep 600")))
    assert node.start_process(ProcessSpec("ticker", ("sleep", "1"))) == pid  # already runs
    assert node.process_pid("ticker") == pid
    wait_until(lambda: "started" in Path(node.process_log("ticker")).read_text(), 30,
               "the process's output in its log", interval=0.5)
    node.stop_process("ticker", timeout=5)
    assert node.process_pid("ticker") is None


def test_root_in_a_privileged_container_sees_the_guest_not_the_host(cluster):
    """A tenant with the cluster's credentials, root with `--privileged -v /:/host`."""
    node = cluster[1][0]
    with closing(node.client(timeout=120)) as client:
        out = privileged_view_of_host(client)
    assert "No such file" in out
    assert node.hostname in out  # the / it got is the node's own


def test_nodes_cannot_reach_the_host_nor_start_connections_out(cluster, vm_provider):
    _, nodes, _ = cluster
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    port = listener.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(listener.accept())
        except OSError:  # closed at the end of the test
            pass
    threading.Thread(target=accept, daemon=True).start()
    host_addresses = ["169.254.0.1", vm_provider.get_network(NETWORK).gateway]
    try:
        for address in host_addresses:
            with pytest.raises(InfraError):
                nodes[0].run(["socat", "-T2", "/dev/null", f"TCP:{address}:{port},connect-timeout=3"],
                             timeout=20)
        assert not accepted
        # the control: nodes of one cluster reach each other
        nodes[0].run(["socat", "/dev/null", f"TCP:{nodes[1].address}:2376,connect-timeout=5"],
                     timeout=20)
    finally:
        listener.close()


def test_a_killed_vm_is_seen_down_and_adopt_boots_it_again(cluster, vm_provider):
    node = cluster[1][1]
    pid = vm_provider._qemu_pid(node.name)
    os.kill(pid, 9)
    vm_provider._processes_by_node()  # noqa: the kill is seen through /proc, not a cache
    assert not vm_provider.node_running(node.name)
    assert not node.ping()
    vm_provider.adopt([NETWORK], [node.node_id])
    vm_provider.wait_nodes([node.name])
    with closing(node.client()) as client:
        assert client.info()["Name"] == node.hostname


def test_delete_leaves_nothing(cluster, vm_provider):
    _, nodes, (inventory, snapshot) = cluster
    vm_provider.destroy_nodes([n.name for n in nodes])
    vm_provider.delete_network(NETWORK)
    assert vm_provider.inventory() == inventory
    assert host_snapshot(PREFIX) == snapshot
    for node in nodes:
        with pytest.raises(Exception):
            with closing(docker.DockerClient(base_url=f"tcp://{node.address}:2375",
                                             timeout=2)) as client:
                client.version()

"""Fixtures for the vm provider's tests: real QEMU virtual machines, as root, under a private
prefix. Booting is slow under TCG (tens of seconds): the tests share their nodes."""

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import docker
import pytest
from keystoneauth1 import noauth, session as ks_session
from magnumclient import client as magnum_client

from jeroboam.drivers.nodes import node_key
from jeroboam.infra.local import BASE_IMAGE, tls_client
from jeroboam.infra.local.resources import prefix_for
from jeroboam.infra.vm.provider import BUILD_SCRIPT, DEFAULT_IMAGES, VmNode, VmProvider
from tests.drivers.conftest import new_service
from tests.drivers.test_swarm_lifecycle import signed_client_cert
from tests.support import host_snapshot, scratch_provider, wait_http

PREFIX = "jvt"


def privileged_view_of_host(client) -> str:
    """What a tenant root sees, in a `--privileged -v /:/host` container on its node, of a
    marker file just made on the host (an error message: it is not there) and of /etc/hostname
    (the node's own)."""
    marker = Path("/tmp", f"jvt-host-marker-{uuid.uuid4().hex}")
    marker.write_text("host secret\n")
    try:
        return client.containers.run(
            BASE_IMAGE, ["sh", "-c", f"ls /host{marker} 2>&1; cat /host/etc/hostname"],
            privileged=True, volumes={"/": {"bind": "/host", "mode": "rw"}},
            remove=True).decode()
    finally:
        marker.unlink()


@pytest.fixture(scope="session")
def vm_images():
    """The node images (scripts/build-vm-images.sh: minutes the first time, cached after)."""
    if os.geteuid() != 0:
        pytest.skip("VM nodes need root (network namespaces, taps)")
    subprocess.run(["bash", str(BUILD_SCRIPT)], check=True, stdout=subprocess.DEVNULL)
    return DEFAULT_IMAGES


@pytest.fixture(scope="session")
def vm_provider(vm_images):
    with scratch_provider(lambda state: VmProvider(state, prefix=PREFIX, images_dir=vm_images),
                          PREFIX) as p:
        yield p


def qemu_status(pid: int) -> dict[str, str]:
    return dict(line.split(":\t", 1) for line in
                Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line)


def vm_provider_of(data: Path) -> VmProvider:
    """A vm provider on a service's state directory (what the service's own one sees)."""
    state = str(data / "vm")
    return VmProvider(state, prefix=prefix_for(state))


@pytest.fixture(scope="module")
def service(vm_images):
    """`jeroboam serve` (SQLite) whose clusters' nodes are VMs; its ``before``: the vm
    provider's inventory and the host's routes and firewall before any cluster."""
    svc = new_service()
    provider = vm_provider_of(svc.data)
    svc.before = provider.inventory(), host_snapshot(provider.prefix)
    try:
        wait_http(svc.url, svc.start("serve", ["serve", "--bind", svc.url.rsplit("/", 1)[1]]),
                  timeout=90)
        yield svc
    finally:
        for proc in svc.procs.values():
            proc.stop()
        provider.remove_leftovers([], [])
        shutil.rmtree(svc.data, ignore_errors=True)


def tenant(service, project: str):
    """python-magnumclient as a plain member of ``project`` (not one of [infra] local_projects)."""
    session = ks_session.Session(auth=noauth.NoAuth(), additional_headers={
        "X-Project-Id": project, "X-User-Id": f"u-{project}", "X-Roles": "member,reader"})
    return magnum_client.Client(session=session, endpoint_override=service.url + "/v1",
                                api_version="latest")


def tenant_docker(magnum, cluster_uuid: str, timeout: float = 300) -> docker.DockerClient:
    """The tenant's Docker client on its cluster: the cluster CA and a client certificate
    signed through the API, as `openstack coe cluster config` gets them. (A `docker run` on a
    TCG guest of a busy host can take minutes.)"""
    cluster = magnum.clusters.get(cluster_uuid)
    ca = magnum.certificates.get(cluster_uuid=cluster_uuid).pem
    return tls_client(cluster.api_address, ca, signed_client_cert(magnum, cluster_uuid), timeout)


def vm_nodes(service, cluster_uuid: str) -> list[VmNode]:
    """The cluster's VMs, by hostname."""
    return sorted((n for n in vm_provider_of(service.data).nodes()
                   if (key := node_key(n)) and key[0] == cluster_uuid), key=lambda n: n.hostname)


def assert_qemu_confined(provider: VmProvider) -> None:
    """Every QEMU process of the provider: no capabilities, not root, seccomp-filtered."""
    pids = list(provider._processes_by_node())
    assert pids
    for pid in pids:
        status = qemu_status(pid)
        assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
        assert set(status["Uid"].split()) == {"65534"}  # nobody
        assert status["Seccomp"].strip() == "2"  # filter mode
        assert status["NoNewPrivs"].strip() == "1"

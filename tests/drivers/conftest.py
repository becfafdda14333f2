"""Fixtures for the swarm driver's tests: real `jeroboam` processes building real swarms
(network namespaces, dockerds, TLS), as root. Each service has its own data directory, hence
its own provider name prefix: nothing here touches another installation's nodes."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from keystoneauth1 import noauth, session as ks_session
from magnumclient import client as magnum_client
from magnumclient import exceptions as magnum_exc

from jeroboam.drivers.nodes import node_key
from jeroboam.infra.local import LocalProvider
from tests.support import Api, Process, base_env, free_port, host_snapshot, provider_of, wait_http

# The noauth operator's project: `openstack coe` sent without identity headers sees it too.
PROJECT = "default"
OPENSTACK = str(Path(sys.executable).with_name("openstack"))
TERMINAL = re.compile(r"_(COMPLETE|FAILED)$")


@dataclass
class Service:
    url: str
    data: Path
    env: dict
    procs: dict[str, Process] = field(default_factory=dict)
    # the provider's inventory and the host's routes and firewall before any cluster
    before: tuple | None = None

    @property
    def provider(self) -> LocalProvider:
        return provider_of(self.data)

    def start(self, name: str, args: list[str]) -> Process:
        self.procs[name] = Process(args, self.env, self.data / f"{name}-{len(self.procs)}.log")
        return self.procs[name]

    def magnum(self):
        session = ks_session.Session(auth=noauth.NoAuth(), additional_headers={
            "X-Project-Id": PROJECT, "X-User-Id": "u-swarm", "X-Roles": "member,reader"})
        return magnum_client.Client(session=session, endpoint_override=self.url + "/v1",
                                    api_version="latest")

    def api(self) -> Api:
        return Api(self.url, project=PROJECT, user="u-swarm")

    def tasks(self, cluster_uuid: str) -> list[dict]:
        tasks = self.api().get(f"/v1/tasks?resource_uuid={cluster_uuid}").json()["tasks"]
        return [self.api().get(f"/v1/tasks/{t['uuid']}").json()["task"] for t in tasks]


@pytest.fixture(scope="session")
def host():
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.skip("real swarms need root and dockerd (scripts/host-prereqs.sh)")


def new_service(**settings) -> Service:
    # short: unix socket paths under <data>/local must stay below 108 bytes
    data = Path(tempfile.mkdtemp(prefix="jbd-", dir="/tmp"))
    port = free_port()
    env = base_env(data, **{"JEROBOAM_WORKER_LEASE_SECONDS": "3", **settings})
    service = Service(f"http://127.0.0.1:{port}", data, env)
    service.before = service.provider.inventory(), host_snapshot(service.provider.prefix)
    return service


def close_service(service: Service) -> None:
    """Stop the processes, then remove whatever of theirs is left on the host."""
    try:
        for proc in service.procs.values():
            proc.stop()
        if service.provider.state_dir.exists():  # else no node was ever made
            service.provider.remove_leftovers([], [])
    finally:
        shutil.rmtree(service.data, ignore_errors=True)


@pytest.fixture(scope="module")
def service(host):
    """`jeroboam serve`: API and workers in one process, SQLite."""
    svc = new_service()
    try:
        wait_http(svc.url, svc.start("serve", ["serve", "--bind", svc.url.rsplit("/", 1)[1]]))
        yield svc
    finally:
        close_service(svc)


@pytest.fixture(scope="module")
def magnum(service):
    """python-magnumclient on the module's service (a module may bring its own `service`)."""
    return service.magnum()


def wait_for(fn, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout} s (last: {value!r})")
        time.sleep(interval)


def wait_status(magnum, ident: str, wanted: str, timeout: float = 60):
    """The cluster once its operation ends; it must end in ``wanted``."""
    def settled():
        cluster = magnum.clusters.get(ident)
        return cluster if TERMINAL.search(cluster.status) else None
    cluster = wait_for(settled, timeout, f"cluster {ident} settles")
    assert cluster.status == wanted, f"{cluster.status}: {cluster.status_reason}"
    return cluster


def wait_gone(magnum, ident: str, timeout: float = 60) -> None:
    def gone():
        try:
            cluster = magnum.clusters.get(ident)
        except magnum_exc.NotFound:
            return True
        assert cluster.status != "DELETE_FAILED", cluster.status_reason
        return False
    wait_for(gone, timeout, f"cluster {ident} deleted")


def delete_cluster(magnum, ident: str) -> None:
    try:
        magnum.clusters.delete(ident)
    except magnum_exc.NotFound:
        return
    wait_gone(magnum, ident)


@contextmanager
def new_cluster(magnum, coe: str, name: str, **counts):
    """A cluster (``master_count``/``node_count`` in ``counts``) of a new template of ``coe``
    on the local provider; deleted when done."""
    template = magnum.cluster_templates.create(name=f"{name}-{coe}", coe=coe,
                                               image_id="jeroboam-node", server_type="local")
    created = magnum.clusters.create(name=name, cluster_template_id=template.uuid, **counts)
    try:
        yield created.uuid
    finally:
        delete_cluster(magnum, created.uuid)


def coe_cluster_config(service, cluster_uuid: str, directory: Path, *extra: str) -> dict[str, str]:
    """`openstack coe cluster config`, unchanged: it writes into ``directory``; the variables
    it prints to export."""
    env = {**os.environ, "OS_AUTH_TYPE": "none", "OS_ENDPOINT": service.url + "/v1",
           "SHELL": "/bin/bash"}
    out = subprocess.run([OPENSTACK, "coe", "cluster", "config", cluster_uuid, "--dir",
                          str(directory), *extra],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return dict(line[len("export "):].split("=", 1) for line in out.stdout.splitlines()
                if line.startswith("export "))


def delete_leaves_the_host_as_before(service, magnum, cluster_uuid: str) -> None:
    """Delete the cluster; the provider's namespaces, links, mounts, cgroups, processes and
    state, and the host's routes and iptables, are then as before any cluster."""
    started = time.monotonic()
    magnum.clusters.delete(cluster_uuid)
    wait_gone(magnum, cluster_uuid)
    print(f"cluster deleted in {time.monotonic() - started:.2f} s")
    inventory, snapshot = service.before
    assert service.provider.inventory() == inventory
    assert host_snapshot(service.provider.prefix) == snapshot


def nodes_of(service, cluster_uuid: str) -> list:
    """The cluster's nodes on the service's provider, by hostname."""
    return sorted((n for n in service.provider.nodes()
                   if (key := node_key(n)) and key[0] == cluster_uuid), key=lambda n: n.hostname)

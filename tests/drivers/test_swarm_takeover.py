"""The production shape: `jeroboam api` and two `jeroboam worker`s on PostgreSQL. A worker
SIGKILLed while it starts a cluster's nodes, a worker restarted after nodes died and strays
appeared: the database and the host end up agreeing, nothing leaked."""

import os
import signal
import time
from contextlib import closing
from pathlib import Path

import pytest

from jeroboam.infra.local import NodeSpec
from jeroboam.drivers.nodes import node_key
from jeroboam.pki import new_ca
from tests.drivers.conftest import (close_service, delete_cluster, new_service, wait_for,
                                    wait_gone, wait_status)
from tests.support import Process, wait_http, zombies
from tests.test_postgres_scale_out import database  # noqa: F401  (a fixture)

WORKERS = ("w1", "w2")


@pytest.fixture(scope="module")
def service(host, database):  # noqa: F811
    svc = new_service(JEROBOAM_SERVER_DATABASE=database, JEROBOAM_WORKER_LEASE_SECONDS="2",
                      JEROBOAM_WORKER_THREADS="2")
    try:
        upgrade = Process(["db", "upgrade"], svc.env, svc.data / "upgrade.log")
        assert upgrade.proc.wait(60) == 0, upgrade.output()
        svc.start("api", ["api", "--bind", svc.url.rsplit("/", 1)[1]])
        for name in WORKERS:
            svc.start(name, ["worker", "--name", name])
        wait_http(svc.url, svc.procs["api"])
        yield svc
    finally:
        close_service(svc)


@pytest.fixture(scope="module")
def cluster(service, magnum):
    template = magnum.cluster_templates.create(name="swarm", coe="swarm-mode",
                                               image_id="jeroboam-node", server_type="local")
    created = magnum.clusters.create(name="durable", cluster_template_id=template.uuid,
                                     node_count=2)
    try:
        yield created.uuid
    finally:
        delete_cluster(magnum, created.uuid)


def nodes_of(service, cluster_uuid: str):
    return [n for n in service.provider.nodes() if node_key(n) and node_key(n)[0] == cluster_uuid]


def ready_members(node) -> list[str]:
    with closing(node.client()) as client:
        return sorted(n.get("Description", {}).get("Hostname") for n in client.api.nodes()
                      if n["Status"]["State"] == "ready")


def test_a_worker_killed_while_starting_nodes_is_taken_over(service, magnum, cluster):
    api = service.api()

    def starting():
        [task] = service.tasks(cluster)
        steps = {s["name"]: s["state"] for s in task["steps"]}
        return task if steps.get("start nodes") == "RUNNING" else None
    task = wait_for(starting, 30, "step start nodes running", interval=0.02)
    victim = task["worker"]
    service.procs[victim].kill()
    survivor = next(w for w in WORKERS if w != victim)

    done = wait_status(magnum, cluster, "CREATE_COMPLETE", timeout=60)
    finished = api.wait_task(task["uuid"])
    assert (finished["state"], finished["worker"], finished["attempts"]) == (
        "SUCCEEDED", survivor, 2)
    assert any(f"taken over by {survivor}" in e["message"] for e in finished["events"])
    # the nodes the dead worker started were found again, none made twice
    nodes = nodes_of(service, cluster)
    assert len(nodes) == 3 and len(done.node_addresses) == 2
    manager = next(n for n in nodes if "-master-" in n.hostname)
    assert ready_members(manager) == sorted(n.hostname for n in nodes)
    service.start(victim, ["worker", "--name", victim])


def test_a_restarted_worker_adopts_dead_nodes_and_removes_strays(service, magnum, cluster):
    for name in WORKERS:
        service.procs[name].stop()
    nodes = nodes_of(service, cluster)
    dead = next(n for n in nodes if "-node-" in n.hostname)
    os.kill(int(Path(dead.state_dir, "docker.pid").read_text()), signal.SIGKILL)
    # a node no cluster or stack knows, as a crash between create and record would leave
    provider = service.provider
    provider.create_network("stray-net")
    [stray] = provider.start_nodes([NodeSpec("stray-node", "stray-net")], new_ca("stray"))
    wait_for(lambda: not provider.node_running(dead.name), 10, "dockerd dead")

    started = time.monotonic()
    service.start("w1", ["worker", "--name", "w1"])
    wait_for(lambda: provider.get_node(stray.name) is None, 60, "stray removed")
    wait_for(lambda: provider.node_running(dead.name), 30, "dead node restarted")
    assert provider.get_network("stray-net") is None
    manager = next(n for n in nodes if "-master-" in n.hostname)
    wait_for(lambda: ready_members(manager) == sorted(n.hostname for n in nodes), 30,
             "swarm whole again")
    print(f"worker start reconciled the host in {time.monotonic() - started:.1f} s")
    wait_for(lambda: magnum.clusters.get(cluster).health_status == "HEALTHY", 15, "HEALTHY")


def test_delete_leaves_the_host_as_before(service, magnum, cluster):
    magnum.clusters.delete(cluster)
    wait_gone(magnum, cluster)
    inventory, _ = service.before
    assert service.provider.inventory() == inventory
    # nodes were started by three workers (one killed) and deleted by one of the live ones:
    # none of the node processes was any worker's child
    live = {p.pid for p in service.procs.values() if p.proc.poll() is None}
    assert not {pid: ppid for pid, ppid in zombies().items() if ppid in live}

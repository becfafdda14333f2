"""A worker's clean-up pass beside the work on real clusters (local provider, PostgreSQL): a
worker that starts while another creates a cluster leaves that cluster's nodes alone, none
removed or restarted, and the create completes on the first attempt; one that starts while
the cluster's lock key is held, as the API begins a delete, sees the delete and leaves the
cluster to it."""

import os
import signal
from pathlib import Path

import psycopg
import pytest

from jeroboam.db.base import make_engine, make_sessionmaker
from jeroboam.tasks import liveness
from tests.drivers.conftest import (close_service, delete_cluster, new_service, wait_for, wait_gone,
                                    wait_status)
from tests.drivers.test_swarm_takeover import nodes_of, ready_members
from tests.support import task_of, wait_http
from tests.test_postgres_scale_out import database  # noqa: F401  (a fixture)


@pytest.fixture(scope="module")
def service(host, database):  # noqa: F811
    svc = new_service(JEROBOAM_SERVER_DATABASE=database, JEROBOAM_WORKER_THREADS="2")
    try:
        upgrade = svc.start("upgrade", ["db", "upgrade"])
        assert upgrade.proc.wait(60) == 0, upgrade.output()
        svc.start("api", ["api", "--bind", svc.url.rsplit("/", 1)[1]])
        svc.start("w1", ["worker", "--name", "w1"])
        wait_http(svc.url, svc.procs["api"])
        yield svc
    finally:
        close_service(svc)


def dockerd_pids(nodes) -> dict[str, str]:
    return {n.name: Path(n.state_dir, "docker.pid").read_text().strip() for n in nodes
            if Path(n.state_dir, "docker.pid").exists()}


def test_a_worker_starting_during_a_create_leaves_its_nodes_alone(service, magnum):
    api = service.api()
    template = magnum.cluster_templates.create(name="swarm", coe="swarm-mode", image_id="jeroboam-node",
                                               server_type="local")
    cluster = magnum.clusters.create(name="busy", cluster_template_id=template.uuid, node_count=2).uuid
    try:
        def starting():
            [task] = service.tasks(cluster)
            steps = {s["name"]: s["state"] for s in task["steps"]}
            return task if steps.get("start nodes") == "RUNNING" and dockerd_pids(nodes_of(service, cluster)) \
                else None
        task = wait_for(starting, 60, "nodes starting", interval=0.05)
        before = dockerd_pids(nodes_of(service, cluster))
        # w1 frozen mid-create (alive, its session open), so that w2's start, however slow,
        # falls within the create
        service.procs["w1"].proc.send_signal(signal.SIGSTOP)
        try:
            service.start("w2", ["worker", "--name", "w2"])

            def reconciled():  # the first heartbeat follows the clean-up pass
                services = api.get("/v1/mservices", headers={"X-Roles": "admin"}).json()["mservices"]
                return any(s["host"] == "w2" and s["report_count"] >= 2 for s in services)
            wait_for(reconciled, 60, "w2 started")
            running = api.get(f"/v1/tasks/{task['uuid']}").json()["task"]
            assert (running["state"], running["worker"]) == ("RUNNING", "w1")
            # none removed or restarted (a node still starting when w1 stopped may add its own)
            now = dockerd_pids(nodes_of(service, cluster))
            assert {name: now.get(name) for name in before} == before
        finally:
            service.procs["w1"].proc.send_signal(signal.SIGCONT)

        done = wait_status(magnum, cluster, "CREATE_COMPLETE", timeout=120)
        finished = api.wait_task(task["uuid"])
        assert (finished["state"], finished["worker"], finished["attempts"]) == ("SUCCEEDED", "w1", 1)
        nodes = nodes_of(service, cluster)
        after = dockerd_pids(nodes)
        # every dockerd running before w2 started runs still, the same process
        assert {name: after.get(name) for name in before} == before
        assert len(nodes) == 3 and len(done.node_addresses) == 2
        manager = next(n for n in nodes if "-master-" in n.hostname)
        assert ready_members(manager) == sorted(n.hostname for n in nodes)
    finally:
        delete_cluster(magnum, cluster)


def reports(service, worker: str) -> int:
    services = service.api().get("/v1/mservices", headers={"X-Roles": "admin"}).json()["mservices"]
    return next((s["report_count"] for s in services if s["host"] == worker), 0)


def test_a_worker_starting_as_a_delete_begins_leaves_the_cluster_to_it(service, magnum, database):  # noqa: F811
    template = magnum.cluster_templates.create(name="swarm-quiet", coe="swarm-mode", image_id="jeroboam-node",
                                               server_type="local")
    cluster = magnum.clusters.create(name="quiet", cluster_template_id=template.uuid, node_count=1).uuid
    wait_status(magnum, cluster, "CREATE_COMPLETE", timeout=120)
    for worker in [w for w in ("w1", "w2") if w in service.procs]:
        service.procs[worker].stop()
    # a node whose dockerd died: the clean-up pass of a starting worker restarts such a node,
    # unless its cluster is being worked on
    dead = next(n for n in nodes_of(service, cluster) if "-node-" in n.hostname)
    os.kill(int(Path(dead.state_dir, "docker.pid").read_text()), signal.SIGKILL)
    wait_for(lambda: not service.provider.node_running(dead.name), 10, "dockerd dead")
    engine = make_engine(database)
    with psycopg.connect(database, autocommit=True) as watch, psycopg.connect(database) as task_row:
        def waiting() -> bool:  # a transaction waits for an advisory lock
            return watch.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND wait_event = 'advisory'").fetchone()[0] > 0
        try:
            with make_sessionmaker(engine)() as holder, holder.begin():
                # the cluster's lock key held a while (as a claim or another worker's clean-up
                # pass holds it), so that a worker's start and the API's delete meet there
                assert liveness.hold(holder, liveness.key_lock(cluster))
                service.start("w3", ["worker", "--name", "w3"])
                wait_for(lambda: waiting() or reports(service, "w3") >= 2, 60, "w3 at the lock key or started")
                delete = task_of(service.api().delete(f"/v1/clusters/{cluster}"))  # the API does not wait
                # the delete's row locked: no worker starts it (claims skip locked rows), so what
                # happens to the node until it is let go is the clean-up pass's doing alone
                task_row.execute("SELECT 1 FROM tasks WHERE uuid = %s FOR UPDATE", (delete,))
        finally:
            engine.dispose()
        wait_for(lambda: reports(service, "w3") >= 2, 60, "w3 started")  # its first heartbeat follows the pass
        assert service.api().get(f"/v1/tasks/{delete}").json()["task"]["state"] == "PENDING"
        assert magnum.clusters.get(cluster).status == "DELETE_IN_PROGRESS"
        assert not service.provider.node_running(dead.name)  # neither restarted nor removed
        assert service.provider.get_node(dead.name) is not None
    wait_gone(magnum, cluster)
    assert service.provider.inventory() == service.before[0]

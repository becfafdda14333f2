"""Failures named by their step, auto-heal, and a 3-manager swarm through a CA rotation."""

import os
import signal
import time
from contextlib import closing
from pathlib import Path

import pytest

from jeroboam.drivers.stack import stack_id_of
from jeroboam.infra.local.resources import scoped
from tests.drivers.conftest import delete_cluster, nodes_of, wait_for, wait_status


@pytest.fixture
def new_cluster(magnum):
    made = []

    def create(name: str, labels: dict | None = None, coe: str = "swarm-mode", **sizes) -> str:
        template = magnum.cluster_templates.create(
            name=f"{name}-tpl", coe=coe, image_id="jeroboam-node", server_type="local",
            labels=labels or {})
        cluster = magnum.clusters.create(name=name, cluster_template_id=template.uuid, **sizes)
        made.append(cluster.uuid)
        return cluster.uuid

    try:
        yield create
    finally:
        for uuid in made:
            delete_cluster(magnum, uuid)


def test_a_failing_step_names_itself_and_leaves_nothing(service, magnum, new_cluster):
    # tarballs must come from the provider's images directory, never from elsewhere
    cluster = new_cluster("broken", {"image_tarballs": "../../../etc/passwd=x:1"}, node_count=1)
    failed = wait_status(magnum, cluster, "CREATE_FAILED")
    assert failed.status_reason.startswith("start nodes: ")
    assert "image tarballs must be in" in failed.status_reason
    [task] = service.tasks(cluster)
    steps = {s["name"]: s for s in task["steps"]}
    assert steps["start nodes"]["state"] == "FAILED" and steps["form swarm"]["state"] == "PENDING"
    assert "must be in" in steps["start nodes"]["error"]
    # the project reads where the images are, not where the service keeps its state
    assert "<state_path>/local/images" in failed.status_reason
    stack_events = service.api().get(f"/v1/stacks/{stack_id_of(cluster)}/events").text
    for text in (failed.status_reason, steps["start nodes"]["error"], stack_events):
        assert str(service.data) not in text

    delete_cluster(magnum, cluster)
    assert not nodes_of(service, cluster)
    assert service.provider.get_network(scoped(stack_id_of(cluster), cluster)) is None
    assert service.api().get(f"/v1/stacks/{stack_id_of(cluster)}").status_code == 404


def test_auto_heal_replaces_a_dead_node_of_a_legacy_swarm(service, magnum, new_cluster):
    cluster = new_cluster("healing", {"auto_heal_enabled": "true"}, coe="swarm", node_count=1)
    wait_status(magnum, cluster, "CREATE_COMPLETE")
    [worker] = [n for n in nodes_of(service, cluster) if "-node-" in n.hostname]
    os.kill(int(Path(worker.state_dir, "docker.pid").read_text()), signal.SIGKILL)

    heal = wait_for(lambda: [t for t in service.tasks(cluster) if t["action"] == "cluster.update"],
                    20, "an auto-heal task")[0]
    assert service.api().wait_task(heal["uuid"], timeout=60)["state"] == "SUCCEEDED"
    wait_status(magnum, cluster, "UPDATE_COMPLETE")
    [replacement] = [n for n in nodes_of(service, cluster) if "-node-" in n.hostname]
    assert replacement.hostname == "healing-node-1"
    wait_for(lambda: magnum.clusters.get(cluster).health_status == "HEALTHY", 15, "HEALTHY")


def test_three_managers_keep_their_swarm_through_a_ca_rotation(service, magnum, new_cluster):
    cluster = new_cluster("trio", master_count=3, node_count=1)
    created = wait_status(magnum, cluster, "CREATE_COMPLETE")
    assert len(created.master_addresses) == 3

    def swarm_members():
        manager = next(n for n in nodes_of(service, cluster) if n.hostname == "trio-master-0")
        with closing(manager.client()) as client:
            return {n["ID"]: (n["Spec"]["Role"], n["Status"]["State"],
                              n.get("ManagerStatus", {}).get("Reachability"))
                    for n in client.api.nodes()}
    members = swarm_members()
    assert sorted(members.values()) == [("manager", "ready", "reachable")] * 3 + [
        ("worker", "ready", None)]

    started = time.monotonic()
    magnum.certificates.rotate_ca(cluster_uuid=cluster)
    wait_status(magnum, cluster, "UPDATE_COMPLETE", timeout=120)
    print(f"CA of a 3-manager cluster rotated in {time.monotonic() - started:.1f} s")
    assert swarm_members() == members

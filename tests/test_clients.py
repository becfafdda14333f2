"""The real OpenStack clients, unchanged, against `jeroboam serve` over HTTP."""

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from keystoneauth1 import noauth, session as ks_session
from magnumclient import client as magnum_client
from magnumclient import exceptions as magnum_exc
import openstack.connection

OPENSTACK = str(Path(sys.executable).with_name("openstack"))


def _session(project: str):
    return ks_session.Session(auth=noauth.NoAuth(), additional_headers={
        "X-Project-Id": project, "X-User-Id": "u-client", "X-Roles": "member,reader"})


@pytest.fixture
def project():
    return f"p-{uuid.uuid4().hex[:8]}"


def _wait(get, status_values, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = get()
        if obj.status in status_values:
            return obj
        time.sleep(0.05)
    raise TimeoutError(obj.status)


def test_python_magnumclient_template_and_cluster_crud(server, project):
    magnum = magnum_client.Client(session=_session(project), endpoint_override=server + "/v1",
                                  api_version="latest")
    template = magnum.cluster_templates.create(name="mc-tpl", coe="swarm-mode", image_id="test-image",
                                               labels={"team": "blue"}, docker_volume_size=3)
    assert template.uuid and template.coe == "swarm-mode" and template.labels == {"team": "blue"}
    # Other tests' public templates are visible too; only this project's are compared.
    assert [t.name for t in magnum.cluster_templates.list() if t.project_id == project] == ["mc-tpl"]
    updated = magnum.cluster_templates.update(template.uuid, [{"op": "replace", "path": "/docker_volume_size",
                                                               "value": 5}])
    assert updated.docker_volume_size == 5

    # each step of the create takes a second: it is in progress when asked at once (the worker
    # runs beside the API, in a process of its own)
    cluster = magnum.clusters.create(name="mc-cluster", cluster_template_id="mc-tpl", node_count=2,
                                     master_count=1, create_timeout=10, keypair=None,
                                     labels={"test_delay_create_cluster": "1"})
    assert magnum.clusters.get(cluster.uuid).status == "CREATE_IN_PROGRESS"
    done = _wait(lambda: magnum.clusters.get("mc-cluster"), {"CREATE_COMPLETE", "CREATE_FAILED"})
    assert done.status == "CREATE_COMPLETE" and done.node_count == 2
    assert [c.name for c in magnum.clusters.list()] == ["mc-cluster"]

    magnum.clusters.resize(cluster.uuid, 3)
    assert _wait(lambda: magnum.clusters.get(cluster.uuid), {"UPDATE_COMPLETE"}).node_count == 3
    groups = magnum.nodegroups.list(cluster.uuid)
    assert sorted(g.name for g in groups) == ["default-master", "default-worker"]

    ca = magnum.certificates.get(cluster_uuid=cluster.uuid)
    assert ca.pem.startswith("-----BEGIN CERTIFICATE-----")

    with pytest.raises(magnum_exc.BadRequest):
        magnum.cluster_templates.delete(template.uuid)
    magnum.clusters.delete(cluster.uuid)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            magnum.clusters.get(cluster.uuid)
        except magnum_exc.NotFound:
            break
        time.sleep(0.05)
    else:
        pytest.fail("cluster was not deleted")
    magnum.cluster_templates.delete(template.uuid)
    assert [t for t in magnum.cluster_templates.list() if t.project_id == project] == []


def test_openstacksdk_template_and_cluster_crud(server, project):
    conn = openstack.connection.Connection(
        session=_session(project), container_infrastructure_management_endpoint_override=server + "/v1")
    coe = conn.container_infrastructure_management
    template = coe.create_cluster_template(name="sdk-tpl", coe="swarm-mode", image_id="test-image")
    assert template.id and coe.get_cluster_template(template.id).name == "sdk-tpl"
    assert "sdk-tpl" in [t.name for t in coe.cluster_templates()]
    cluster = coe.create_cluster(name="sdk-cluster", cluster_template_id=template.id, node_count=1,
                                 master_count=1)
    done = _wait(lambda: coe.get_cluster(cluster.id), {"CREATE_COMPLETE", "CREATE_FAILED"})
    assert done.status == "CREATE_COMPLETE"
    assert [c.name for c in coe.clusters()] == ["sdk-cluster"]
    coe.delete_cluster(cluster.id)
    deadline = time.monotonic() + 20
    while coe.find_cluster(cluster.id) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert coe.find_cluster(cluster.id) is None
    coe.delete_cluster_template(template.id)
    assert "sdk-tpl" not in [t.name for t in coe.cluster_templates()]


def _osc(server, *args):
    env = {**os.environ, "OS_AUTH_TYPE": "none", "OS_ENDPOINT": server + "/v1"}
    result = subprocess.run([OPENSTACK, *args, "-f", "json"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # `create` prints a sentence ("Request to create ... accepted") before its JSON.
    start = min((i for i in (result.stdout.find("{"), result.stdout.find("[")) if i >= 0), default=-1)
    return json.loads(result.stdout[start:]) if start >= 0 else None


def test_openstack_coe_cli_without_identity_headers(server):
    name = f"osc-{uuid.uuid4().hex[:6]}"
    created = _osc(server, "coe", "cluster", "template", "create", name, "--coe", "swarm-mode",
                   "--image", "test-image", "--external-network", "public", "--labels", "a=1")
    assert created["name"] == name and created["labels"] == {"a": "1"}
    listed = _osc(server, "coe", "cluster", "template", "list")
    assert name in [t["name"] for t in listed]
    services = _osc(server, "coe", "service", "list")
    assert services and services[0]["state"] == "up"

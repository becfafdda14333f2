"""DockerInc::Docker::Container against a real dockerd (a local-provider node, TLS on tcp://IP:2376),
named as an endpoint the operator allows ([orchestration] docker_endpoints)."""

import os
import shutil
import tempfile
from contextlib import closing

import pytest

from jeroboam import config, pki
from jeroboam.orchestration.engine import Engine
from jeroboam.orchestration.resources.base import Services, StackInfo
from jeroboam.orchestration.resources.docker import RECORD_LABEL, DockerContainer
from jeroboam.orchestration.store import MemoryStore

from .helpers import hot, resources, run_create, run_delete, run_update

PREFIX = "jbo"  # names of links, netns and cgroups these tests create


@pytest.fixture(scope="module")
def node():
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.skip("needs root and dockerd to run a local-provider node")
    from jeroboam.infra.local import LocalProvider
    from jeroboam.infra.local.provider import NodeSpec

    state = tempfile.mkdtemp(prefix="jbo-", dir="/tmp")
    provider = LocalProvider(state, prefix=PREFIX, docker_bridge=True)
    ca = pki.new_ca("orchestration test CA")
    try:
        provider.setup()
        provider.remove_leftovers([], [])
        provider.create_network("orch-net")
        (info,) = provider.start_nodes([NodeSpec("orch-node", "orch-net")], ca)
        yield info, ca, pki.issue_client_cert(ca, "jeroboam-engine")
    finally:
        provider.remove_leftovers([], [])
        shutil.rmtree(state, ignore_errors=True)


def allowing(node) -> Services:
    """The service's settings with the node's endpoint on the allow-list."""
    return Services(config.load(overrides={("orchestration", "docker_endpoints"): node[0].api_address},
                                environ={}))


def container(node, **props):
    info, ca, client = node
    return {"type": "DockerInc::Docker::Container", "properties": {
        "docker_endpoint": info.api_address, "tls_ca_cert": ca.cert_pem,
        "tls_client_cert": client.cert_pem, "tls_client_key": client.key_pem,
        "image": "busybox:latest", "cmd": ["sleep", "3600"], **props}}


def containers(node) -> list:
    with closing(node[0].client()) as client:
        return client.containers.list(all=True)


def test_container_lifecycle_over_tls(node):
    store = MemoryStore()
    engine = Engine(store, services=allowing(node))
    template = hot({"web": container(node, env=["ROLE=web"], labels={"tier": "front"})}, outputs={
        "id": {"value": {"get_attr": ["web", "id"]}},
        "ip": {"value": {"get_attr": ["web", "network_ip"]}},
        "addresses": {"value": {"get_attr": ["web", "addresses"]}}})
    stack = run_create(engine, template)
    assert stack.state == "CREATE_COMPLETE", stack.status_reason
    web = resources(store, stack)["web"]
    (running,) = containers(node)
    assert running.id == web.physical_id and running.status == "running"
    assert running.labels[RECORD_LABEL] == web.id and running.labels["tier"] == "front"
    assert "ROLE=web" in running.attrs["Config"]["Env"]
    outputs = {o["output_key"]: o["output_value"] for o in engine.outputs(stack)}
    assert outputs["id"] == running.id
    assert outputs["ip"] and outputs["addresses"]["bridge"] == outputs["ip"]

    # No property is update_allowed: a change replaces the container, new before old.
    stack = run_update(engine, stack, hot({"web": container(node, env=["ROLE=web2"])}))
    assert stack.state == "UPDATE_COMPLETE", stack.status_reason
    (replacement,) = containers(node)
    assert replacement.id == resources(store, stack)["web"].physical_id != running.id

    stack = run_delete(engine, stack)
    assert stack.state == "DELETE_COMPLETE", stack.status_reason
    assert containers(node) == []


def test_a_retried_create_finds_the_container_of_the_first_attempt(node):
    props = DockerContainer.validate_properties(container(node)["properties"], "p")
    stack = StackInfo("sid-retry", "retry", None, allowing(node))
    first = DockerContainer("c", "rec-1", props, {}, None, stack)
    container_id = first.create()
    # The worker died before recording the id: another one calls create again.
    again = DockerContainer("c", "rec-1", props, {}, None, stack)
    assert again.create() == container_id
    assert [c.id for c in containers(node)] == [container_id]
    again.delete()
    assert again.check_delete_complete()
    assert containers(node) == []


def test_a_container_that_exits_with_an_error_fails_the_create(node):
    stack = run_create(Engine(MemoryStore(), services=allowing(node)),
                       hot({"bad": container(node, cmd=["sh", "-c", "echo boom; exit 3"])}))
    assert stack.state == "CREATE_FAILED"
    # the exit code, never what the container (or the endpoint) said
    assert "exited with code 3" in stack.status_reason and "boom" not in stack.status_reason
    for leftover in containers(node):
        leftover.remove(force=True)


def test_tls_without_the_client_certificate_is_refused(node):
    info, ca, _ = node
    template = hot({"web": {"type": "DockerInc::Docker::Container", "properties": {
        "docker_endpoint": info.api_address, "tls_ca_cert": ca.cert_pem, "image": "busybox:latest"}}})
    stack = run_create(Engine(MemoryStore(), services=allowing(node)), template)
    assert stack.state == "CREATE_FAILED"
    assert stack.status_reason.endswith("resources.web: cannot connect to the Docker endpoint"), stack.status_reason
    assert containers(node) == []


def test_an_endpoint_off_the_allow_list_is_refused_when_the_worker_runs_it(node):
    # the API checks before storing; the worker checks again (the list may have changed since)
    stack = run_create(Engine(MemoryStore()), hot({"web": container(node)}))
    assert stack.state == "CREATE_FAILED"
    assert "not an endpoint the operator allows" in stack.status_reason
    assert containers(node) == []


def test_a_container_whose_cluster_is_gone_counts_as_deleted(tmp_path):
    # a project deleted its cluster (and the containers on it) before the stack naming it
    from jeroboam.db.base import make_engine, make_sessionmaker
    from jeroboam.db.migrate import upgrade

    db = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(db)
    services = Services(config.load(environ={}), make_sessionmaker(db))
    props = DockerContainer.validate_properties({"cluster": "gone", "image": "busybox"}, "p")
    orphan = DockerContainer("c", "rec-1", props, {}, "0123abcd", StackInfo("sid", "s", "p-a", services))
    orphan.delete()
    assert orphan.check_delete_complete()
    with pytest.raises(Exception, match="cluster gone could not be found in this project"):
        DockerContainer("c", "rec-2", props, {}, None, StackInfo("sid", "s", "p-a", services)).create()

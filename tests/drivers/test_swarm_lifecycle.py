"""One cluster through its whole life, through python-magnumclient and the openstack CLI, on
real dockerds and a real swarm with real TLS. The tests run in order on the same cluster."""

import io
import os
import pwd
import signal
import stat
import subprocess
import sys
import tarfile
import time
from contextlib import closing
from pathlib import Path

import docker
import pytest
import requests
from magnumclient.common import utils as magnum_utils

from jeroboam.cli.privsep import status
from jeroboam.drivers.swarm import CONVERGE_STEPS, CREATE_STEPS
from jeroboam.infra.local import BASE_IMAGE, tls_client
from jeroboam.pki import KeyPair, issue_client_cert, new_ca
from tests.drivers.conftest import (coe_cluster_config, delete_leaves_the_host_as_before,
                                    new_cluster, nodes_of, wait_for, wait_status)
from tests.orchestration.test_stacks_api import wait_stack
from tests.support import Api, descendants, unprivileged_as



@pytest.fixture(scope="module")
def cluster(service, magnum):
    with new_cluster(magnum, "swarm-mode", "life", master_count=1, node_count=1) as uuid:
        yield uuid


@pytest.fixture
def no_ca_bundle(monkeypatch):
    # requests would let the host's CA bundle override the cluster CA the docker SDK is given
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)


def swarm_nodes(service, cluster_uuid: str) -> dict[str, dict]:
    """hostname -> swarm node, as the cluster's manager sees it (through its unix socket)."""
    manager = next(n for n in nodes_of(service, cluster_uuid) if "-master-" in n.hostname)
    with closing(manager.client()) as client:
        return {n.get("Description", {}).get("Hostname"): n for n in client.api.nodes()}


def cluster_config(service, cluster_uuid: str, directory: Path, *extra: str) -> dict[str, str]:
    """`openstack coe cluster config`, unchanged: certificates written, the env it prints."""
    exports = coe_cluster_config(service, cluster_uuid, directory, "--output-certs", *extra)
    assert set(exports) == {"DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY"}
    return exports


def wait_running(swarm_service, count: int) -> list[dict]:
    def running():
        tasks = [t for t in swarm_service.tasks() if t["Status"]["State"] == "running"]
        return tasks if len(tasks) == count else None
    return wait_for(running, 60, f"{count} tasks running")


def test_create_builds_a_swarm(service, magnum, cluster):
    started = time.monotonic()
    done = wait_status(magnum, cluster, "CREATE_COMPLETE")
    print(f"2-node cluster CREATE_COMPLETE after {time.monotonic() - started:.2f} s")
    assert len(done.master_addresses) == 1 and len(done.node_addresses) == 1
    assert done.api_address == f"tcp://{done.master_addresses[0]}:2376"
    assert done.cluster_id
    assert done.health_status == "HEALTHY"
    assert done.health_status_reason == {"life-master-0.Ready": "True", "life-node-0.Ready": "True"}
    [task] = service.tasks(cluster)
    assert [(s["name"], s["state"]) for s in task["steps"]] == [
        (name, "SUCCEEDED") for name in CREATE_STEPS]
    members = swarm_nodes(service, cluster)
    assert {h: (n["Spec"]["Role"], n["Status"]["State"]) for h, n in members.items()} == {
        "life-master-0": ("manager", "ready"), "life-node-0": ("worker", "ready")}
    assert {n["Description"]["Engine"]["EngineVersion"] for n in members.values()} == {
        done.coe_version}


# Run as the API's user: what of the worker's host state it can touch ("ok") or not.
PROBE = """
import os, socket, sys
def probe(what, fn):
    try:
        fn()
        print(what, "ok")
    except PermissionError:
        print(what, "denied")
local, node = sys.argv[1], sys.argv[2]
probe("list", lambda: os.listdir(local))
probe("key", lambda: open(os.path.join(node, "tls", "server-key.pem")).read())
probe("dockerd", lambda: socket.socket(socket.AF_UNIX).connect(os.path.join(node, "docker.sock")))
"""


def pid_uid(pid: int) -> int | None:
    try:
        return int(status(pid)["Uid"].split()[0])
    except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
        return None


def test_the_api_runs_unprivileged_and_cannot_reach_the_nodes(service, cluster):
    """serve's worker built the cluster as root; its API process runs as the jeroboam user,
    which can neither read the nodes' keys nor talk to their dockerds."""
    user = pwd.getpwnam("jeroboam")
    serve = service.procs["serve"].pid
    assert status(serve)["Uid"].split() == ["0"] * 4
    # (the worker's own children, such as an `ip` it runs now and then, are root's)
    [api] = [pid for pid in descendants(serve) if pid_uid(pid) not in (0, None)]
    unprivileged_as(api, user)
    local = service.provider.state_dir
    assert stat.S_IMODE(local.stat().st_mode) == 0o700
    node = nodes_of(service, cluster)[0].state_dir
    assert (Path(node) / "tls" / "server-key.pem").exists() and (Path(node) / "docker.sock").exists()
    out = subprocess.run([sys.executable, "-c", PROBE, str(local), node], user=user.pw_uid, group=user.pw_gid,
                         extra_groups=[], capture_output=True, text=True, timeout=30)
    assert out.stdout.split("\n")[:3] == ["list denied", "key denied", "dockerd denied"], out.stdout + out.stderr


def test_a_stack_of_the_project_runs_a_container_on_its_cluster(service, cluster):
    api = service.api()
    template = {"heat_template_version": "2018-08-31", "resources": {"c": {
        "type": "DockerInc::Docker::Container",
        "properties": {"cluster": "life", "image": BASE_IMAGE, "cmd": ["sleep", "600"]}}}}
    r = api.post("/v1/stacks", json={"stack_name": "on-life", "template": template})
    assert r.status_code == 202, r.text
    stack_id = r.json()["stack"]["id"]
    stack = wait_stack(api, stack_id, {"CREATE_COMPLETE", "CREATE_FAILED"}, timeout=60)
    assert stack["stack_status"] == "CREATE_COMPLETE", stack
    container = api.get(f"/v1/stacks/{stack_id}/resources/c").json()["resource"]
    manager = next(n for n in nodes_of(service, cluster) if "-master-" in n.hostname)
    with closing(manager.client()) as client:
        assert client.containers.get(container["physical_resource_id"]).status == "running"

    # another project may not name the cluster, by name or uuid
    other = Api(service.url, project="p-intruder", user="u-intruder")
    for ident in ("life", cluster):
        template["resources"]["c"]["properties"]["cluster"] = ident
        r = other.post("/v1/stacks", json={"stack_name": "intrude", "template": template})
        assert r.status_code == 400 and "could not be found in this project" in r.text, r.text

    # what the project sees of its stacks names no host path and no private key
    cluster_stack = api.get(f"/v1/clusters/{cluster}").json()["cluster_id"]
    shown = [api.get(f"/v1/stacks/{s}").text for s in (stack_id, cluster_stack)]
    for s in (stack_id, cluster_stack):
        for res in api.get(f"/v1/stacks/{s}/resources?nested_depth=1").json()["resources"]:
            shown.append(api.get(f"/v1/stacks/{s}/resources/{res['resource_name']}").text)
        shown.append(api.get(f"/v1/stacks/{s}/events").text)
    assert len(shown) > 6
    for text in shown:
        assert str(service.data) not in text and "PRIVATE KEY" not in text and ".sock" not in text

    assert api.delete(f"/v1/stacks/{stack_id}").status_code == 204
    wait_stack(api, stack_id, {"GONE"}, timeout=60)
    with closing(manager.client()) as client:
        assert not client.containers.list(all=True, filters={"id": container["physical_resource_id"]})


def test_resize_1_3_1_with_a_service_through_cluster_config(service, magnum, cluster, tmp_path,
                                                            no_ca_bundle):
    magnum.clusters.resize(cluster, 3)
    grown = wait_status(magnum, cluster, "UPDATE_COMPLETE")
    assert len(grown.node_addresses) == 3

    env = cluster_config(service, cluster, tmp_path)
    assert env["DOCKER_HOST"] == grown.api_address and env["DOCKER_CERT_PATH"] == str(tmp_path)
    with closing(docker.from_env(environment=env)) as client:
        assert len(client.nodes.list()) == 4
        spread = client.services.create(
            BASE_IMAGE, ["sleep", "600"], name="spread",
            mode=docker.types.ServiceMode("replicated", replicas=4),
            endpoint_spec=docker.types.EndpointSpec(mode="dnsrr"),  # no IPVS for VIPs here
            stop_grace_period=1_000_000_000)
        try:
            tasks = wait_running(spread, 4)
            assert len({t["NodeID"] for t in tasks}) == 4  # one on each node

            # shrink to 1 worker, naming the 2 to go by address and by swarm node ID
            workers = {n.hostname: n for n in nodes_of(service, cluster) if "-node-" in n.hostname}
            members = swarm_nodes(service, cluster)
            gone = ["life-node-0", "life-node-2"]
            magnum.clusters.resize(cluster, 1, nodes_to_remove=[
                workers[gone[0]].address, members[gone[1]]["ID"]])
            shrunk = wait_status(magnum, cluster, "UPDATE_COMPLETE")
            assert shrunk.node_addresses == [workers["life-node-1"].address]
            assert sorted(swarm_nodes(service, cluster)) == ["life-master-0", "life-node-1"]
            # the drained nodes' tasks run on the others
            tasks = wait_running(spread, 4)
            assert {t["NodeID"] for t in tasks} <= {members["life-master-0"]["ID"],
                                                   members["life-node-1"]["ID"]}
        finally:
            spread.remove()
    task = service.tasks(cluster)[-1]
    assert [s["name"] for s in task["steps"]] == CONVERGE_STEPS
    assert not {n.hostname for n in nodes_of(service, cluster)} & set(gone)


def test_ca_rotation_keeps_the_swarm_and_refuses_foreign_clients(service, magnum, cluster):
    before = magnum.clusters.get(cluster)
    old_ca = magnum.certificates.get(cluster_uuid=cluster).pem
    old_client = signed_client_cert(magnum, cluster)
    ids = {h: n["ID"] for h, n in swarm_nodes(service, cluster).items()}

    with closing(tls_client(before.api_address, old_ca, old_client)) as client:
        assert client.version()["ApiVersion"]
    rogue = new_ca("rogue")
    refused = [
        (old_ca, None),  # no client certificate
        (old_ca, issue_client_cert(rogue, "admin")),  # one from another CA
        (rogue.cert_pem, old_client),  # the server is not trusted by a client of another CA
    ]
    for ca_pem, cert in refused:
        with closing(tls_client(before.api_address, ca_pem, cert, timeout=10)) as client:
            with pytest.raises(requests.exceptions.ConnectionError):
                client.version()

    magnum.certificates.rotate_ca(cluster_uuid=cluster)
    wait_status(magnum, cluster, "UPDATE_COMPLETE")
    new_ca_pem = magnum.certificates.get(cluster_uuid=cluster).pem
    assert new_ca_pem != old_ca
    new_client = signed_client_cert(magnum, cluster)
    for node in nodes_of(service, cluster):
        with closing(tls_client(node.api_address, new_ca_pem, new_client)) as client:
            assert client.info()["Swarm"]["LocalNodeState"] == "active"
        with closing(tls_client(node.api_address, new_ca_pem, old_client, timeout=10)) as client:
            with pytest.raises(requests.exceptions.ConnectionError):
                client.version()
    # the same swarm: same node IDs, all ready
    after = swarm_nodes(service, cluster)
    assert {h: n["ID"] for h, n in after.items()} == ids
    assert {n["Status"]["State"] for n in after.values()} == {"ready"}


def signed_client_cert(magnum, cluster_uuid: str) -> KeyPair:
    """A client certificate as `cluster config` gets one: a CSR signed through the API."""
    csr = magnum_utils.generate_csr_and_key()
    cert = magnum.certificates.create(cluster_uuid=cluster_uuid, csr=csr["csr"]).pem
    return KeyPair(cert, csr["key"])


def test_dead_dockerd_turns_the_cluster_unhealthy_and_a_resize_replaces_it(service, magnum,
                                                                          cluster):
    [worker] = [n for n in nodes_of(service, cluster) if "-node-" in n.hostname]
    killed = time.monotonic()
    os.kill(int(Path(worker.state_dir, "docker.pid").read_text()), signal.SIGKILL)
    sick = wait_for(lambda: (c := magnum.clusters.get(cluster)).health_status == "UNHEALTHY"
                    and c, 15, "cluster UNHEALTHY")
    print(f"dead dockerd seen after {time.monotonic() - killed:.1f} s")
    assert sick.health_status_reason[f"{worker.hostname}.Ready"] == "False"
    assert sick.health_status_reason["life-master-0.Ready"] == "True"
    assert sick.status == "UPDATE_COMPLETE"  # no auto-heal without the label

    magnum.clusters.resize(cluster, 1)  # same size: converge, the dead node is replaced
    healed = wait_status(magnum, cluster, "UPDATE_COMPLETE")
    [replacement] = [n for n in nodes_of(service, cluster) if "-node-" in n.hostname]
    assert replacement.hostname != worker.hostname and not Path(worker.state_dir).exists()
    assert healed.node_addresses == [replacement.address]
    healthy = wait_for(lambda: (c := magnum.clusters.get(cluster)).health_status == "HEALTHY"
                       and c, 15, "cluster HEALTHY")
    assert f"{replacement.hostname}.Ready" in healthy.health_status_reason


def test_nodegroup_create_and_delete(service, magnum, cluster):
    magnum.nodegroups.create(cluster, name="extra", node_count=2)
    wait_status(magnum, cluster, "UPDATE_COMPLETE")
    group = magnum.nodegroups.get(cluster, "extra")
    assert group.status == "CREATE_COMPLETE" and len(group.node_addresses) == 2
    members = swarm_nodes(service, cluster)
    assert {members[h]["Status"]["State"] for h in ("life-extra-0", "life-extra-1")} == {"ready"}

    magnum.nodegroups.delete(cluster, "extra")
    wait_status(magnum, cluster, "UPDATE_COMPLETE")
    assert "extra" not in [g.name for g in magnum.nodegroups.list(cluster)]
    assert not [h for h in swarm_nodes(service, cluster) if "extra" in h]
    assert not [n for n in nodes_of(service, cluster) if "extra" in n.hostname]


def rootfs_tarball(path: Path) -> None:
    data = b"upgraded\n"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("upgraded.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def test_upgrade_imports_the_images_the_new_template_names(service, magnum, cluster):
    images = service.data / "local" / "images"
    rootfs_tarball(images / "extra.tar")
    newer = magnum.cluster_templates.create(
        name="swarm-extra", coe="swarm-mode", image_id="jeroboam-node", server_type="local",
        labels={"image_tarballs": "extra.tar=jbd/extra:1"})
    magnum.clusters.upgrade(cluster, newer.uuid)
    upgraded = wait_status(magnum, cluster, "UPDATE_COMPLETE")
    assert upgraded.cluster_template_id == newer.uuid
    for node in nodes_of(service, cluster):
        with closing(node.client()) as client:
            assert client.images.get("jbd/extra:1")


def test_delete_leaves_the_host_as_before(service, magnum, cluster):
    delete_leaves_the_host_as_before(service, magnum, cluster)

"""Tenant isolation through the API, played as an attacker: a member of project B against
project A and against the host. Each test asserts the refusal (status and message) and
that nothing changed: A's objects as A sees them, B's own listings, and for the local
provider the host's namespaces, links and routes."""

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import httpx
import pytest

from jeroboam.infra.local.resources import prefix_for
from tests.support import Api, Process, base_env, free_port, wait_http


def error(r) -> dict:
    return r.json()["errors"][0]


DATA: dict[str, Path] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's own `jeroboam serve`, so that the host can be watched for its names alone
    (other suites may build clusters on the same host meanwhile)."""
    data = Path(tempfile.mkdtemp(prefix="jbi-", dir="/tmp"))  # short: unix socket paths
    port = free_port()
    proc = Process(["serve", "--bind", f"127.0.0.1:{port}"], base_env(data), data / "serve.log")
    url = f"http://127.0.0.1:{port}"
    DATA[url] = data
    try:
        wait_http(url, proc)
        yield url
    finally:
        proc.stop()
        shutil.rmtree(data, ignore_errors=True)


def host_state(server) -> dict:
    """What a `server_type local` cluster of this service would make on the host: namespaces,
    links and routes under its provider's name prefix, processes under its data dir."""
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 to watch the host")
    data = DATA[server]
    prefix = prefix_for(str(data / "local"))

    def ours(*argv):
        lines = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()
        return [line for line in lines if prefix in line]
    processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    return {"netns": ours("ip", "netns", "list"), "links": ours("ip", "-o", "link", "show"),
            "routes": ours("ip", "route", "show", "table", "all"),
            "processes": [p for p in processes.splitlines() if str(data) in p and "jeroboam.cli.main" not in p],
            "nodes": sorted(p.name for p in (data / "local" / "nodes").glob("*"))}


@pytest.fixture
def victim(server):
    """Project A, with a template and a cluster of its own (test driver: no host resources)."""
    a = Api(server, project=f"pa-{uuid.uuid4().hex[:8]}", user="u-a")
    template = a.template(name="a-tpl")
    cluster, _ = a.cluster(template["uuid"], name="a-cluster")
    a.wait_cluster(cluster, {"CREATE_COMPLETE"})
    return a, template, a.get(f"/v1/clusters/{cluster}").json()


@pytest.fixture
def attacker(server):
    """Project B: a plain member."""
    return Api(server, project=f"pb-{uuid.uuid4().hex[:8]}", user="u-b")


def snapshot(api: Api) -> dict:
    """Everything a project has, as it sees it (timestamps included: any write shows)."""
    return {path: api.get(path).json() for path in (
        "/v1/clustertemplates/detail", "/v1/clusters/detail", "/v1/federations/detail", "/v1/tasks")}


def local_template_body(name="local") -> dict:
    return {"name": name, "coe": "swarm-mode", "image_id": "jeroboam-node", "server_type": "local"}


# -- 4. the namespace provider is for the operator ---------------------------------------------

def test_member_may_not_make_a_local_template(server, attacker, victim):
    a = victim[0]
    host, mine, theirs = host_state(server), snapshot(attacker), snapshot(a)
    r = attacker.post("/v1/clustertemplates", json=local_template_body())
    assert r.status_code == 403
    assert "[infra] local_projects" in error(r)["detail"] and "root" in error(r)["detail"]
    own = attacker.template(name="vm-tpl")
    r = attacker.patch(f"/v1/clustertemplates/{own['uuid']}",
                       json=[{"op": "replace", "path": "/server_type", "value": "local"}])
    assert r.status_code == 403 and "[infra] local_projects" in error(r)["detail"]
    assert attacker.get(f"/v1/clustertemplates/{own['uuid']}").json() == own
    after = snapshot(attacker)
    assert [t["name"] for t in after["/v1/clustertemplates/detail"]["clustertemplates"]
            if t["project_id"] == attacker.headers["X-Project-Id"]] == ["vm-tpl"]
    assert mine["/v1/clusters/detail"] == after["/v1/clusters/detail"]
    assert snapshot(a) == theirs and host_state(server) == host


def test_member_may_not_use_an_operators_public_local_template(server, attacker):
    operator = Api(server, project="default", user="u-operator", roles="admin")
    template = operator.post("/v1/clustertemplates", json={**local_template_body(f"pub-{uuid.uuid4().hex[:6]}"),
                                                          "public": True})
    assert template.status_code == 201, template.text
    template = template.json()
    host, mine = host_state(server), snapshot(attacker)
    assert template["uuid"] in [t["uuid"] for t in mine["/v1/clustertemplates/detail"]["clustertemplates"]]
    r = attacker.post("/v1/clusters", json={"cluster_template_id": template["uuid"], "node_count": 1})
    assert r.status_code == 403 and "[infra] local_projects" in error(r)["detail"]
    assert snapshot(attacker) == mine and host_state(server) == host
    # Nor by upgrading a cluster of its own onto it.
    own = attacker.cluster(attacker.template()["uuid"])[0]
    attacker.wait_cluster(own, {"CREATE_COMPLETE"})
    mine = snapshot(attacker)
    r = attacker.post(f"/v1/clusters/{own}/actions/upgrade", json={"cluster_template": template["uuid"]})
    assert r.status_code == 403 and "[infra] local_projects" in error(r)["detail"]
    assert snapshot(attacker) == mine and host_state(server) == host
    assert operator.get(f"/v1/clustertemplates/{template['uuid']}").json() == template
    assert operator.delete(f"/v1/clustertemplates/{template['uuid']}").status_code == 204


def test_a_listed_project_may_make_local_templates(server):
    """The control: the operator's own project (listed by default) is not refused."""
    member = Api(server, project="default", user="u-dev")
    r = member.post("/v1/clustertemplates", json=local_template_body(f"own-{uuid.uuid4().hex[:6]}"))
    assert r.status_code == 201, r.text
    assert member.delete(f"/v1/clustertemplates/{r.json()['uuid']}").status_code == 204


# -- 5. limits and quotas --------------------------------------------------------------------------

def test_oversized_bodies_get_413_unread(attacker):
    before = snapshot(attacker)
    big = b'{"name": "x", "coe": "swarm-mode", "image_id": "test-image", "labels": {"pad": "' + \
        b"a" * 200_000 + b'"}}'
    r = attacker.post("/v1/clustertemplates", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert error(r) == {"request_id": "", "code": "", "status": 413, "title": "Request Entity Too Large",
                        "detail": "Request is too large: the limit is 114688 bytes "
                                  "([api] max_request_body_size).", "links": []}

    def chunked():  # no Content-Length: the limit must hold while reading
        for i in range(0, len(big), 16384):
            yield big[i:i + 16384]
    r = attacker.post("/v1/clustertemplates", content=chunked(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and error(r)["title"] == "Request Entity Too Large"
    assert snapshot(attacker) == before


def test_stack_bodies_have_heats_larger_limit(attacker):
    template = {"heat_template_version": "2021-04-16", "description": "d" * 200_000,
                "resources": {"a": {"type": "OS::Heat::None"}}}
    r = attacker.post("/v1/stacks", json={"stack_name": "big", "template": template})
    assert r.status_code == 202, r.text
    assert attacker.delete(f"/v1/stacks/{r.json()['stack']['id']}").status_code == 204
    template["description"] = "d" * 1_100_000
    r = attacker.post("/v1/stacks", json={"stack_name": "huge", "template": template})
    assert r.status_code == 413
    assert error(r)["detail"] == "Request is too large: the limit is 1048576 bytes ([api] max_json_body_size)."


def test_node_count_is_bounded_per_cluster(attacker):
    t = attacker.template()
    before = snapshot(attacker)
    r = attacker.post("/v1/clusters", json={"cluster_template_id": t["uuid"], "node_count": 100})
    assert r.status_code == 400
    assert error(r)["detail"] == ("A cluster may have at most 100 nodes ([quotas] max_nodes_per_cluster); "
                                  "this request would give it 101.")
    assert snapshot(attacker) == before


def test_node_quota_is_enforced_everywhere_nodes_are_added(server, attacker, admin):
    project = attacker.headers["X-Project-Id"]
    # The default comes from [quotas] max_nodes_per_project.
    assert attacker.get(f"/v1/quotas/{project}/Node").json() == {
        "project_id": project, "resource": "Node", "hard_limit": 200}
    r = admin.post("/v1/quotas", json={"project_id": project, "resource": "Node", "hard_limit": 3})
    assert r.status_code == 201 and r.json()["resource"] == "Node"
    assert attacker.get(f"/v1/quotas/{project}/Node").json()["hard_limit"] == 3
    assert attacker.get(f"/v1/quotas/{project}/Cluster").json()["hard_limit"] == 20  # Magnum's, untouched
    t = attacker.template()
    cluster, _ = attacker.cluster(t["uuid"], node_count=2)  # 1 master + 2 workers: the whole quota
    attacker.wait_cluster(cluster, {"CREATE_COMPLETE"})
    before = snapshot(attacker)
    groups = attacker.get(f"/v1/clusters/{cluster}/nodegroups").json()

    def refused(r, adds: int):
        assert r.status_code == 403, r.text
        assert error(r)["detail"] == (f"Resource limit exceeded: the Node quota of project {project} is 3, "
                                      f"3 nodes exist and this request adds {adds}.")

    refused(attacker.post("/v1/clusters", json={"cluster_template_id": t["uuid"], "node_count": 0}), 1)
    refused(attacker.post(f"/v1/clusters/{cluster}/actions/resize", json={"node_count": 4}), 2)
    refused(attacker.patch(f"/v1/clusters/{cluster}",
                           json=[{"op": "replace", "path": "/node_count", "value": 3}]), 1)
    refused(attacker.post(f"/v1/clusters/{cluster}/nodegroups", json={"name": "more", "node_count": 1}), 1)
    assert snapshot(attacker) == before
    assert attacker.get(f"/v1/clusters/{cluster}/nodegroups").json() == groups
    # Shrinking stays possible under a full quota.
    assert attacker.post(f"/v1/clusters/{cluster}/actions/resize", json={"node_count": 1}).status_code == 202
    r = admin.post("/v1/quotas", json={"project_id": project, "resource": "Volume", "hard_limit": 3})
    assert r.status_code == 400 and error(r)["title"].startswith("Invalid input for field/attribute resource")


# -- 6. smaller leaks ----------------------------------------------------------------------------------

LISTS = ["/v1/clusters", "/v1/clusters/detail", "/v1/clustertemplates", "/v1/clustertemplates/detail",
         "/v1/federations", "/v1/tasks"]


def test_markers_of_other_projects_are_unknown(victim, attacker):
    a, template, cluster = victim
    fed = a.post("/v1/federations", json={"hostcluster_id": cluster["uuid"], "properties": {"dns-zone": "a."}})
    assert fed.status_code == 202
    task = a.get(f"/v1/tasks?resource_uuid={cluster['uuid']}").json()["tasks"][0]["uuid"]
    markers = {"/v1/clusters": cluster["uuid"], "/v1/clusters/detail": cluster["uuid"],
               "/v1/clustertemplates": template["uuid"], "/v1/clustertemplates/detail": template["uuid"],
               "/v1/federations": fed.json()["uuid"], "/v1/tasks": task}
    nobody = str(uuid.uuid4())
    theirs = snapshot(a)
    for path in LISTS:
        # A's marker answers exactly as a uuid nobody has: no existence, no sort order.
        for marker in (markers[path], nobody):
            r = attacker.get(f"{path}?marker={marker}&sort_key=created_at")
            assert r.status_code == 404, (path, r.text)
            assert error(r)["detail"] == f"Marker {marker} could not be found."
    # Nodegroups: a marker from another cluster (even the caller's own) is not one of this list's.
    mine = attacker.cluster(attacker.template()["uuid"])[0]
    attacker.wait_cluster(mine, {"CREATE_COMPLETE"})
    other = attacker.cluster(attacker.template(name="tpl2")["uuid"])[0]
    ng = attacker.get(f"/v1/clusters/{other}/nodegroups").json()["nodegroups"][0]["uuid"]
    r = attacker.get(f"/v1/clusters/{mine}/nodegroups?marker={ng}")
    assert r.status_code == 404 and error(r)["detail"] == f"Marker {ng} could not be found."
    assert snapshot(a) == theirs


def test_quota_markers_are_scoped_and_bounded(server, admin):
    other = Api(server, project=f"pq-{uuid.uuid4().hex[:8]}", roles="admin")
    quota = admin.post("/v1/quotas", json={"project_id": f"pq-{uuid.uuid4().hex[:8]}", "hard_limit": 2}).json()
    # Without all_tenants an admin lists its own project's quotas: another one's id is unknown there.
    r = other.get(f"/v1/quotas?marker={quota['id']}")
    assert r.status_code == 404 and error(r)["detail"] == f"Marker {quota['id']} could not be found."
    assert other.get(f"/v1/quotas?all_tenants=True&marker={quota['id']}").status_code == 200
    for marker in ("99999999999999999999999", "2147483648"):
        r = other.get(f"/v1/quotas?all_tenants=True&marker={marker}")
        assert r.status_code == 404 and error(r)["detail"] == f"Marker {marker} could not be found."
    r = other.get("/v1/quotas?all_tenants=True&marker=²")
    assert r.status_code == 400


@pytest.mark.parametrize("ident", ["99999999999999999999", "2147483648", "²", "٣", "0"])
def test_odd_nodegroup_ids_are_not_found(victim, ident):
    a, _, cluster = victim
    r = a.get(f"/v1/clusters/{cluster['uuid']}/nodegroups/{ident}")
    assert r.status_code == 404 and error(r)["detail"] == f"Nodegroup {ident} could not be found."
    r = a.post(f"/v1/clusters/{cluster['uuid']}/actions/resize", json={"node_count": 2, "nodegroup": ident})
    assert r.status_code == 404


def test_odd_microversion_digits_are_406(attacker):
    r = attacker.get("/v1/clusters", headers={"OpenStack-API-Version": "container-infra ².1".encode()})
    assert r.status_code == 406 and error(r)["detail"] == "Invalid value for OpenStack-API-Version header"


def test_bad_min_node_count_label_is_400(attacker):
    t = attacker.template()
    before = snapshot(attacker)
    for value in ("many", "-1", "99999999999999999999"):
        r = attacker.post("/v1/clusters", json={"cluster_template_id": t["uuid"], "labels": {"min_node_count": value}})
        assert r.status_code == 400, r.text
        assert "min_node_count must be a non-negative integer" in error(r)["detail"]
    assert snapshot(attacker) == before


def test_federation_members_must_be_visible(victim, attacker):
    a, _, theirs = victim
    own = attacker.cluster(attacker.template()["uuid"])[0]
    before_a = snapshot(a)
    r = attacker.post("/v1/federations", json={"hostcluster_id": own, "member_ids": [theirs["uuid"]],
                                               "properties": {"dns-zone": "b."}})
    assert r.status_code == 400 and error(r)["detail"] == f"Cluster {theirs['uuid']} could not be found."
    assert attacker.get("/v1/federations").json()["federations"] == []
    fed = attacker.post("/v1/federations", json={"hostcluster_id": own, "member_ids": [own],
                                                 "properties": {"dns-zone": "b."}}).json()["uuid"]
    before = attacker.get(f"/v1/federations/{fed}").json()
    for ops in ([{"op": "add", "path": "/member_ids", "value": theirs["uuid"]}],
                [{"op": "replace", "path": "/member_ids", "value": [own, theirs["name"]]}]):
        r = attacker.patch(f"/v1/federations/{fed}", json=ops)
        assert r.status_code == 400 and "could not be found" in error(r)["detail"], r.text
    r = attacker.patch(f"/v1/federations/{fed}", json=[{"op": "replace", "path": "/member_ids", "value": [{}]}])
    assert r.status_code == 400
    assert attacker.get(f"/v1/federations/{fed}").json() == before
    assert snapshot(a) == before_a


def test_host_paths_are_hidden_from_tenants(attacker, admin):
    # The test driver appends to the file named by this label: the failure names a host path.
    path = f"/proc/jeroboam-absent-{uuid.uuid4().hex[:6]}/marker"
    t = attacker.template(labels={"test_marker": path})
    cluster, task = attacker.cluster(t["uuid"])
    failed = attacker.wait_cluster(cluster, {"CREATE_FAILED", "CREATE_COMPLETE"})
    assert failed["status"] == "CREATE_FAILED"
    task_body = attacker.wait_task(task)
    listed = attacker.get("/v1/clusters/detail").json()["clusters"][0]
    seen = [failed["status_reason"], failed["faults"], listed["status_reason"],
            attacker.get(f"/v1/clusters/{cluster}/nodegroups/default-worker").json()["status_reason"],
            task_body["error"], task_body["error_detail"], task_body["steps"], task_body["events"],
            attacker.get(f"/v1/tasks?resource_uuid={cluster}").json()["tasks"][0]["error"]]
    assert "jeroboam-absent" not in str(seen) and "/proc" not in str(seen)
    assert failed["status_reason"] == "provision nodes: [Errno 2] No such file or directory: '<path>'"
    assert set(failed["faults"].values()) == {failed["status_reason"]}
    assert task_body["error_detail"] == {"step": "provision nodes", "type": "FileNotFoundError"}
    # The operator sees the detail.
    assert path in admin.get(f"/v1/clusters/{cluster}").json()["status_reason"]
    assert path in str(admin.get(f"/v1/tasks/{task}").json())


# -- 7. noauth stays a developer mode ---------------------------------------------------------------

def test_bodies_must_be_json(victim, attacker):
    a = victim[0]
    before, theirs = snapshot(attacker), snapshot(a)
    body = '{"name": "csrf", "coe": "swarm-mode", "image_id": "test-image"}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "text/plain; charset=utf-8",
                         "application/octet-stream", None):
        headers = {"Content-Type": content_type} if content_type else {}
        r = attacker.post("/v1/clustertemplates", content=body, headers=headers)
        assert r.status_code == 415, (content_type, r.text)
        assert error(r)["detail"].endswith("Request bodies must be application/json.")
        assert error(r)["code"] == "client"
    # A web page's form post without a body, to an endpoint that reads none, is refused too.
    task = attacker.get("/v1/tasks").json()["tasks"]
    r = httpx.post(attacker.url + f"/v1/tasks/{uuid.uuid4()}/cancel", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert snapshot(attacker) == before and attacker.get("/v1/tasks").json()["tasks"] == task
    assert snapshot(a) == theirs
    # JSON Patch may say so.
    own = attacker.template(name="patched")
    r = attacker.patch(f"/v1/clustertemplates/{own['uuid']}", content='[{"op": "replace", "path": "/name", '
                       '"value": "renamed"}]', headers={"Content-Type": "application/json-patch+json"})
    assert r.status_code == 200 and r.json()["name"] == "renamed"


def test_noauth_answers_loopback_names_only(server, attacker):
    """DNS rebinding: a page on evil.example, its name now resolving to 127.0.0.1, is same-origin
    with the API and may send JSON; its requests still carry its own name in Host."""
    before = snapshot(attacker)
    for headers in ({}, dict(attacker.headers)):
        r = httpx.post(server + "/v1/clustertemplates", headers={**headers, "Host": "evil.example:9511"},
                       json={"name": "rebound", "coe": "swarm-mode", "image_id": "test-image"})
        assert r.status_code == 403
        assert error(r)["detail"] == ("noauth serves requests addressed to loopback only, not to "
                                      "evil.example:9511: set [auth] noauth_allow_remote = true to serve "
                                      "other names.")
    assert snapshot(attacker) == before
    assert attacker.get("/v1/clustertemplates", headers={"Host": "localhost"}).status_code == 200


def test_ca_rotation_without_a_body_still_works(attacker):
    cluster = attacker.cluster(attacker.template()["uuid"])[0]
    attacker.wait_cluster(cluster, {"CREATE_COMPLETE"})
    # What python-magnumclient sends: octet-stream, empty body.
    r = attacker.patch(f"/v1/certificates/{cluster}", headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    attacker.wait_cluster(cluster, {"UPDATE_COMPLETE"})


@pytest.mark.parametrize("command, bind", [("serve", "0.0.0.0"), ("api", "[::]")])
def test_noauth_refuses_to_serve_beyond_loopback(tmp_path, command, bind):
    port = free_port()
    proc = Process([command, "--bind", f"{bind}:{port}"], base_env(tmp_path), tmp_path / "out.log")
    try:
        assert proc.proc.wait(30) == 1
    finally:
        proc.stop()
    lines = proc.output().strip().splitlines()
    assert lines == [f"jeroboam: refusing to serve noauth on {bind}:{port}: without authentication anyone who "
                     "can reach the API acts as any project; bind to 127.0.0.1, use --auth keystone, or set "
                     "[auth] noauth_allow_remote = true"]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=1)

"""The Stacks API played by an attacker: a member of project B, against project A and against
the host. Each attack must be refused with a clear 4xx, store nothing, and leave the host as
it was (network namespaces, links, routes, dockerd processes, compared before and after).

Other engineers' cluster tests may run on this machine at the same time and change the host:
a host comparison that fails for that reason passes when the test is run alone.
"""

import json
import os
import re
import subprocess
import uuid

import pytest

from jeroboam.infra.local.resources import prefix_for
from tests.orchestration.test_stacks_api import wait_stack
from tests.support import Api, Process, base_env, free_port, wait_http

HOT = "2018-08-31"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """`jeroboam serve` of these tests (its data dir known: its provider's names are known)."""
    data = tmp_path_factory.mktemp("isolation")
    port = free_port()
    proc = Process(["serve", "--bind", f"127.0.0.1:{port}"], base_env(data), data / "serve.log")
    try:
        wait_http(f"http://127.0.0.1:{port}", proc)
        yield f"http://127.0.0.1:{port}", prefix_for(str(data / "local"))
    finally:
        proc.stop()


# Names of local-provider objects (netns, bridges, veths); those of another installation's
# prefix are other tests' at work on this machine, which this service's attackers cannot make.
PROVIDER_NAME = re.compile(r"j[a-z0-9]{1,3}[-bv][0-9a-f]{10}")


def host_state(ours: str) -> dict:
    def foreign(name: str) -> bool:
        return bool(PROVIDER_NAME.fullmatch(name)) and not name.startswith(ours)

    def out(*argv) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    def cmdline(pid: str) -> list[str]:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().decode(errors="replace").split("\0")
        except OSError:
            return []
    dockerds = [pid for pid in os.listdir("/proc") if pid.isdigit() and os.path.basename(
        (cmdline(pid) or [""])[0]) == "dockerd"]
    return {
        "netns": sorted(n for line in out("ip", "netns", "list").splitlines() if not foreign(n := line.split()[0])),
        "links": sorted(n for link in json.loads(out("ip", "-j", "link", "show") or "[]")
                        if not foreign(n := link["ifname"])),
        "routes": sorted(line for line in out("ip", "route", "show", "table", "all").splitlines()
                         if not any(foreign(word) for word in line.split())),
        "dockerd": sorted(pid for pid in dockerds if not any(
            foreign(part) for arg in cmdline(pid) for part in arg.split("/"))),
    }


@pytest.fixture
def host(service):
    """Asserts, after the test, that the host is as it was before."""
    before = host_state(service[1])
    yield
    assert host_state(service[1]) == before


@pytest.fixture
def server(service):
    return service[0]


@pytest.fixture
def bob(server):
    return Api(server, project=f"p-b-{uuid.uuid4().hex[:8]}", user="u-bob")


@pytest.fixture
def carol(server):
    return Api(server, project=f"p-a-{uuid.uuid4().hex[:8]}", user="u-carol")


@pytest.fixture
def clusters_of_a(carol):
    """Project A's cluster (the test driver: no host objects), with a real stack holding its CA."""
    template = carol.template(name=f"t-{uuid.uuid4().hex[:6]}", labels={"test_stack": "true"})
    cluster, _ = carol.cluster(template["uuid"], name="prod")
    done = carol.wait_cluster(cluster, {"CREATE_COMPLETE", "CREATE_FAILED"})
    assert done["status"] == "CREATE_COMPLETE", done
    return done


def hot(resources: dict, **extra) -> dict:
    return {"heat_template_version": HOT, "resources": resources, **extra}


def container(**props) -> dict:
    return {"type": "DockerInc::Docker::Container", "properties": {"image": "busybox", **props}}


def refused(api: Api, template, status: int, *phrases: str, name: str = "attack", **extra) -> str:
    """POST the stack; assert the refusal, its message, and that no stack was stored."""
    before = api.get("/v1/stacks").json()["stacks"]
    r = api.post("/v1/stacks", json={"stack_name": name, "template": template, **extra})
    assert r.status_code == status, r.text
    message = r.json()["errors"][0]["detail"]
    for phrase in phrases:
        assert phrase in message, message
    assert api.get(f"/v1/stacks/{name}").status_code == 404
    assert api.get("/v1/stacks").json()["stacks"] == before
    return message


# -- resource types by policy ------------------------------------------------------------------

NODE = {"type": "Jeroboam::Local::Node", "properties": {
    "node_id": "n", "network": "net", "ca_cert": "x", "ca_key": "y"}}
NETWORK = {"type": "Jeroboam::Local::Network", "properties": {"network_id": "net"}}


@pytest.mark.parametrize("resources", [
    pytest.param({"net": NETWORK}, id="network"),
    pytest.param({"net": NETWORK, "node": NODE}, id="node"),
    pytest.param({"g": {"type": "OS::Heat::ResourceGroup", "properties": {"count": 1, "resource_def": NODE}}},
                 id="group-member"),
    pytest.param({"g": {"type": "OS::Heat::ResourceGroup", "properties": {
        "count": 1, "resource_def": {"type": "OS::Heat::ResourceGroup", "properties": {"resource_def": NETWORK}}}}},
        id="nested-group-member"),
])
def test_provider_resource_types_are_refused_to_members(bob, host, resources):
    refused(bob, hot(resources), 403, "is not available to this project", "policy resource_types:Jeroboam::Local::")


def test_a_group_member_type_from_a_parameter_is_checked_too(bob, host):
    template = hot({"g": {"type": "OS::Heat::ResourceGroup", "properties": {
        "resource_def": {"type": {"get_param": "t"}, "properties": NETWORK["properties"]}}}},
        parameters={"t": {"type": "string", "default": "OS::Heat::None"}})
    refused(bob, template, 403, "resource_types:Jeroboam::Local::Network",
            parameters={"t": "Jeroboam::Local::Network"})
    template["resources"]["g"]["properties"]["resource_def"]["type"] = {"get_attr": ["other", "value"]}
    template["resources"]["other"] = {"type": "OS::Heat::RandomString"}
    refused(bob, template, 400, "resource_def.type: cannot depend on another resource's attributes")


def test_a_template_cannot_choose_a_host_subnet_even_as_admin(admin, host):
    # addresses come from the provider's pools; no property picks a prefix or a route
    net = {"type": "Jeroboam::Local::Network", "properties": {"network_id": "n", "subnet": "169.254.169.0/24"}}
    r = admin.post("/v1/stacks", json={"stack_name": f"s{uuid.uuid4().hex[:6]}", "template": hot({"net": net})})
    assert r.status_code == 400 and "resources.net.properties.subnet: unknown property" in r.text, r.text


def test_resource_types_lists_what_the_caller_may_use(bob, admin):
    r = bob.get("/v1/stacks/resource_types")
    assert r.status_code == 200, r.text
    mine = r.json()["resource_types"]
    assert {"OS::Heat::ResourceGroup", "OS::Heat::None", "DockerInc::Docker::Container"} <= set(mine)
    assert not [t for t in mine if t.startswith("Jeroboam::Local::")]
    everything = admin.get("/v1/stacks/resource_types").json()["resource_types"]
    assert {"Jeroboam::Local::Node", "Jeroboam::Local::Network"} <= set(everything)


# -- DockerInc::Docker::Container --------------------------------------------------------------

def local_address() -> str:
    """An address of this host that is not loopback (a bridge's, the uplink's)."""
    for iface in json.loads(subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True,
                                           text=True).stdout):
        for addr in iface.get("addr_info", []):
            if not addr["local"].startswith("127."):
                return addr["local"]
    pytest.skip("the host has no non-loopback IPv4 address")


@pytest.mark.parametrize("endpoint, phrase", [
    ("unix:///var/run/docker.sock", "unix sockets and other transports are not allowed"),
    ("unix:///var/lib/jeroboam/local/nodes/x/docker.sock", "unix sockets and other transports are not allowed"),
    ("ssh://root@127.0.0.1", "unix sockets and other transports are not allowed"),
    ("tcp://127.0.0.1:2375", "an address of the service's own host"),
    ("tcp://localhost:2376", "an address of the service's own host"),
    ("tcp://[::1]:2375", "an address of the service's own host"),
    ("tcp://169.254.169.254:80", "an address of the service's own host"),
    ("tcp://0.0.0.0:2375", "an address of the service's own host"),
    ("tcp://[::ffff:169.254.169.254]:80", "an address of the service's own host"),
    ("tcp://2130706433:2375", "an address of the service's own host"),  # 127.0.0.1 in decimal
    ("tcp://10.255.255.1:2376", "not an endpoint the operator allows"),
])
def test_container_endpoints_outside_the_allow_list_are_refused(bob, host, endpoint, phrase):
    refused(bob, hot({"c": container(docker_endpoint=endpoint)}), 400, "resources.c.properties.docker_endpoint",
            phrase)


def test_the_service_host_own_addresses_are_refused(bob, host, server):
    port = server.rsplit(":", 1)[1]
    refused(bob, hot({"c": container(docker_endpoint=f"tcp://{local_address()}:{port}")}), 400,
            "an address of the service's own host")


def test_an_endpoint_from_a_parameter_is_checked_as_well(bob, host):
    template = hot({"c": container(docker_endpoint={"get_param": "e"})},
                   parameters={"e": {"type": "string", "default": "unix:///var/run/docker.sock"}})
    refused(bob, template, 400, "unix sockets")
    # in a group, whatever the index
    group = hot({"g": {"type": "OS::Heat::ResourceGroup", "properties": {
        "count": 2, "resource_def": container(docker_endpoint="tcp://127.0.0.%index%:2375")}}})
    refused(bob, group, 400, "resources.g.properties.resource_def.properties.docker_endpoint")


@pytest.mark.parametrize("props", [
    {"privileged": True}, {"volumes": {"/": {"bind": "/host", "mode": "rw"}}},
    {"devices": [{"path_on_host": "/dev/sda"}]}, {"network_mode": "host"}, {"cap_add": ["SYS_ADMIN"]},
    {"volumes_from": ["other-tenant"]}, {"links": {"other-tenant": "db"}},
])
def test_host_reaching_properties_are_refused_on_endpoints(bob, host, props):
    # even on an allowed endpoint: checked whatever the endpoint
    (key,) = props
    refused(bob, hot({"c": container(docker_endpoint="tcp://10.255.255.1:2376", **props)}), 400,
            f"resources.c.properties.{key}: is allowed only on a cluster of this project")


def test_a_container_needs_a_cluster_or_an_endpoint(bob, host):
    refused(bob, hot({"c": container()}), 400, "give either cluster (of this project) or docker_endpoint")


def test_another_projects_cluster_is_refused(bob, host, clusters_of_a):
    for ident in (clusters_of_a["uuid"], clusters_of_a["name"]):
        refused(bob, hot({"c": container(cluster=ident)}), 400, "resources.c.properties.cluster",
                f"cluster {ident} could not be found in this project")


def test_a_cluster_brings_its_own_credentials(carol, host, clusters_of_a):
    refused(carol, hot({"c": container(cluster=clusters_of_a["uuid"], tls_client_key="stolen")}), 400,
            "tls_client_key: the service supplies the TLS credentials of a cluster")


# -- a cluster driver's stack ------------------------------------------------------------------

def test_a_cluster_stack_is_read_only_and_keeps_its_keys(carol, bob, host, clusters_of_a):
    stack_id = clusters_of_a["cluster_id"]  # stack_id before microversion 1.13
    r = carol.get(f"/v1/stacks/{stack_id}")
    assert r.status_code == 200, r.text
    shown = r.text + carol.get(f"/v1/stacks/{stack_id}/outputs").text + \
        carol.get(f"/v1/stacks/{stack_id}/resources/nodes").text + carol.get(f"/v1/stacks/{stack_id}/events").text
    assert "PRIVATE KEY" not in shown and r.json()["stack"]["parameters"]["ca_key"] == "******"

    for method, body in (("PATCH", {"parameters": {"ca_key": "mine"}}), ("PUT", {"template": hot({})}),
                         ("DELETE", None)):
        r = carol.request(method, f"/v1/stacks/{stack_id}", json=body)
        assert r.status_code == 403, r.text
        assert f"belongs to cluster {clusters_of_a['uuid']}" in r.text and "_cluster_stack" in r.text
    assert carol.get(f"/v1/stacks/{stack_id}").json()["stack"]["stack_status"] == "CREATE_COMPLETE"
    # and project B does not even see it
    for method in ("GET", "PATCH", "DELETE"):
        assert bob.request(method, f"/v1/stacks/{stack_id}", json={} if method == "PATCH" else None
                           ).status_code == 404


# -- limits -------------------------------------------------------------------------------------

def test_yaml_aliases_are_refused(bob, host):
    laughs = ["heat_template_version: 2018-08-31", "parameters:", "  p:", "    type: json",
              "    default: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    laughs += [f"    x{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
               for i in range(1, 10)]
    refused(bob, "\n".join(laughs), 400, "YAML aliases (*name) are not supported")


def test_resource_count_and_depth_are_bounded(bob, host):
    group = {"type": "OS::Heat::ResourceGroup", "properties": {"count": 1001, "resource_def": {
        "type": "OS::Heat::None"}}}
    refused(bob, hot({"g": group}), 400, "a stack may have at most 1000")
    nested = {"type": "OS::Heat::None"}
    for _ in range(6):
        nested = {"type": "OS::Heat::ResourceGroup", "properties": {"count": 1, "resource_def": nested}}
    refused(bob, hot({"g": nested}), 400, "nested more than 5 levels deep")


def test_resource_lists_are_paginated(bob):
    r = bob.post("/v1/stacks", json={"stack_name": "paged", "template": hot(
        {name: {"type": "OS::Heat::None"} for name in "abcde"})})
    assert r.status_code == 202, r.text
    stack_id = r.json()["stack"]["id"]
    assert wait_stack(bob, stack_id, {"CREATE_COMPLETE", "CREATE_FAILED"})["stack_status"] == "CREATE_COMPLETE"
    seen, url = [], f"/v1/stacks/{stack_id}/resources?limit=2"
    while url:
        body = bob.get(url).json()
        assert len(body["resources"]) <= 2
        seen += [res["resource_name"] for res in body["resources"]]
        url = body.get("next", "").replace(bob.url, "")
    assert seen == list("abcde")
    assert bob.get(f"/v1/stacks/{stack_id}/resources?marker=zz").status_code == 404
    assert bob.delete(f"/v1/stacks/{stack_id}").status_code == 204


def test_an_update_is_checked_as_a_create_is(bob, host):
    r = bob.post("/v1/stacks", json={"stack_name": "benign", "template": hot({"a": {"type": "OS::Heat::None"}})})
    assert r.status_code == 202, r.text
    stack_id = r.json()["stack"]["id"]
    assert wait_stack(bob, stack_id, {"CREATE_COMPLETE", "CREATE_FAILED"})["stack_status"] == "CREATE_COMPLETE"
    for method in ("PATCH", "PUT"):
        r = bob.request(method, f"/v1/stacks/{stack_id}", json={"template": hot({"net": NETWORK})})
        assert r.status_code == 403 and "resource_types:Jeroboam::Local::Network" in r.text, r.text
        r = bob.request(method, f"/v1/stacks/{stack_id}", json={"template": hot(
            {"c": container(docker_endpoint="unix:///var/run/docker.sock")})})
        assert r.status_code == 400 and "unix sockets" in r.text, r.text
    stack = bob.get(f"/v1/stacks/{stack_id}").json()["stack"]
    assert stack["stack_status"] == "CREATE_COMPLETE"
    assert bob.get(f"/v1/stacks/{stack_id}/template").json()["resources"] == {"a": {"type": "OS::Heat::None"}}
    assert bob.delete(f"/v1/stacks/{stack_id}").status_code == 204

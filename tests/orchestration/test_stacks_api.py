"""The stacks API end to end: a real `jeroboam serve` (SQLite), its worker running the engine."""

import time

import pytest

from tests.support import Api, Process, base_env, split_service

E1_YAML = """
heat_template_version: 2018-08-31
description: E1 from the spec
parameters:
  n: {type: number, default: 2, constraints: [{range: {min: 1}}]}
  secret: {type: string, default: s3cr3t, hidden: true}
resources:
  net:  {type: OS::Heat::None}
  key:  {type: OS::Heat::RandomString, properties: {length: 8}}
  srv:
    type: OS::Heat::TestResource
    depends_on: net
    properties:
      value: {str_replace: {template: "k=$K", params: {$K: {get_resource: key}}}}
  tail: {type: OS::Heat::None, properties: {x: {get_attr: [srv, output]}}}
outputs:
  v: {value: {get_attr: [srv, output]}, description: the value}
"""


def wait_stack(api: Api, ident: str, statuses, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"/v1/stacks/{ident}")
        if r.status_code == 404 and "GONE" in statuses:
            return {"stack_status": "GONE"}
        assert r.status_code == 200, r.text
        stack = r.json()["stack"]
        if stack["stack_status"] in statuses:
            return stack
        if time.monotonic() > deadline:
            raise TimeoutError(f"stack {ident} not in {statuses}: {stack}")
        time.sleep(0.05)


def create(api: Api, name: str, template, **extra):
    r = api.post("/v1/stacks", json={"stack_name": name, "template": template, **extra})
    assert r.status_code == 202, r.text
    return r.json()["stack"]["id"], r.headers["Location"].rsplit("/", 1)[1]


def test_create_show_resources_events_and_delete(alice):
    stack_id, task = create(alice, "e1", E1_YAML)
    stack = wait_stack(alice, stack_id, {"CREATE_COMPLETE", "CREATE_FAILED"})
    assert stack["stack_status"] == "CREATE_COMPLETE", stack
    assert stack["stack_status_reason"] == "Stack CREATE completed successfully"
    assert stack["description"] == "E1 from the spec"
    assert stack["parameters"]["n"] == 2 and stack["parameters"]["secret"] == "******"
    assert stack["parameters"]["OS::stack_id"] == stack_id
    (output,) = stack["outputs"]
    assert output["output_key"] == "v" and output["description"] == "the value"
    assert output["output_value"].startswith("k=") and len(output["output_value"]) == 10
    assert alice.wait_task(task)["state"] == "SUCCEEDED"
    assert alice.get("/v1/stacks/e1").json()["stack"]["id"] == stack_id  # by name too

    resources = {r["resource_name"]: r for r in alice.get(f"/v1/stacks/{stack_id}/resources").json()["resources"]}
    assert set(resources) == {"net", "key", "srv", "tail"}
    assert all(r["resource_status"] == "CREATE_COMPLETE" and r["physical_resource_id"] for r in resources.values())
    assert sorted(resources["srv"]["required_by"]) == ["tail"]
    srv = alice.get(f"/v1/stacks/{stack_id}/resources/srv").json()["resource"]
    assert srv["attributes"] == {"output": output["output_value"]}

    events = alice.get(f"/v1/stacks/{stack_id}/events").json()["events"]
    assert len(events) == 2 + 2 * 4
    assert events[0]["resource_name"] == "e1" and events[0]["resource_status"] == "CREATE_IN_PROGRESS"
    order = [(e["resource_name"], e["resource_status"]) for e in events]
    assert order.index(("srv", "CREATE_COMPLETE")) < order.index(("tail", "CREATE_IN_PROGRESS"))
    page = alice.get(f"/v1/stacks/{stack_id}/events?limit=3&resource_status=COMPLETE&sort_keys=event_time").json()
    assert len(page["events"]) == 3 and "next" in page
    assert all(e["resource_status"].endswith("_COMPLETE") for e in page["events"])
    srv_events = alice.get(f"/v1/stacks/{stack_id}/events?resource_name=srv").json()["events"]
    assert [e["resource_status"] for e in srv_events] == ["CREATE_IN_PROGRESS", "CREATE_COMPLETE"]

    r = alice.delete(f"/v1/stacks/{stack_id}")
    assert r.status_code == 204
    wait_stack(alice, stack_id, {"GONE"})
    assert alice.get("/v1/stacks?name=e1").json()["stacks"] == []
    # The name is free again.
    create(alice, "e1", E1_YAML)


def test_template_errors_are_400_naming_the_place(alice):
    bad = {"heat_template_version": "2018-08-31",
           "resources": {"web": {"type": "DockerInc::Docker::Container", "properties": {"imagee": "x"}}}}
    r = alice.post("/v1/stacks", json={"stack_name": "bad", "template": bad})
    assert r.status_code == 400
    assert "resources.web.properties.image" in r.json()["errors"][0]["detail"]
    cycle = "heat_template_version: 2018-08-31\nresources:\n  a: {type: OS::Heat::None, depends_on: b}\n" \
            "  b: {type: OS::Heat::None, depends_on: a}\n"
    r = alice.post("/v1/stacks", json={"stack_name": "cyc", "template": cycle})
    assert r.status_code == 400 and "circular dependency between resources: a, b" in r.text
    r = alice.post("/v1/stacks", json={"stack_name": "p", "template": E1_YAML, "parameters": {"n": 0}})
    assert r.status_code == 400 and "parameters.n" in r.text
    r = alice.post("/v1/stacks", json={"stack_name": "1bad", "template": E1_YAML})
    assert r.status_code == 400  # Heat's stack name rule
    r = alice.post("/v1/stacks", json={"stack_name": "x", "template": E1_YAML, "colour": "red"})
    assert r.status_code == 400
    assert alice.get("/v1/stacks").json()["stacks"] == []  # nothing was stored


def test_update_patch_and_failure_with_rollback(alice):
    template = {"heat_template_version": "2021-04-16",
                "parameters": {"v": {"type": "string", "default": "one"}},
                "resources": {"a": {"type": "OS::Heat::TestResource", "properties": {"value": {"get_param": "v"}}}},
                "outputs": {"v": {"value": {"get_attr": ["a", "output"]}}}}
    stack_id, _ = create(alice, "upd", template, disable_rollback=False)
    wait_stack(alice, stack_id, {"CREATE_COMPLETE"})
    before = alice.get(f"/v1/stacks/{stack_id}/resources/a").json()["resource"]["physical_resource_id"]

    r = alice.patch(f"/v1/stacks/{stack_id}", json={"parameters": {"v": "two"}})
    assert r.status_code == 202, r.text
    stack = wait_stack(alice, stack_id, {"UPDATE_COMPLETE", "UPDATE_FAILED"})
    assert stack["outputs"][0]["output_value"] == "two"
    assert alice.get(f"/v1/stacks/{stack_id}/resources/a").json()["resource"]["physical_resource_id"] == before

    failing = {**template, "resources": {**template["resources"], "bad": {
        "type": "OS::Heat::TestResource", "properties": {"fail": True}}}}
    r = alice.patch(f"/v1/stacks/{stack_id}", json={"template": failing})
    task = r.headers["Location"].rsplit("/", 1)[1]
    stack = wait_stack(alice, stack_id, {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED"})
    assert stack["stack_status"] == "ROLLBACK_COMPLETE"
    finished = alice.wait_task(task)
    assert finished["state"] == "FAILED" and "ROLLBACK_COMPLETE" in finished["error"]
    names = [r["resource_name"] for r in alice.get(f"/v1/stacks/{stack_id}/resources").json()["resources"]]
    assert names == ["a"]
    assert alice.get(f"/v1/stacks/{stack_id}/template").json() == template


def test_projects_are_isolated_and_names_unique(alice, server):
    stack_id, _ = create(alice, "mine", E1_YAML)
    r = alice.post("/v1/stacks", json={"stack_name": "mine", "template": E1_YAML})
    assert r.status_code == 409
    bob = Api(server, project="p-bob", user="u-bob")
    assert bob.get(f"/v1/stacks/{stack_id}").status_code == 404
    assert bob.delete(f"/v1/stacks/{stack_id}").status_code == 404
    assert all(s["id"] != stack_id for s in bob.get("/v1/stacks").json()["stacks"])
    create(bob, "mine", E1_YAML)  # another project may use the name
    reader = Api(server, project=alice.http.headers["X-Project-Id"], roles="reader")
    assert reader.get(f"/v1/stacks/{stack_id}").status_code == 200
    assert reader.delete(f"/v1/stacks/{stack_id}").status_code == 403


def test_delete_of_a_stack_being_created_cancels_then_deletes(alice):
    slow = {"heat_template_version": "2021-04-16",
            "resources": {f"w{i}": {"type": "OS::Heat::TestResource", "properties": {"action_wait_secs": {"create": 60}}}
                          for i in range(3)}}
    stack_id, task = create(alice, "slow", slow)
    alice.wait_task(task, states=("RUNNING",))
    assert alice.delete(f"/v1/stacks/{stack_id}").status_code == 204
    wait_stack(alice, stack_id, {"GONE"}, timeout=20)
    cancelled = alice.wait_task(task)
    assert (cancelled["state"], cancelled["error"]) == ("CANCELLED", "stack delete requested by u-alice")
    # the step that was running when the delete came ended with the reason, not RUNNING
    assert [(s["state"], s["error"]) for s in cancelled["steps"]] == [
        ("CANCELLED", "stack delete requested by u-alice")]


def test_cancelling_the_task_stops_the_stack_action(alice):
    slow = {"heat_template_version": "2021-04-16", "resources": {
        "w": {"type": "OS::Heat::TestResource", "properties": {"action_wait_secs": {"create": 60}}}}}
    stack_id, task = create(alice, "cancelme", slow, disable_rollback=False)
    alice.wait_task(task, states=("RUNNING",))
    assert alice.post(f"/v1/tasks/{task}/cancel").status_code == 202
    stack = wait_stack(alice, stack_id, {"CREATE_FAILED", "ROLLBACK_COMPLETE"}, timeout=10)
    assert stack["stack_status"] == "CREATE_FAILED" and "cancelled" in stack["stack_status_reason"]
    cancelled = alice.wait_task(task)
    assert cancelled["state"] == "CANCELLED"
    assert [(s["state"], s["error"]) for s in cancelled["steps"]] == [("CANCELLED", "cancel requested by u-alice")]


def test_openapi_documents_the_stacks_api(alice):
    paths = alice.get("/v1/openapi.json").json()["paths"]
    assert {"post", "get"} <= set(paths["/v1/stacks"])
    assert paths["/v1/stacks"]["post"]["requestBody"]["content"]["application/json"]["schema"]["required"] == \
        ["stack_name", "template"]


# ------------------------------------------------- a worker killed mid-create

@pytest.fixture
def api_and_workers(tmp_path):
    env = base_env(tmp_path, JEROBOAM_WORKER_LEASE_SECONDS="2", JEROBOAM_WORKER_THREADS="2")
    with split_service(env, tmp_path, ["w1"]) as (url, procs):
        yield url, procs, env, tmp_path


def test_a_sigkilled_worker_leaves_a_stack_another_finishes(api_and_workers):
    url, procs, env, data = api_and_workers
    api = Api(url)
    template = {"heat_template_version": "2021-04-16", "resources": {
        **{f"w{i}": {"type": "OS::Heat::TestResource", "properties": {"wait_secs": 2}} for i in range(10)},
        "after": {"type": "OS::Heat::RandomString", "depends_on": ["w0", "w9"]}}}
    stack_id, task = create(api, "crash", template)
    deadline = time.monotonic() + 20
    while True:  # until every waiting resource has recorded its physical id
        resources = api.get(f"/v1/stacks/{stack_id}/resources").json()["resources"]
        waiting = {r["resource_name"]: r["physical_resource_id"] for r in resources
                   if r["resource_status"] == "CREATE_IN_PROGRESS" and r["physical_resource_id"]}
        if len(waiting) == 10:
            break
        assert time.monotonic() < deadline, resources
        time.sleep(0.05)
    procs["w1"].kill()
    procs["w2"] = Process(["worker", "--name", "w2"], env, data / "w2.log")

    stack = wait_stack(api, stack_id, {"CREATE_COMPLETE", "CREATE_FAILED"}, timeout=30)
    assert stack["stack_status"] == "CREATE_COMPLETE", stack
    finished = api.wait_task(task)
    assert (finished["state"], finished["worker"], finished["attempts"]) == ("SUCCEEDED", "w2", 2)
    resources = {r["resource_name"]: r for r in api.get(f"/v1/stacks/{stack_id}/resources").json()["resources"]}
    assert len(resources) == 11
    assert all(resources[name]["physical_resource_id"] == pid for name, pid in waiting.items())
    events = api.get(f"/v1/stacks/{stack_id}/events").json()["events"]
    starts = [e["resource_name"] for e in events if e["resource_status"] == "CREATE_IN_PROGRESS"]
    assert sorted(starts) == sorted(["crash", *resources])  # nothing was started twice

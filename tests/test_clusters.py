"""Cluster life cycles through the API, their tasks, and the state machine behind both."""

import pytest

from tests.support import Api


def test_cluster_exists_at_once_and_completes(alice):
    t = alice.template(labels={"test_delay": "0.3"})
    cluster, task = alice.cluster(t["name"], name="c1", node_count=2)
    body = alice.get(f"/v1/clusters/{cluster}").json()
    assert body["status"] == "CREATE_IN_PROGRESS"
    assert (body["node_count"], body["master_count"], body["cluster_template_id"]) == (2, 1, t["uuid"])
    done = alice.wait_cluster(cluster, {"CREATE_COMPLETE", "CREATE_FAILED"})
    assert done["status"] == "CREATE_COMPLETE", done
    assert done["api_address"] == "tcp://192.0.2.10:2376"
    assert done["node_addresses"] == ["192.0.2.100", "192.0.2.101"]
    assert done["cluster_id"] == f"stack-{cluster}"
    task_body = alice.wait_task(task)
    assert task_body["state"] == "SUCCEEDED" and task_body["progress"] == 100
    assert [s["name"] for s in task_body["steps"]] == ["provision nodes", "bootstrap", "report addresses"]
    assert all(s["state"] == "SUCCEEDED" and s["duration_seconds"] >= 0.3 for s in task_body["steps"])
    assert task_body["worker"] and task_body["events"][0]["message"] == "cluster.create accepted"


def test_failed_step_shows_in_status_reason_and_task(alice):
    t = alice.template(labels={"test_fail": "bootstrap"})
    cluster, task = alice.cluster(t["uuid"])
    done = alice.wait_cluster(cluster, {"CREATE_FAILED", "CREATE_COMPLETE"})
    assert done["status"] == "CREATE_FAILED"
    assert done["status_reason"] == "bootstrap: injected failure in bootstrap"
    assert done["faults"] == {"default-master": done["status_reason"], "default-worker": done["status_reason"]}
    task_body = alice.wait_task(task)
    assert task_body["state"] == "FAILED" and task_body["error_detail"]["step"] == "bootstrap"
    assert [s["state"] for s in task_body["steps"]] == ["SUCCEEDED", "FAILED", "PENDING"]


def test_stack_id_before_1_13(alice, server):
    t = alice.template()
    cluster, _ = alice.cluster(t["uuid"])
    old = Api(server, project=alice.http.headers["X-Project-Id"], version="1.12")
    body = old.get(f"/v1/clusters/{cluster}").json()
    assert "stack_id" in body and "cluster_id" not in body
    item = old.get("/v1/clusters").json()["clusters"][0]
    assert "stack_id" in item and "cluster_id" not in item


def test_update_resize_and_delete(alice):
    t = alice.template()
    cluster, _ = alice.cluster(t["uuid"], node_count=1)
    alice.wait_cluster(cluster, {"CREATE_COMPLETE"})
    r = alice.patch(f"/v1/clusters/{cluster}", json=[{"op": "replace", "path": "/node_count", "value": 3}])
    assert r.status_code == 202 and r.json() == {"uuid": cluster}
    assert alice.wait_cluster(cluster, {"UPDATE_COMPLETE"})["node_count"] == 3
    r = alice.post(f"/v1/clusters/{cluster}/actions/resize", json={"node_count": 2, "nodes_to_remove": None})
    assert r.status_code == 202
    done = alice.wait_cluster(cluster, {"UPDATE_COMPLETE", "UPDATE_FAILED"})
    assert (done["status"], done["node_count"]) == ("UPDATE_COMPLETE", 2)
    workers = alice.get(f"/v1/clusters/{cluster}/nodegroups?role=worker").json()["nodegroups"]
    assert workers[0]["status"] == "UPDATE_COMPLETE"
    assert alice.delete(f"/v1/clusters/{cluster}").status_code == 204
    alice.wait_cluster(cluster, {"GONE"})
    assert alice.get(f"/v1/clusters/{cluster}").status_code == 404


def test_patch_only_node_count_and_health(alice):
    t = alice.template()
    cluster, _ = alice.cluster(t["uuid"], name="fixed")
    alice.wait_cluster(cluster, {"CREATE_COMPLETE"})
    r = alice.patch(f"/v1/clusters/{cluster}", json=[{"op": "replace", "path": "/name", "value": "other"}])
    assert r.status_code == 400 and r.json()["errors"][0]["detail"] == "cannot change cluster property(ies) name."
    r = alice.patch(f"/v1/clusters/{cluster}", json=[{"op": "replace", "path": "/api_address", "value": "x"}])
    assert r.json()["errors"][0]["title"] == "'/api_address' is an internal attribute and can not be updated"
    r = alice.patch(f"/v1/clusters/{cluster}", json=[
        {"op": "replace", "path": "/health_status", "value": "UNHEALTHY"},
        {"op": "replace", "path": "/health_status_reason", "value": "{'node-1.Ready': False}"}])
    assert r.status_code == 202
    body = alice.get(f"/v1/clusters/{cluster}").json()
    assert (body["status"], body["health_status"]) == ("CREATE_COMPLETE", "UNHEALTHY")
    assert body["health_status_reason"] == {"node-1.Ready": "False"}


def test_busy_cluster_refuses_update(alice):
    t = alice.template(labels={"test_delay": "0.5"})
    cluster, _ = alice.cluster(t["uuid"])
    r = alice.patch(f"/v1/clusters/{cluster}", json=[{"op": "replace", "path": "/node_count", "value": 2}])
    assert r.status_code == 400
    assert r.json()["errors"][0]["detail"] == 'Updating a cluster when status is "CREATE_IN_PROGRESS" is not supported.'
    assert alice.get(f"/v1/clusters/{cluster}").json()["node_count"] == 1


def test_delete_during_create_cancels_the_create(alice, tmp_path):
    marker = tmp_path / "steps"
    t = alice.template(labels={"test_delay": "0.4", "test_marker": str(marker)})
    cluster, create_task = alice.cluster(t["uuid"])
    alice.wait_task(create_task, states=("RUNNING",))
    assert alice.delete(f"/v1/clusters/{cluster}").status_code == 204
    cancelled = alice.wait_task(create_task)
    assert cancelled["state"] == "CANCELLED"
    assert cancelled["error"] == "cluster delete requested by u-alice"
    # every step ended: none left RUNNING, those never begun cancelled with the reason
    steps = {s["name"]: (s["state"], s["error"]) for s in cancelled["steps"]}
    assert steps["report addresses"] == ("CANCELLED", "cluster delete requested by u-alice")
    assert "RUNNING" not in {state for state, _ in steps.values()}
    alice.wait_cluster(cluster, {"GONE"})
    assert "report addresses" not in marker.read_text()


def test_cancel_a_running_task(alice):
    t = alice.template(labels={"test_delay": "0.4"})
    cluster, task = alice.cluster(t["uuid"])
    r = alice.post(f"/v1/tasks/{task}/cancel")
    assert r.status_code == 202
    cancelled = alice.wait_task(task)
    # before it started, or at its next step
    assert cancelled["state"] == "CANCELLED" and cancelled["error"].startswith("cancel requested by u-alice")
    body = alice.wait_cluster(cluster, {"CREATE_FAILED"})
    assert "cancel requested by u-alice" in body["status_reason"]
    again = alice.post(f"/v1/tasks/{task}/cancel")
    assert again.status_code == 409


def test_delete_task_cannot_be_cancelled(alice):
    t = alice.template(labels={"test_delay": "0.3"})
    cluster, _ = alice.cluster(t["uuid"])
    r = alice.delete(f"/v1/clusters/{cluster}")
    delete_task = r.headers["Location"].rsplit("/", 1)[1]
    assert alice.post(f"/v1/tasks/{delete_task}/cancel").status_code == 400


def test_tasks_listing_filters(alice):
    t = alice.template()
    cluster, task = alice.cluster(t["uuid"])
    alice.wait_task(task)
    tasks = alice.get(f"/v1/tasks?resource_uuid={cluster}").json()["tasks"]
    assert [x["uuid"] for x in tasks] == [task]
    assert alice.get("/v1/tasks?state=RUNNING&action=cluster.create").json()["tasks"] == []
    assert alice.get("/v1/tasks?state=BOGUS").status_code == 400


def test_nodegroups_lifecycle(alice):
    t = alice.template()
    cluster, _ = alice.cluster(t["uuid"], labels={"env": "x"})
    alice.wait_cluster(cluster, {"CREATE_COMPLETE"})
    r = alice.post(f"/v1/clusters/{cluster}/nodegroups/", json={"name": "extra", "node_count": 2,
                                                                "node_labels": {"zone": "a"}})
    assert r.status_code == 202, r.text
    assert r.json()["labels"] == {"env": "x"} and r.json()["status"] == "CREATE_IN_PROGRESS"
    alice.wait_cluster(cluster, {"UPDATE_COMPLETE"})
    extra = alice.get(f"/v1/clusters/{cluster}/nodegroups/extra").json()
    assert (extra["status"], extra["node_addresses"]) == ("CREATE_COMPLETE", ["192.0.2.100", "192.0.2.101"])
    assert alice.post(f"/v1/clusters/{cluster}/nodegroups", json={"name": "extra"}).status_code == 409
    r = alice.patch(f"/v1/clusters/{cluster}/nodegroups/extra",
                    json=[{"op": "replace", "path": "/max_node_count", "value": 5}])
    assert r.status_code == 202 and r.json()["max_node_count"] == 5
    alice.wait_cluster(cluster, {"UPDATE_COMPLETE"})
    r = alice.patch(f"/v1/clusters/{cluster}/nodegroups/extra",
                    json=[{"op": "replace", "path": "/node_count", "value": 5}])
    assert r.json()["errors"][0]["title"] == "'/node_count' is an internal attribute and can not be updated"
    assert alice.delete(f"/v1/clusters/{cluster}/nodegroups/default-worker").status_code == 400
    assert alice.delete(f"/v1/clusters/{cluster}/nodegroups/extra").status_code == 204
    alice.wait_cluster(cluster, {"UPDATE_COMPLETE"})
    names = [g["name"] for g in alice.get(f"/v1/clusters/{cluster}/nodegroups").json()["nodegroups"]]
    assert names == ["default-master", "default-worker"]


def test_template_in_use_rules(alice):
    t = alice.template()
    cluster, _ = alice.cluster(t["uuid"])
    r = alice.delete(f"/v1/clustertemplates/{t['uuid']}")
    assert r.status_code == 400 and "referenced" in r.json()["errors"][0]["detail"]
    r = alice.patch(f"/v1/clustertemplates/{t['uuid']}",
                    json=[{"op": "replace", "path": "/docker_volume_size", "value": 5}])
    assert r.status_code == 400
    r = alice.patch(f"/v1/clustertemplates/{t['uuid']}", json=[{"op": "replace", "path": "/name", "value": "renamed"}])
    assert r.status_code == 200 and r.json()["name"] == "renamed"


def test_template_patch_rules(alice):
    t = alice.template(labels={"a": "1"})
    url = f"/v1/clustertemplates/{t['uuid']}"
    r = alice.patch(url, json=[{"op": "add", "path": "/labels/b", "value": "2"},
                               {"op": "replace", "path": "/master_lb_enabled", "value": "True"}])
    assert r.status_code == 200, r.text
    assert (r.json()["labels"], r.json()["master_lb_enabled"]) == ({"a": "1", "b": "2"}, True)
    r = alice.patch(url, json=[{"op": "replace", "path": "/labels", "value": "{'x': 'y'}"}])
    assert r.json()["labels"] == {"x": "y"}
    r = alice.patch(url, json=[{"op": "add", "path": "/flavor_id", "value": "m1"}])
    assert r.status_code == 200 and r.json()["flavor_id"] == "m1"
    r = alice.patch(url, json=[{"op": "add", "path": "/flavor_id", "value": "m2"}])
    assert r.json()["errors"][0]["detail"] == "The attribute /flavor_id has existed, please use 'replace' operation instead."
    r = alice.patch(url, json=[{"op": "remove", "path": "/coe"}])
    assert r.status_code == 400
    r = alice.patch(url, json=[{"op": "move", "path": "/name", "from": "/tags"}])
    assert r.status_code == 400
    r = alice.patch(url, json={"op": "replace", "path": "/name", "value": "x"})
    assert r.status_code == 400
    r = alice.patch(url, json=[{"op": "replace", "path": "/public", "value": True}])
    assert r.status_code == 403
    assert alice.get(url).json()["name"] == "tpl"


@pytest.mark.parametrize("count,ok", [(2, False), (3, True)])
def test_master_count_must_be_odd(alice, count, ok):
    t = alice.template()
    r = alice.post("/v1/clusters", json={"cluster_template_id": t["uuid"], "master_count": count})
    assert (r.status_code == 202) is ok, r.text

"""One operation per cluster at a time: operations accepted together take turns (the Tasks
API's start and finish times prove it), the cluster's status shows the last one, and a task
outlives its lease without being run twice."""

import contextlib
import sqlite3
import threading
import time

import pytest

from tests.support import Api, Process, base_env, free_port, one_at_a_time, task_of, wait_http


@contextlib.contextmanager
def statuses_of(api: Api, cluster: str):
    """Every status the cluster shows while the block runs (polled in a thread)."""
    seen: list[str] = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            seen.append(api.get(f"/v1/clusters/{cluster}").json()["status"])
            time.sleep(0.02)
    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)


def test_patch_then_resize_at_once_the_resize_decides(alice):
    t = alice.template(labels={"test_delay": "0.3", "test_fail": "resize_cluster"})
    cluster, _ = alice.cluster(t["uuid"], node_count=1)
    alice.wait_cluster(cluster, {"CREATE_COMPLETE"})
    patched = task_of(alice.patch(f"/v1/clusters/{cluster}",
                                  json=[{"op": "replace", "path": "/node_count", "value": 3}]))
    resized = task_of(alice.post(f"/v1/clusters/{cluster}/actions/resize", json={"node_count": 2}))
    with statuses_of(alice, cluster) as statuses:
        tasks = one_at_a_time(alice, [patched, resized])
    assert [t["state"] for t in tasks] == ["SUCCEEDED", "FAILED"]
    # the PATCH's end is not the cluster's: the resize was still to come
    assert "UPDATE_COMPLETE" not in statuses, statuses
    body = alice.get(f"/v1/clusters/{cluster}").json()
    assert body["status"] == "UPDATE_FAILED"
    assert body["status_reason"] == "converge nodes: injected failure in converge nodes"
    # the failed resize gives back what the PATCH had asked for
    assert body["node_count"] == 3


def test_a_queued_operation_cancelled_hands_the_cluster_back(alice):
    t = alice.template(labels={"test_delay_update_cluster": "2"})
    cluster, _ = alice.cluster(t["uuid"], node_count=1)
    alice.wait_cluster(cluster, {"CREATE_COMPLETE"})
    patched = task_of(alice.patch(f"/v1/clusters/{cluster}",
                                  json=[{"op": "replace", "path": "/node_count", "value": 3}]))
    resized = task_of(alice.post(f"/v1/clusters/{cluster}/actions/resize", json={"node_count": 2}))
    alice.wait_task(patched, states=("RUNNING",))
    assert alice.post(f"/v1/tasks/{resized}/cancel").status_code == 202
    assert alice.wait_task(resized)["state"] == "CANCELLED"
    # the PATCH still runs, and its end is now the cluster's
    assert alice.get(f"/v1/clusters/{cluster}").json()["status"] == "UPDATE_IN_PROGRESS"
    assert alice.wait_task(patched)["state"] == "SUCCEEDED"
    body = alice.get(f"/v1/clusters/{cluster}").json()
    assert (body["status"], body["node_count"]) == ("UPDATE_COMPLETE", 3)


@pytest.mark.parametrize("first", ["resize", "nodegroup"])
def test_nodegroup_create_and_resize_take_turns(alice, first):
    t = alice.template(labels={"test_delay_resize_cluster": "0.6", "test_delay_create_nodegroup": "0.6"})
    cluster, _ = alice.cluster(t["uuid"])
    alice.wait_cluster(cluster, {"CREATE_COMPLETE"})

    def resize():
        return task_of(alice.post(f"/v1/clusters/{cluster}/actions/resize", json={"node_count": 2}))

    def nodegroup():
        return task_of(alice.post(f"/v1/clusters/{cluster}/nodegroups", json={"name": "extra"}))

    tasks = [resize(), nodegroup()] if first == "resize" else [nodegroup(), resize()]
    assert alice.get(f"/v1/clusters/{cluster}").json()["status"] == "UPDATE_IN_PROGRESS"
    assert [t["state"] for t in one_at_a_time(alice, tasks)] == ["SUCCEEDED", "SUCCEEDED"]
    # every task of the cluster, its create too, shares its lock key
    listed = alice.get(f"/v1/tasks?lock_key={cluster}").json()["tasks"]
    assert [t["action"] for t in listed] == ["cluster.create", *(alice.wait_task(t)["action"] for t in tasks)]
    body = alice.get(f"/v1/clusters/{cluster}").json()
    assert (body["status"], body["node_count"]) == ("UPDATE_COMPLETE", 3)
    groups = {g["name"]: g for g in alice.get(f"/v1/clusters/{cluster}/nodegroups").json()["nodegroups"]}
    assert (groups["extra"]["status"], groups["default-worker"]["status"]) == ("CREATE_COMPLETE", "UPDATE_COMPLETE")


def test_delete_queues_behind_nodegroup_work_and_cancels_it(alice):
    t = alice.template(labels={"test_delay_create_nodegroup": "1.5"})
    cluster, _ = alice.cluster(t["uuid"])
    alice.wait_cluster(cluster, {"CREATE_COMPLETE"})
    created = task_of(alice.post(f"/v1/clusters/{cluster}/nodegroups", json={"name": "extra"}))
    alice.wait_task(created, states=("RUNNING",))
    deleted = task_of(alice.delete(f"/v1/clusters/{cluster}"))
    tasks = one_at_a_time(alice, [created, deleted])
    # asked to stop (its one step, under way, still ends), then the delete
    assert tasks[0]["cancel_requested"] and tasks[1]["state"] == "SUCCEEDED"
    alice.wait_cluster(cluster, {"GONE"})


def test_sql_never_reaches_a_status_reason(alice):
    t = alice.template(labels={"test_sql_error": "bootstrap"})
    cluster, task = alice.cluster(t["uuid"])
    body = alice.wait_cluster(cluster, {"CREATE_FAILED", "CREATE_COMPLETE"})
    finished = alice.wait_task(task)
    shown = [body["status_reason"], finished["error"], str(finished["error_detail"]),
             *(s["error"] or "" for s in finished["steps"]), *(e["message"] for e in finished["events"])]
    assert body["status"] == "CREATE_FAILED"
    assert body["status_reason"] == "bootstrap: a database error (the worker's log has the details)"
    assert not [text for text in shown if "no_such_table" in text or "SELECT" in text], shown


@pytest.fixture(scope="module")
def short_lease(tmp_path_factory):
    """A service whose leases run out after one second; yields (url, database file)."""
    data = tmp_path_factory.mktemp("lease")
    port = free_port()
    proc = Process(["serve", "--bind", f"127.0.0.1:{port}"],
                   base_env(data, JEROBOAM_WORKER_LEASE_SECONDS="1"), data / "serve.log")
    try:
        wait_http(f"http://127.0.0.1:{port}", proc, timeout=60)
        yield f"http://127.0.0.1:{port}", data / "jeroboam.sqlite"
    finally:
        proc.stop()


def test_delete_longer_than_its_lease_runs_once(short_lease, tmp_path):
    url, database = short_lease
    api = Api(url)
    marker = tmp_path / "steps"
    t = api.template(labels={"test_delay_delete_cluster": "4", "test_marker": str(marker)})
    cluster, _ = api.cluster(t["uuid"])
    api.wait_cluster(cluster, {"CREATE_COMPLETE"})
    deleted = task_of(api.delete(f"/v1/clusters/{cluster}"))
    api.wait_task(deleted, states=("RUNNING",))
    # Another writer holds the database for longer than a lease, twice: the worker's
    # heartbeat waits like everything else, and its own task must not look abandoned to it.
    for _ in range(2):
        with sqlite3.connect(database, timeout=30) as db:
            db.execute("BEGIN IMMEDIATE")
            time.sleep(1.5)
        time.sleep(0.2)
    task = api.wait_task(deleted, timeout=30)
    assert (task["state"], task["attempts"]) == ("SUCCEEDED", 1), task
    assert not [e for e in task["events"] if "taken over" in e["message"]]
    assert marker.read_text().splitlines().count("remove nodes") == 1
    api.wait_cluster(cluster, {"GONE"})

"""The production path: `jeroboam api` and several `jeroboam worker`s sharing a real PostgreSQL."""

import contextlib
import os
import re
import time
import uuid

import httpx
import psycopg
import pytest

from tests.support import Api, Process, base_env, one_at_a_time, split_service, task_of

ADMIN_URL = os.environ.get("JEROBOAM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1/postgres")


@contextlib.contextmanager
def new_database():
    """A database of its own on the test server: its URL."""
    name = f"jeroboam_test_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def database():
    with new_database() as url:
        yield url


@pytest.fixture(scope="module")
def cluster_of_processes(database, tmp_path_factory):
    data = tmp_path_factory.mktemp("pg")
    env = base_env(data, JEROBOAM_SERVER_DATABASE=database, JEROBOAM_WORKER_LEASE_SECONDS="2",
                   JEROBOAM_WORKER_SERVICE_DOWN_SECONDS="2", JEROBOAM_WORKER_THREADS="2")
    with split_service(env, data, ["w1", "w2"], ["--api-workers", "2"]) as (url, procs):
        yield url, procs, env, data


def test_two_workers_share_the_queue(cluster_of_processes):
    url, procs, _, _ = cluster_of_processes
    api = Api(url)
    t = api.template(labels={"test_delay": "0.2"})
    tasks = [api.cluster(t["uuid"])[1] for _ in range(8)]
    finished = [api.wait_task(task) for task in tasks]
    assert {task["state"] for task in finished} == {"SUCCEEDED"}
    assert {task["worker"] for task in finished} == {"w1", "w2"}
    services = Api(url, roles="admin").get("/v1/mservices").json()["mservices"]
    assert {(s["host"], s["state"]) for s in services} >= {("w1", "up"), ("w2", "up")}


def test_sigkilled_worker_task_is_taken_over(cluster_of_processes, tmp_path):
    url, procs, env, data = cluster_of_processes
    api = Api(url)
    marker = tmp_path / "steps"
    t = api.template(name="slow", labels={"test_delay": "1.0", "test_marker": str(marker)})
    cluster, task = api.cluster(t["uuid"])
    running = api.wait_task(task, states=("RUNNING",))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        steps = api.get(f"/v1/tasks/{task}").json()["task"]["steps"]
        if steps and steps[0]["state"] == "SUCCEEDED":
            break
        time.sleep(0.05)
    victim = running["worker"]
    procs[victim].kill()
    survivor = "w2" if victim == "w1" else "w1"
    try:
        done = api.wait_cluster(cluster, {"CREATE_COMPLETE", "CREATE_FAILED"}, timeout=30)
        assert done["status"] == "CREATE_COMPLETE"
        finished = api.wait_task(task)
        assert (finished["state"], finished["worker"], finished["attempts"]) == ("SUCCEEDED", survivor, 2)
        assert any(f"taken over by {survivor}" in e["message"] for e in finished["events"])
        executed = marker.read_text().split("\n")
        # The step finished before the crash is not run again.
        assert executed.count("provision nodes") == 1
        assert executed.count("report addresses") == 1
        time.sleep(2.5)
        services = {s["host"]: s["state"] for s in Api(url, roles="admin").get("/v1/mservices").json()["mservices"]}
        assert (services[victim], services[survivor]) == ("down", "up")
    finally:
        procs[victim] = Process(["worker", "--name", victim], env, data / f"{victim}-restarted.log")


def test_api_on_postgres_pages_and_isolates(cluster_of_processes):
    url, *_ = cluster_of_processes
    mine, theirs = Api(url, project="pg-mine"), Api(url, project="pg-theirs")
    for i in range(5):
        mine.template(name=f"t{i}")
    theirs.template(name="secret")
    first = mine.get("/v1/clustertemplates?limit=2&sort_key=name&sort_dir=desc").json()
    assert [t["name"] for t in first["clustertemplates"]] == ["t4", "t3"]
    nxt = first["next"].replace(url, "")
    second = mine.get(nxt).json()
    assert [t["name"] for t in second["clustertemplates"]] == ["t2", "t1"]
    assert "secret" not in [t["name"] for t in mine.get("/v1/clustertemplates").json()["clustertemplates"]]


def test_two_workers_take_one_clusters_tasks_in_turn(cluster_of_processes, database):
    url, *_ = cluster_of_processes
    api = Api(url)
    t = api.template(name="turns", labels={"test_delay": "0.3"})
    cluster, _ = api.cluster(t["uuid"])
    api.wait_cluster(cluster, {"CREATE_COMPLETE"})
    tasks = [task_of(api.post(f"/v1/clusters/{cluster}/actions/resize", json={"node_count": 3}))]
    tasks += [task_of(api.post(f"/v1/clusters/{cluster}/nodegroups", json={"name": f"ng{i}"})) for i in range(3)]
    finished = one_at_a_time(api, [t["uuid"] for t in api.get(f"/v1/tasks?lock_key={cluster}").json()["tasks"]])
    assert {task["state"] for task in finished} == {"SUCCEEDED"} and len(finished) == 5
    assert api.wait_cluster(cluster, {"UPDATE_COMPLETE"})["node_count"] == 6
    # The database itself refuses a second running task of the cluster.
    with psycopg.connect(database) as conn:
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("UPDATE tasks SET state = 'RUNNING' WHERE uuid = ANY(%s)", (tasks[:2],))
        conn.rollback()


def test_metrics_on_postgres(cluster_of_processes):
    url, *_ = cluster_of_processes
    api = Api(url, project="pg-metrics")
    t = api.template(name="timed", labels={"test_delay": "0.1"})
    assert api.wait_task(api.cluster(t["uuid"])[1])["state"] == "SUCCEEDED"
    text = httpx.get(url + "/metrics").text
    # Task run times come from PostgreSQL's own date arithmetic: three steps of 0.1 s at least.
    count = re.search(r'^jeroboam_task_duration_seconds_count\{action="cluster.create",state="SUCCEEDED"\} (\S+)$',
                      text, re.M)
    total = re.search(r'^jeroboam_task_duration_seconds_sum\{action="cluster.create",state="SUCCEEDED"\} (\S+)$',
                      text, re.M)
    assert float(count.group(1)) >= 1 and float(total.group(1)) / float(count.group(1)) >= 0.3
    assert re.search(r"^jeroboam_database_up 1.0$", text, re.M)

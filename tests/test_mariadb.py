"""MariaDB as the shared database: `jeroboam db upgrade`, an API of two processes and two
workers on the MariaDB server of this machine (scripts/mariadb.sh starts it), over real HTTP."""

import contextlib
import os
import re
import time
import urllib.parse
import uuid

import httpx
import pymysql
import pytest

from tests.support import Api, Process, base_env, split_service

ADMIN_URL = os.environ.get("JEROBOAM_TEST_MARIADB", "mysql://jeroboam:jeroboam-test@127.0.0.1:3306/jeroboam")


def _admin():
    u = urllib.parse.urlsplit(ADMIN_URL)
    return pymysql.connect(host=u.hostname, port=u.port or 3306, user=u.username, password=u.password or "",
                           autocommit=True)


def _drop(name: str) -> None:
    with _admin() as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@contextlib.contextmanager
def new_database():
    """A database of its own on the test server: (its name, its URL)."""
    name = f"jeroboam_test_{uuid.uuid4().hex[:8]}"
    with _admin() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    try:
        yield name, ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        _drop(name)


@pytest.fixture(scope="module")
def database():
    with new_database() as created:
        yield created


@pytest.fixture(scope="module")
def service(database, tmp_path_factory):
    data = tmp_path_factory.mktemp("mariadb")
    env = base_env(data, JEROBOAM_SERVER_DATABASE=database[1], JEROBOAM_WORKER_LEASE_SECONDS="2",
                   JEROBOAM_WORKER_THREADS="2")
    with split_service(env, data, ["w1", "w2"], ["--api-workers", "2"]) as (url, procs):
        yield url, procs, env, data


def test_workers_share_the_queue_and_steps_keep_fractions(service):
    url, *_ = service
    api = Api(url)
    t = api.template(name="maria", labels={"test_delay": "0.2"})
    tasks = [api.cluster(t["uuid"])[1] for _ in range(6)]
    finished = [api.wait_task(task) for task in tasks]
    assert {task["state"] for task in finished} == {"SUCCEEDED"}
    assert {task["worker"] for task in finished} == {"w1", "w2"}
    durations = [s["duration_seconds"] for s in api.get(f"/v1/tasks/{tasks[0]}").json()["task"]["steps"]]
    # DATETIME(6): sub-second timings survive (plain DATETIME would round them to 0 or 1).
    assert all(0.15 < d < 0.9 for d in durations), durations


def test_failed_step_is_recorded(service):
    url, *_ = service
    api = Api(url)
    t = api.template(name="maria-fail")
    cluster, task = api.cluster(t["uuid"], labels={"test_fail": "bootstrap"})
    done = api.wait_task(task)
    assert (done["state"], done["error_detail"]["step"]) == ("FAILED", "bootstrap")
    assert api.wait_cluster(cluster, {"CREATE_FAILED"})["status"] == "CREATE_FAILED"


def test_pages_and_case_sensitive_names(service):
    url, *_ = service
    mine = Api(url, project="maria-mine")
    for name in ("b", "B", "a", "c"):
        mine.template(name=name)
    first = mine.get("/v1/clustertemplates?limit=2&sort_key=name&sort_dir=asc").json()
    second = mine.get(first["next"].replace(url, "")).json()
    assert [t["name"] for t in first["clustertemplates"] + second["clustertemplates"]] == ["B", "a", "b", "c"]
    assert mine.get("/v1/clustertemplates/b").json()["name"] == "b"


def test_stack_resources_upsert_and_names_free_after_delete(service):
    url, *_ = service
    api = Api(url, project="maria-stacks")
    template = {"heat_template_version": "2021-04-16",
                "resources": {"a": {"type": "OS::Heat::RandomString"},
                              "b": {"type": "OS::Heat::TestResource",
                                    "properties": {"value": {"get_attr": ["a", "value"]}}}},
                "outputs": {"v": {"value": {"get_attr": ["b", "output"]}}}}
    for _ in range(2):  # the second create reuses the name of the deleted stack
        r = api.post("/v1/stacks", json={"stack_name": "s1", "template": template})
        assert r.status_code == 202, r.text
        stack_id = r.json()["stack"]["id"]
        assert api.wait_task(r.headers["Location"].rsplit("/", 1)[1])["state"] == "SUCCEEDED"
        stack = api.get(f"/v1/stacks/{stack_id}").json()["stack"]
        assert stack["stack_status"] == "CREATE_COMPLETE" and len(stack["outputs"][0]["output_value"]) > 0
        r = api.delete(f"/v1/stacks/{stack_id}")
        assert api.wait_task(r.headers["Location"].rsplit("/", 1)[1])["state"] == "SUCCEEDED"


def test_metrics_add_up_the_api_processes(service):
    url, *_ = service
    api = Api(url, project="maria-metrics")

    def listed():
        text = httpx.get(url + "/metrics").text
        m = re.search(r'^jeroboam_http_requests_total\{method="GET",route="/v1/clusters",status="200"\} (\S+)$',
                      text, re.M)
        return float(m.group(1)) if m else 0.0, text

    before, _ = listed()
    for _ in range(20):  # new connections: uvicorn's processes share them out
        httpx.get(url + "/v1/clusters", headers=api.headers)
    after, text = listed()
    assert after - before == 20  # whichever process answers the scrape counts all of them
    assert re.search(r'^jeroboam_task_duration_seconds_count\{action="cluster.create",state="SUCCEEDED"\} [1-9]',
                     text, re.M)
    assert re.search(r"^jeroboam_database_up 1.0$", text, re.M)


def test_restarted_worker_keeps_its_record(service):
    url, procs, env, data = service
    admin = Api(url, roles="admin")

    def records():
        return {s["host"]: s for s in admin.get("/v1/mservices").json()["mservices"]}

    before = records()
    procs["w1"].kill()
    killed_at = records()["w1"]["report_count"]
    procs["w1"] = Process(["worker", "--name", "w1"], env, data / "w1-restarted.log")
    deadline = time.monotonic() + 30
    while records()["w1"]["report_count"] <= killed_at:  # only the new process can beat now
        assert time.monotonic() < deadline and procs["w1"].proc.poll() is None, procs["w1"].output()
        time.sleep(0.2)
    assert {h: s["id"] for h, s in records().items()} == {h: s["id"] for h, s in before.items()}


def test_healthcheck_fails_without_the_database(service, database):
    url, *_ = service
    assert httpx.get(url + "/healthcheck").status_code == 200
    _drop(database[0])
    time.sleep(1.1)
    r = httpx.get(url + "/healthcheck")
    # Pooled connections find no schema, new ones no database: either way it is the database.
    assert r.status_code == 503 and r.text.startswith("database"), r.text

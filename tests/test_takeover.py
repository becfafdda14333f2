"""Takeover on PostgreSQL and MariaDB comes from the dead worker's database session, not its
lease: a SIGKILLed worker's task moves on within seconds under a 60 s lease, and a live worker
whose heartbeat stalls past its lease keeps its task. A task waits while its lock key's lock
is held (by a worker's clean-up pass acting on its cluster). `jeroboam api` and two `jeroboam
worker`s on each server of this machine, the test driver (labels set its step delays)."""

import datetime
import signal
import time

import pytest
import sqlalchemy as sa

from jeroboam.db.base import make_engine, make_sessionmaker, utcnow
from jeroboam.tasks import liveness
from tests import test_mariadb, test_postgres_scale_out
from tests.support import Api, Process, base_env, split_service


@pytest.fixture(scope="module", params=["postgresql", "mariadb"])
def database(request):
    if request.param == "postgresql":
        with test_postgres_scale_out.new_database() as url:
            yield url
    else:
        with test_mariadb.new_database() as (_, url):
            yield url


@pytest.fixture
def service(database, tmp_path, request):
    lease = request.param
    env = base_env(tmp_path, JEROBOAM_SERVER_DATABASE=database, JEROBOAM_WORKER_LEASE_SECONDS=str(lease),
                   JEROBOAM_WORKER_THREADS="2")
    with split_service(env, tmp_path, ["w1", "w2"]) as (url, procs):
        yield Api(url), procs, env, tmp_path


def running_step(api: Api, task: str, step: str) -> dict:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = api.get(f"/v1/tasks/{task}").json()["task"]
        if {s["name"]: s["state"] for s in body["steps"]}.get(step) == "RUNNING":
            return body
        time.sleep(0.02)
    raise TimeoutError(f"step {step} of task {task} never ran: {body}")


def kill_mid_create(api: Api, procs: dict, before_takeover=None) -> tuple[str, str, str]:
    """Create a cluster, SIGKILL its worker in the create's second step and call
    `before_takeover(cluster)` while the other worker is held still: (cluster, task, victim)."""
    t = api.template(labels={"test_delay": "1.0"})
    cluster, task = api.cluster(t["uuid"])
    victim = running_step(api, task, "bootstrap")["worker"]
    survivor = procs["w2" if victim == "w1" else "w1"].proc
    survivor.send_signal(signal.SIGSTOP)
    try:
        procs[victim].kill()
        if before_takeover:
            before_takeover(cluster)
    finally:
        survivor.send_signal(signal.SIGCONT)
    return cluster, task, victim


def event_time(task: dict, text: str) -> datetime.datetime:
    return next(datetime.datetime.fromisoformat(e["time"]) for e in task["events"] if text in e["message"])


@pytest.mark.parametrize("service", [60], indirect=True)
def test_a_sigkilled_workers_task_is_taken_over_long_before_its_lease(service):
    api, procs, env, data = service
    cluster, task, victim = kill_mid_create(api, procs)
    survivor = "w2" if victim == "w1" else "w1"
    killed = datetime.datetime.now(datetime.timezone.utc)
    finished = api.wait_task(task)
    assert (finished["state"], finished["worker"], finished["attempts"]) == ("SUCCEEDED", survivor, 2)
    waited = (event_time(finished, f"taken over by {survivor}") - killed).total_seconds()
    # the lease (60 s) has no part in it; the bound is loose for a loaded machine
    assert waited < 20, f"taken over {waited:.1f} s after the kill"
    assert api.wait_cluster(cluster, {"CREATE_COMPLETE"})["status"] == "CREATE_COMPLETE"
    # the killed worker's name is free at once for its restart: no lease to wait out
    procs[victim] = Process(["worker", "--name", victim], env, data / f"{victim}-restarted.log")
    t2 = api.template(name="again", labels={"test_delay": "0.1"})
    procs[survivor].stop()
    assert api.wait_task(api.cluster(t2["uuid"])[1])["worker"] == victim


@pytest.mark.parametrize("service", [60], indirect=True)
def test_cancel_right_after_a_takeover_ends_the_dead_workers_step(service):
    api, procs, _, _ = service

    def delete(cluster):
        # before the survivor can take the task: once it has, it begins bootstrap anew itself
        assert api.delete(f"/v1/clusters/{cluster}").status_code == 204

    cluster, task, _ = kill_mid_create(api, procs, before_takeover=delete)
    cancelled = api.wait_task(task)
    reason = "cluster delete requested by u-alice"
    assert (cancelled["state"], cancelled["attempts"], cancelled["error"]) == ("CANCELLED", 2, reason)
    steps = {s["name"]: (s["state"], s["error"]) for s in cancelled["steps"]}
    # the step the dead worker left RUNNING ended with the task, as did the one never begun
    assert steps == {"provision nodes": ("SUCCEEDED", None), "bootstrap": ("CANCELLED", reason),
                     "report addresses": ("CANCELLED", reason)}
    api.wait_cluster(cluster, {"GONE"})


@pytest.mark.parametrize("service", [2], indirect=True)
def test_a_live_worker_whose_heartbeat_stalls_keeps_its_task(service, database):
    api, procs, _, _ = service
    t = api.template(labels={"test_delay": "2.0"})
    cluster, task = api.cluster(t["uuid"])
    owner = running_step(api, task, "provision nodes")["worker"]
    procs[owner].proc.send_signal(signal.SIGSTOP)  # alive, its session open, its heartbeat silent
    engine = make_engine(database)
    try:
        deadline = time.monotonic() + 20
        while True:  # until its lease has run out (or another worker took the task)
            with engine.connect() as conn:
                expires, attempts = conn.execute(sa.text(
                    "SELECT lease_expires_at, attempts FROM tasks WHERE uuid = :task"), {"task": task}).one()
            if expires < utcnow().replace(tzinfo=None) or attempts > 1:
                break
            assert time.monotonic() < deadline, "the lease never ran out"
            time.sleep(0.1)
        time.sleep(2)  # the other worker polls every 0.05 s: ample time to take it, were it to
        assert api.get(f"/v1/tasks/{task}").json()["task"]["attempts"] == 1
    finally:
        procs[owner].proc.send_signal(signal.SIGCONT)
        engine.dispose()
    finished = api.wait_task(task)
    assert (finished["state"], finished["worker"], finished["attempts"]) == ("SUCCEEDED", owner, 1)
    assert not any("taken over" in e["message"] for e in finished["events"])
    api.wait_cluster(cluster, {"CREATE_COMPLETE"})


@pytest.mark.parametrize("service", [2], indirect=True)
def test_a_task_waits_while_its_lock_key_is_held(service, database):
    api, _, _, _ = service
    t = api.template(labels={"test_delay": "0.1"})
    cluster, task = api.cluster(t["uuid"])
    assert api.wait_task(task)["state"] == "SUCCEEDED"
    engine = make_engine(database)
    try:
        with make_sessionmaker(engine)() as holder, holder.begin():
            # as a worker's clean-up pass holds it while it adopts or removes the cluster's nodes
            assert liveness.hold(holder, liveness.key_lock(cluster))
            reply = api.patch(f"/v1/clusters/{cluster}", json=[{"op": "replace", "path": "/node_count", "value": 2}])
            assert reply.status_code == 202, reply.text  # the API does not wait for it
            update = reply.headers["Location"].rsplit("/", 1)[1]
            time.sleep(2)  # the workers poll every 0.05 s: ample time to start it, were they to
            assert api.get(f"/v1/tasks/{update}").json()["task"]["state"] == "PENDING"
        finished = api.wait_task(update)
    finally:
        engine.dispose()
    assert (finished["state"], finished["attempts"]) == ("SUCCEEDED", 1)
    assert api.wait_cluster(cluster, {"UPDATE_COMPLETE"})["node_count"] == 2

"""What an operator meets: start-up errors, --version, "serving", /healthcheck, /metrics, and a
worker that restarts under its name. Real `jeroboam` processes on SQLite, over real HTTP."""

import re
import socket
import subprocess
import time

import httpx
import pytest

from tests.support import JEROBOAM, ROOT, Api, Process, base_env, free_port, wait_http


def run(args, env, timeout=60):
    return subprocess.run(JEROBOAM + args, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_version():
    result = run(["--version"], base_env(ROOT))
    assert result.returncode == 0
    assert re.fullmatch(r"jeroboam \d+\.\d+\.\d+\S*\n", result.stdout)


@pytest.mark.parametrize("args, env, message", [
    (["api"], {"JEROBOAM_SERVER_API_WORKERS": "four"}, "[api] workers = 'four' from JEROBOAM_SERVER_API_WORKERS: "),
    (["worker", "--config-file", "/nonexistent/jeroboam.conf"], {}, "config file not found: /nonexistent/jeroboam.conf"),
    (["worker", "--database", "postgresql://nobody@127.0.0.1:1/none"], {}, "database 127.0.0.1:1/none:"),
    (["api", "--database", "mysql://nobody@127.0.0.1:1/none"], {}, "Can't connect to MySQL server"),
    (["serve", "--database", "nosuchdb://x"], {}, "database nosuchdb://x:"),
    (["serve", "--bind", "localhost"], {}, "--bind: expected HOST:PORT, got 'localhost'"),
    (["worker"], {}, "is at revision none, this code needs"),  # never migrated
])
def test_start_errors_are_one_line_and_exit_nonzero(tmp_path, args, env, message):
    result = run(args, base_env(tmp_path, **env))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("jeroboam: ") and message in last, result.stderr


def test_busy_port_is_one_line(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run(["serve", "--bind", f"127.0.0.1:{port}"], base_env(tmp_path))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"jeroboam: cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr


def test_serving_is_logged_once_the_port_accepts(tmp_path):
    port = free_port()
    proc = Process(["serve", "--bind", f"127.0.0.1:{port}"],
                   base_env(tmp_path, JEROBOAM_SERVER_LOG_LEVEL="info"), tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + 30
        while "serving the API on" not in proc.output():
            assert time.monotonic() < deadline and proc.proc.poll() is None, proc.output()
            time.sleep(0.01)
        # No retry: the line promises that the port answers now.
        assert httpx.get(f"http://127.0.0.1:{port}/healthcheck", timeout=5).text == "OK"
    finally:
        proc.stop()


def test_healthcheck_until_migrated_and_while_disabled(tmp_path):
    disable = tmp_path / "disable"
    env = base_env(tmp_path, JEROBOAM_HEALTHCHECK_DISABLE_BY_FILE_PATH=str(disable))
    port = free_port()
    api = Process(["api", "--bind", f"127.0.0.1:{port}"], env, tmp_path / "api.log")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(url + "/healthcheck")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and api.proc.poll() is None, api.output()
                time.sleep(0.1)
        # The database was never migrated: every /v1 call would fail, so the check does.
        assert r.status_code == 503 and "run jeroboam db upgrade" in r.text
        assert run(["db", "upgrade"], env).returncode == 0
        time.sleep(1.1)  # the verdict is cached for a second
        assert (httpx.get(url + "/healthcheck").status_code, httpx.head(url + "/healthcheck").status_code) == (200, 200)
        disable.touch()
        r = httpx.get(url + "/healthcheck")
        assert (r.status_code, r.text) == (503, "DISABLED BY FILE")
        disable.unlink()
        assert httpx.get(url + "/healthcheck").status_code == 200
    finally:
        api.stop()


def _samples(text: str, name: str) -> dict:
    """{labels string: value} of one metric in Prometheus' text format."""
    found = {}
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(\{{.*\}})? (\S+)", line)
        if m:
            found[m.group(1) or ""] = float(m.group(2))
    return found


def test_metrics(server, alice):
    key = '{action="cluster.create",state="SUCCEEDED"}'
    # The server is shared with other tests: task durations are judged by what this test adds.
    before = httpx.get(server + "/metrics").text
    sum_before = _samples(before, "jeroboam_task_duration_seconds_sum").get(key, 0.0)
    count_before = _samples(before, "jeroboam_task_duration_seconds_count").get(key, 0.0)
    t = alice.template(name="metrics-tpl", labels={"test_delay": "0.1"})
    _, task = alice.cluster(t["uuid"], node_count=3, master_count=1)
    assert alice.wait_task(task)["state"] == "SUCCEEDED"
    _, failed_task = alice.cluster(t["uuid"], labels={"test_fail": "bootstrap"})
    assert alice.wait_task(failed_task)["state"] == "FAILED"
    for i in range(3):
        alice.get(f"/v1/clusters/nonexistent-{i}")
    text = httpx.get(server + "/metrics").text

    requests = _samples(text, "jeroboam_http_requests_total")
    # Route templates, never raw paths: three different ids are one series.
    assert requests['{method="GET",route="/v1/clusters/{ident}",status="404"}'] >= 3
    assert not [k for k in requests if "nonexistent" in k]
    assert _samples(text, "jeroboam_http_request_duration_seconds_count")[
        '{method="POST",route="/v1/clusters"}'] >= 2
    assert _samples(text, "jeroboam_database_up") == {"": 1.0}
    tasks = _samples(text, "jeroboam_tasks")
    assert tasks['{action="cluster.create",state="SUCCEEDED"}'] >= 1
    assert tasks['{action="cluster.create",state="FAILED"}'] >= 1
    added = _samples(text, "jeroboam_task_duration_seconds_sum")[key] - sum_before
    # One create of three steps of 0.1 s each: at least that much run time was added.
    assert _samples(text, "jeroboam_task_duration_seconds_count")[key] - count_before == 1
    assert added >= 0.3
    assert _samples(text, "jeroboam_task_queue_depth")[""] >= 0
    clusters = _samples(text, "jeroboam_clusters")
    assert clusters['{health_status="UNKNOWN",status="CREATE_COMPLETE"}'] >= 1
    assert clusters['{health_status="UNKNOWN",status="CREATE_FAILED"}'] >= 1
    # The test driver's template has server_type vm; 1 master + 3 nodes, plus the failed cluster's.
    assert _samples(text, "jeroboam_nodes")['{provider="vm"}'] >= 4


def test_restarted_worker_keeps_its_record(tmp_path):
    port = free_port()
    env = base_env(tmp_path, JEROBOAM_WORKER_LEASE_SECONDS="2")
    args = ["serve", "--bind", f"127.0.0.1:{port}"]
    url = f"http://127.0.0.1:{port}"
    admin = Api(url, roles="admin")

    def records():
        return [(s["id"], s["host"], s["state"]) for s in admin.get("/v1/mservices").json()["mservices"]]

    proc = Process(args, env, tmp_path / "serve-1.log")
    try:
        wait_http(url, proc)
        first = records()
        assert len(first) == 1 and first[0][1] == socket.gethostname() and first[0][2] == "up"
        proc.stop()  # a clean stop: the record goes down at once, the name is free
        proc = Process(args, env, tmp_path / "serve-2.log")
        wait_http(url, proc)
        assert records() == first
        # A namesake beside a live worker would share its task leases: it is refused.
        twin = run(["worker"], env)
        assert twin.returncode == 1 and "is in use by a live worker" in twin.stderr.splitlines()[-1]
        proc.kill()  # a crash: the restart waits for the old heartbeat to age, then takes the name
        proc = Process(args, env, tmp_path / "serve-3.log")
        wait_http(url, proc)
        deadline = time.monotonic() + 10
        while records() != first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert records() == first
    finally:
        proc.stop()

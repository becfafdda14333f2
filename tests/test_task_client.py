"""Tasks in the client: `openstack coe task ...` (the plugin shipped in the package, loaded by the
real OSC through its entry points) and `jeroboam task ...`, against a real `jeroboam serve`."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import JEROBOAM, ROOT

OPENSTACK = str(Path(sys.executable).with_name("openstack"))


def openstack(server, *args):
    env = {**os.environ, "OS_AUTH_TYPE": "none", "OS_ENDPOINT": server + "/v1"}
    return subprocess.run([OPENSTACK, "coe", "task", *args], env=env, capture_output=True, text=True, timeout=120)


def jeroboam(server, *args):
    return subprocess.run(JEROBOAM + ["task", *args, "--url", server], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


FRONT_ENDS = {"openstack": openstack, "jeroboam": jeroboam}


@pytest.fixture(params=sorted(FRONT_ENDS))
def cli(request, server):
    return lambda *args: FRONT_ENDS[request.param](server, *args)


def test_wait_shows_steps_and_the_failed_one(cli, admin):
    # noauth without identity headers: the client acts as the local operator (an admin).
    t = admin.template(name="client-tpl")
    cluster, task = admin.cluster(t["uuid"], labels={"test_delay": "0.3", "test_fail": "bootstrap"})
    result = cli("wait", task, "--interval", "0.1")
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["SUCCEEDED", "provision", "nodes"] for line in lines), result.stdout
    assert any(line.split()[:2] == ["FAILED", "bootstrap"] and "injected failure in bootstrap" in line
               for line in lines)
    assert any(line.startswith("[") and "%" in line for line in lines)  # the progress bar
    assert lines[-1] == (f"task {task} (cluster.create) FAILED: step 'bootstrap' failed: "
                         "injected failure in bootstrap")


def test_wait_follows_a_resource_to_success(cli, admin):
    t = admin.template(name="client-ok")
    cluster, task = admin.cluster(t["uuid"], labels={"test_delay": "0.3"})
    result = cli("wait", "--resource", cluster, "--interval", "0.1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == f"task {task} (cluster.create) SUCCEEDED"
    assert "100% SUCCEEDED" in result.stdout


def test_list_and_show(cli, admin):
    t = admin.template(name="client-list")
    cluster, task = admin.cluster(t["uuid"], labels={"test_fail": "provision nodes"})
    admin.wait_task(task)
    listed = cli("list", "--resource", cluster)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if task in line]
    assert "cluster.create" in row and "FAILED" in row
    shown = cli("show", task)
    assert shown.returncode == 0, shown.stderr
    assert "step 'provision nodes' failed: injected failure in provision nodes" in shown.stdout
    assert "PENDING" in shown.stdout and "report addresses" in shown.stdout  # steps never reached


def test_unknown_task_is_an_error(cli):
    result = cli("show", "00000000-0000-0000-0000-000000000000")
    assert result.returncode == 1
    assert "Task 00000000-0000-0000-0000-000000000000 could not be found." in result.stderr

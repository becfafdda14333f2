"""Starting real Jeroboam processes for tests, and talking to them over real HTTP."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from jeroboam.infra.local import LocalProvider
from jeroboam.infra.local.resources import prefix_for

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = Path(__file__).resolve().parent / "plugins"
TEST_IMAGES = "jeroboam-node=debian,test-image=testos"
JEROBOAM = [sys.executable, "-m", "jeroboam.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes():
    """(PID, state letter, parent PID) of every process on the host."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        yield int(entry), stat[0], int(stat[1])


def zombies() -> dict[int, int]:
    """Zombie (<defunct>) processes host-wide: PID -> parent PID."""
    return {pid: parent for pid, state, parent in _processes() if state == "Z"}


def provider_of(data: Path) -> LocalProvider:
    """A provider on the state directory of a service of `data` (what the service's own one
    sees: the same names)."""
    state = str(data / "local")
    return LocalProvider(state, prefix=prefix_for(state))


def base_env(data_dir: Path, **settings: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGINS), str(ROOT), env.get("PYTHONPATH", "")])
    env.update({
        "JEROBOAM_SERVER_DATA_DIR": str(data_dir),
        "JEROBOAM_IMAGES_CATALOG": TEST_IMAGES,
        "JEROBOAM_WORKER_POLL_INTERVAL": "0.05",
        "JEROBOAM_SERVER_LOG_LEVEL": "warning",
    })
    env.update({k.upper(): str(v) for k, v in settings.items()})
    return env


class Process:
    """A jeroboam command (or, with `program`, another one) run as a child; stopped by its PID only."""

    def __init__(self, args: list[str], env: dict, log: Path, program: list[str] = JEROBOAM):
        self.log_path = log
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(program + args, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     cwd=ROOT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_http(url: str, proc: Process, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"process exited early:\n{proc.output()}")
        try:
            if httpx.get(url + "/healthcheck", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s:\n{proc.output()}")


@contextlib.contextmanager
def split_service(env: dict, data: Path, workers: list[str], api_args: list[str] = ()):
    """The scaled-out shape: `db upgrade`, then `jeroboam api` and named `jeroboam worker`s.
    Yields (url, {name: Process}); every process is stopped at the end."""
    upgrade = Process(["db", "upgrade"], env, data / "upgrade.log")
    assert upgrade.proc.wait(60) == 0, upgrade.output()
    port = free_port()
    procs = {"api": Process(["api", "--bind", f"127.0.0.1:{port}", *api_args], env, data / "api.log")}
    for name in workers:
        procs[name] = Process(["worker", "--name", name], env, data / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url, procs["api"])
        yield url, procs
    finally:
        for proc in procs.values():
            proc.stop()


class Api:
    """An httpx client with identity headers, a microversion and helpers for async actions."""

    def __init__(self, url: str, project: str = "p-alice", user: str = "u-alice", roles: str = "member,reader",
                 version: str | None = "latest"):
        headers = {"X-Project-Id": project, "X-User-Id": user, "X-Roles": roles}
        if version:
            headers["OpenStack-API-Version"] = f"container-infra {version}"
        self.url = url
        self.http = httpx.Client(base_url=url, headers=headers, timeout=30)

    def __getattr__(self, name):
        return getattr(self.http, name)

    def wait_cluster(self, ident: str, statuses, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.http.get(f"/v1/clusters/{ident}")
            if r.status_code == 404 and "GONE" in statuses:
                return {"status": "GONE"}
            body = r.json()
            if r.status_code == 200 and body["status"] in statuses:
                return body
            time.sleep(0.05)
        raise TimeoutError(f"cluster {ident} not in {statuses}: {body}")

    def wait_task(self, task_uuid: str, states=("SUCCEEDED", "FAILED", "CANCELLED"), timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.http.get(f"/v1/tasks/{task_uuid}").json()["task"]
            if task["state"] in states:
                return task
            time.sleep(0.05)
        raise TimeoutError(f"task {task_uuid} not in {states}: {task}")

    def template(self, **extra) -> dict:
        body = {"name": extra.pop("name", "tpl"), "coe": "swarm-mode", "image_id": "test-image", **extra}
        r = self.http.post("/v1/clustertemplates", json=body)
        assert r.status_code == 201, r.text
        return r.json()

    def cluster(self, template: str, **extra) -> tuple[str, str]:
        """Create a cluster; returns (cluster uuid, task uuid)."""
        r = self.http.post("/v1/clusters", json={"cluster_template_id": template, **extra})
        assert r.status_code == 202, r.text
        return r.json()["uuid"], r.headers["Location"].rsplit("/", 1)[1]


def task_of(reply) -> str:
    assert reply.status_code in (202, 204), reply.text
    return reply.headers["Location"].rsplit("/", 1)[1]


def one_at_a_time(api: Api, task_uuids: list[str], timeout: float = 60) -> list[dict]:
    """Wait for the tasks; assert that no two of them ran at the same time."""
    tasks = [api.wait_task(t, timeout=timeout) for t in task_uuids]
    spans = sorted((datetime.datetime.fromisoformat(t["started_at"]),
                    datetime.datetime.fromisoformat(t["finished_at"]), t["action"]) for t in tasks)
    for (_, end, first), (start, _, then) in zip(spans, spans[1:]):
        assert end <= start, f"{then} started at {start} while {first} ran until {end}"
    return tasks


# Link names a local provider gives (a prefix of "j" and up to 3 characters, a kind letter or "-", 10 hex digits):
# other installations' (a concurrent test run, a benchmark) come and go on their own.
PROVIDER_NAME = re.compile(r"j[a-z0-9]{1,3}[-a-z][0-9a-f]{10}")


def foreign_name(name: str, ours: str = "") -> bool:
    return bool(PROVIDER_NAME.fullmatch(name)) and not (ours and name.startswith(ours))


def host_snapshot(ours: str = "") -> dict[str, str]:
    """Host state outside the provider's own names, which it must never change: routes (less
    those on another installation's links), the filter and the nat tables."""
    def out(*argv):
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    routes = [line for line in out("ip", "-4", "route", "show", "table", "main").splitlines()
              if not any(foreign_name(word, ours) for word in line.split())]
    return {"routes": "\n".join(routes), "iptables": out("iptables", "-S"), "nat": out("iptables", "-t", "nat", "-S")}


def descendants(pid: int) -> list[int]:
    """The processes below `pid` (children, theirs, ...)."""
    children: dict[int, list[int]] = {}
    for child, _, parent in _processes():
        children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def unprivileged_as(pid: int, user) -> None:
    """Assert that process `pid` runs as `user` (a pwd entry) for good: every uid and gid, no
    supplementary group, no capability in any set, no_new_privs."""
    from jeroboam.cli.privsep import status

    fields = status(pid)
    assert fields["Uid"].split() == [str(user.pw_uid)] * 4, fields["Uid"]
    assert fields["Gid"].split() == [str(user.pw_gid)] * 4, fields["Gid"]
    assert fields["Groups"] == ""
    assert {name: int(fields[name], 16) for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")} == {
        "CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}
    assert fields["NoNewPrivs"] == "1"


@contextlib.contextmanager
def scratch_provider(make, prefix: str):
    """``make(state_dir)``'s provider on a new temporary state directory, under a name prefix of
    the tests' own. One session at a time owns the prefix's names (and removes what a killed
    session left)."""
    with open(f"/tmp/{prefix}-tests.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # short: unix socket paths under it must stay below 108 bytes
        state = tempfile.mkdtemp(prefix=f"{prefix}-", dir="/tmp")
        provider = make(state)
        try:
            provider.setup()
            provider.remove_leftovers([], [])
            yield provider
        finally:
            provider.remove_leftovers([], [])
            shutil.rmtree(state, ignore_errors=True)

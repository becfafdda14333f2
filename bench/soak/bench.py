"""Soak (issue 12, "done when"): real swarm clusters under load while workers die.

`jeroboam api` and two `jeroboam worker`s (w1, w2) on a fresh PostgreSQL database, the
product's defaults (lease 15 s, poll 0.2 s, 4 threads). For --minutes, --actors threads each
create a swarm cluster of the local provider (the namespace provider: 1 manager, 1-2 workers),
resize it once or twice, and delete it; one create in six is deleted while it runs (a cancel).
Meanwhile --kills times, at a random moment of each equal slice of the run, a worker is
SIGKILLed by PID (one running a task when there is one) and started again under its name.
Then the actors stop (their last cluster kept), the service is left until no task is
pending or running, and it checks:
  - stuck: clusters still *_IN_PROGRESS once every task has ended, operations that never ended
  - provider vs database: each cluster's nodes on the host as its nodegroups ask, all
    answering; no node or network of a cluster the database does not know
  - leaked: after deleting every cluster, this installation's netns, links (veths, bridges),
    processes (dockerd, containerd, shims), mounts, cgroups and state against before the run
    (its own name prefix: other installations on the machine come and go on their own)
  - zombies: <defunct> processes whose parent is a process it started or one of theirs
    (workers, API, node supervisors and what they run), or that were such a process,
    persisting 5 s (a parent reaps a child a moment after it exits); during the run and at
    the end, also host-wide beside it
  - RUNNING steps of tasks that ended
  - twice at once: two tasks of one lock key whose runs overlap, or a task taken over
    from a worker that had not been killed
  - 5xx: answers to its own requests and the API's metrics
and prints them with the takeover times (SIGKILL to the "taken over by" event of each task
the killed worker held), the operations' durations and the load average during the run.

Everything it starts is stopped by PID, also on failure or Ctrl-C; the provider's leftovers,
the data directory and the database are removed. Logs are copied to /tmp when a check fails.

    bash bench/soak/run.sh [--minutes 7] [--kills 20] [--actors 3] [--seed N]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))
from jeroboam.drivers.nodes import node_key  # noqa: E402
from jeroboam.drivers.stack import stack_id_of  # noqa: E402
from tests.support import Process, base_env, free_port, provider_of, wait_http  # noqa: E402

WORKERS = ("w1", "w2")
OPERATION_TIMEOUT = 300  # seconds: an operation not settled by then counts as stuck
QUIET_TIMEOUT = 600  # seconds for every task to end after the load stops
PERSIST = 5.0  # seconds a zombie must last to count
POLL = 0.25
IN_PROGRESS = re.compile(r"_IN_PROGRESS$")
BEFORE = {"takeover median": 14.6, "create median": 2.1, "create max": 18.6}  # the soak


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


def utc(value: datetime.datetime) -> datetime.datetime:
    """PostgreSQL hands the service's naive UTC timestamps back naive."""
    return value.replace(tzinfo=datetime.timezone.utc) if value.tzinfo is None else value


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Service:
    """The API and the workers as children of this process; stopped by PID."""

    def __init__(self, data: Path, database: str):
        self.data = data
        self.env = base_env(data, JEROBOAM_DATABASE_CONNECTION=database, JEROBOAM_API_ACCESS_LOG="false",
                            JEROBOAM_INFRA_LOCAL_PROJECTS="soak", JEROBOAM_SERVER_LOG_LEVEL="info")
        del self.env["JEROBOAM_WORKER_POLL_INTERVAL"]  # the product's default, not the tests'
        self.url = f"http://127.0.0.1:{free_port()}"
        self.procs: dict[str, Process] = {}
        self.started = collections.Counter()
        self.lock = threading.Lock()

    def start(self, name: str, args: list[str]) -> Process:
        with self.lock:
            self.started[name] += 1
            proc = Process(args, self.env, self.data / f"{name}-{self.started[name]}.log")
            self.procs[name] = proc
            return proc

    def up(self) -> None:
        upgrade = Process(["db", "upgrade"], self.env, self.data / "upgrade.log")
        if upgrade.proc.wait(120) != 0:
            raise RuntimeError(f"db upgrade failed: {upgrade.output()}")
        self.start("api", ["api", "--bind", self.url.rsplit("/", 1)[1]])
        for name in WORKERS:
            self.start(name, ["worker", "--name", name])
        wait_http(self.url, self.procs["api"])

    def kill(self, name: str) -> datetime.datetime:
        """SIGKILL the worker, then start it again under its name; when the signal went."""
        killed = now()
        self.procs[name].kill()
        self.procs[name].log.close()
        self.start(name, ["worker", "--name", name])
        return killed

    def pids(self) -> set[int]:
        with self.lock:
            return {p.pid for p in self.procs.values() if p.proc.poll() is None}

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()


def proc_table() -> dict[int, tuple[int, str, str]]:
    """PID -> (parent PID, state, start time) of every process on the machine."""
    table = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), fields[0], fields[19])
    return table


class Watch(threading.Thread):
    """Every second: the load average, the processes that are ours (the service's and, by
    their supervisors' PID files, the nodes'), and the zombies among or under them."""

    def __init__(self, service: Service, provider):
        super().__init__(daemon=True, name="watch")
        self.service, self.provider = service, provider
        self.stop = threading.Event()
        self.loads: list[float] = []
        self.ours: set[tuple[int, str]] = set()  # (pid, start time): a PID is reused
        self.first_seen: dict[tuple[int, str], float] = {}
        self.persistent: set[tuple[int, str]] = set()
        self.most = 0
        self.lock = threading.Lock()

    def roots(self) -> set[int]:
        pids = self.service.pids()
        for pid_file in (self.provider.state_dir / "nodes").glob("*/proc/init.pid"):
            try:
                pids.add(int(pid_file.read_text().split()[0]))
            except (OSError, ValueError, IndexError):
                continue
        return pids

    def sample(self) -> set[tuple[int, str]]:
        """Zombies of ours now (recording which processes are ours)."""
        roots = self.roots()
        table = proc_table()
        children = collections.defaultdict(list)
        for pid, (ppid, _, _) in table.items():
            children[ppid].append(pid)
        tree, todo = set(), [p for p in roots if p in table]
        while todo:
            pid = todo.pop()
            if pid not in tree:
                tree.add(pid)
                todo.extend(children[pid])
        with self.lock:
            self.ours |= {(pid, table[pid][2]) for pid in tree if table[pid][1] != "Z"}
            return {(pid, start) for pid, (ppid, state, start) in table.items()
                    if state == "Z" and (ppid in tree or (pid, start) in self.ours)}

    def run(self) -> None:
        while not self.stop.wait(1.0):
            self.loads.append(os.getloadavg()[0])
            try:
                found = self.sample()
            except Exception as exc:  # a sample lost is no reason to stop the soak
                log(f"watch: {exc!r}")
                continue
            at = time.monotonic()
            lasting = set()
            for key in found:
                if at - self.first_seen.setdefault(key, at) >= PERSIST:
                    lasting.add(key)
            self.persistent |= lasting
            self.most = max(self.most, len(lasting))


class Stats:
    """What the actors saw."""

    def __init__(self):
        self.lock = threading.Lock()
        self.statuses = collections.Counter()
        self.errors: list[str] = []
        self.durations = collections.defaultdict(list)  # operation -> seconds
        self.outcomes = collections.Counter()  # (operation, final status)
        self.stuck: list[str] = []

    def response(self, response: httpx.Response) -> None:
        with self.lock:
            self.statuses[response.status_code] += 1
            if response.status_code >= 500:
                response.read()
                self.errors.append(f"{response.request.method} {response.request.url.path}: "
                                   f"{response.status_code} {response.text[:300]}")


class Actor(threading.Thread):
    """Creates, resizes and deletes clusters, one at a time, until told to stop; its last
    cluster stays when it stops (for the check of the provider against the database)."""

    def __init__(self, n: int, service: Service, stats: Stats, stop: threading.Event, rng: random.Random):
        super().__init__(daemon=True, name=f"actor-{n}")
        self.n, self.stats, self.stop_event, self.rng = n, stats, stop, rng
        self.http = httpx.Client(base_url=service.url, timeout=60, event_hooks={"response": [stats.response]},
                                 headers={"X-Project-Id": "soak", "X-User-Id": f"soak-{n}",
                                          "X-Roles": "member,reader",
                                          "OpenStack-API-Version": "container-infra latest"})
        self.failure: BaseException | None = None

    def settle(self, cluster: str, operation: str, started: float) -> dict | None:
        """The cluster once its operation ended (None: gone); stuck ones are recorded."""
        while True:
            reply = self.http.get(f"/v1/clusters/{cluster}")
            if reply.status_code == 404:
                body = None
                break
            body = reply.json()
            if reply.status_code == 200 and not IN_PROGRESS.search(body["status"]):
                break
            if time.monotonic() - started > OPERATION_TIMEOUT:
                with self.stats.lock:
                    self.stats.stuck.append(f"{operation} of {cluster}: still {body.get('status')} "
                                            f"after {OPERATION_TIMEOUT} s")
                raise TimeoutError(f"{operation} of {cluster} did not end")
            time.sleep(POLL)
        status = body["status"] if body else "GONE"
        with self.stats.lock:
            self.stats.durations[operation].append(time.monotonic() - started)
            self.stats.outcomes[(operation, status)] += 1
        if status.endswith("_FAILED"):
            log(f"actor {self.n}: {operation} of {cluster} ended {status}: {body.get('status_reason')}")
        return body

    def delete(self, cluster: str, again: bool = True) -> None:
        started = time.monotonic()
        reply = self.http.delete(f"/v1/clusters/{cluster}")
        if reply.status_code == 404:
            return
        assert reply.status_code == 204, reply.text
        body = self.settle(cluster, "delete", started)
        if body is not None and again:  # DELETE_FAILED: once more, as a user would
            self.delete(cluster, again=False)

    def cycle(self, k: int) -> None:
        started = time.monotonic()
        reply = self.http.post("/v1/clusters", json={
            "name": f"soak-{self.n}-{k}", "cluster_template_id": "soak", "master_count": 1,
            "node_count": self.rng.randint(1, 2)})
        assert reply.status_code == 202, reply.text
        cluster = reply.json()["uuid"]
        if self.rng.random() < 1 / 6:
            time.sleep(self.rng.uniform(0.2, 3.0))  # mid-create, a cancel
            self.delete(cluster)
            return
        body = self.settle(cluster, "create", started)
        for _ in range(self.rng.randint(1, 2)):
            if self.stop_event.is_set() or body["status"] != "CREATE_COMPLETE" and \
                    body["status"] != "UPDATE_COMPLETE":
                break
            count = self.rng.choice([c for c in (1, 2, 3) if c != body["node_count"]])
            started = time.monotonic()
            reply = self.http.post(f"/v1/clusters/{cluster}/actions/resize", json={"node_count": count})
            assert reply.status_code == 202, reply.text
            body = self.settle(cluster, "resize", started)
        if self.stop_event.is_set() and body["status"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
            return  # kept for the final checks
        self.delete(cluster)

    def run(self) -> None:
        k = 0
        try:
            while not self.stop_event.is_set():
                self.cycle(k)
                k += 1
        except BaseException as exc:  # the main thread reports it
            self.failure = exc
            log(f"actor {self.n} stopped: {exc!r}")


def quiet(db: psycopg.Connection, timeout: float) -> list[tuple]:
    """Wait until no task is pending or running; those still unfinished after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        left = db.execute("SELECT uuid, action, state, worker FROM tasks "
                          "WHERE state IN ('PENDING', 'RUNNING')").fetchall()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(1)


def provider_vs_database(db: psycopg.Connection, provider) -> list[str]:
    """Each cluster's nodes on the host as its nodegroups ask, answering; nothing of clusters
    the database does not know."""
    problems = []
    groups = collections.defaultdict(dict)
    for cluster, group, count in db.execute("SELECT cluster_id, uuid, node_count FROM nodegroups"):
        groups[cluster][group] = count
    on_host = collections.defaultdict(collections.Counter)
    for node in provider.nodes():
        key = node_key(node)
        if key is None or key[0] not in groups:
            problems.append(f"node {node.name} ({node.node_id}) of no cluster in the database")
            continue
        on_host[key[0]][key[1]] += 1
        if not (provider.node_running(node.name) and node.ping()):
            problems.append(f"node {node.name} of cluster {key[0]} does not answer")
    for cluster, wanted in groups.items():
        found = {g: on_host[cluster][g] for g in wanted}
        if found != wanted:
            problems.append(f"cluster {cluster}: nodes per nodegroup {found}, the database asks {wanted}")
    networks = {provider.network_name(provider.scoped(stack_id_of(c), c)) for c in groups}
    bridges = {p.stem for p in (provider.state_dir / "networks").glob("*.json")}
    problems += [f"network {b} of no cluster in the database" for b in sorted(bridges - networks)]
    problems += [f"cluster network {b} missing" for b in sorted(networks - bridges)]
    return problems


def takeovers(db: psycopg.Connection, kills: list[tuple[str, datetime.datetime]]) \
        -> tuple[list[tuple[float, bool]], list[str]]:
    """Seconds from each kill to the takeover of each task the killed worker held, and whether
    its restarted namesake took it; takeovers from a worker that was not killed meanwhile
    (the task ran twice at once)."""
    owners = collections.defaultdict(list)  # task uuid -> [(time, worker)]
    rows = db.execute("SELECT t.uuid, e.time, e.message FROM task_events e JOIN tasks t ON t.id = e.task_id "
                      "WHERE e.message LIKE 'started by %' OR e.message LIKE 'taken over by %' "
                      "ORDER BY e.id").fetchall()
    for task, at, message in rows:
        owners[task].append((utc(at), message.split(" by ", 1)[1].split()[0]))
    waits, doubles = [], []
    for task, history in owners.items():
        for (held_since, holder), (taken_at, taker) in zip(history, history[1:]):
            killed = [k for w, k in kills if w == holder and held_since <= k <= taken_at]
            if killed:
                waits.append(((taken_at - killed[-1]).total_seconds(), taker == holder))
            else:
                doubles.append(f"task {task} taken over by {taker} at {taken_at:%H:%M:%S.%f} from {holder}, "
                               "which was not killed")
    return waits, doubles


def overlapping(db: psycopg.Connection) -> list[str]:
    spans = collections.defaultdict(list)
    for key, task, action, started, finished in db.execute(
            "SELECT lock_key, uuid, action, started_at, finished_at FROM tasks WHERE started_at IS NOT NULL"):
        spans[key].append((utc(started), utc(finished) if finished else None, action, task))
    found = []
    for key, runs in spans.items():
        runs.sort(key=lambda r: r[0])
        for (_, end, first, a), (start, _, then, b) in zip(runs, runs[1:]):
            if end is None or end > start:
                found.append(f"lock key {key}: {then} {b} started while {first} {a} ran")
    return found


def running_steps(db: psycopg.Connection) -> list[str]:
    rows = db.execute("SELECT t.uuid, t.action, t.state, s.name FROM task_steps s JOIN tasks t ON t.id = s.task_id "
                      "WHERE s.state = 'RUNNING' AND t.state IN ('SUCCEEDED', 'FAILED', 'CANCELLED')").fetchall()
    return [f"task {u} ({a}, {st}): step {n} RUNNING" for u, a, st, n in rows]


def metrics_5xx(url: str) -> int:
    text = httpx.get(url + "/metrics", timeout=30).text
    return int(sum(float(m.group(1)) for m in re.finditer(
        r'^jeroboam_http_requests_total\{[^}]*status="5\d\d"[^}]*\} (\S+)$', text, re.M)))


def lasting_zombies(watch: Watch) -> set[tuple[int, str]]:
    """Zombies of ours present now and PERSIST seconds later."""
    first = watch.sample()
    time.sleep(PERSIST)
    return first & watch.sample()


def median(values) -> str:
    return f"{statistics.median(values):.2f} s" if values else "-"


def run(args, service: Service, db: psycopg.Connection) -> bool:
    rng = random.Random(args.seed)
    provider = provider_of(service.data)
    before = provider.inventory()
    stats, stop = Stats(), threading.Event()
    watch = Watch(service, provider)
    actors: list[Actor] = []
    kills: list[tuple[str, datetime.datetime]] = []
    try:
        service.up()
        admin = httpx.Client(base_url=service.url, timeout=60, event_hooks={"response": [stats.response]},
                             headers={"X-Project-Id": "soak", "X-User-Id": "soak", "X-Roles": "member,reader"})
        reply = admin.post("/v1/clustertemplates", json={"name": "soak", "coe": "swarm-mode",
                                                         "image_id": "jeroboam-node", "server_type": "local"})
        assert reply.status_code == 201, reply.text
        watch.start()
        started = time.monotonic()
        actors = [Actor(n, service, stats, stop, random.Random(rng.random())) for n in range(args.actors)]
        for actor in actors:
            actor.start()
        duration = args.minutes * 60
        slot = duration / max(1, args.kills)
        moments = [i * slot + rng.uniform(0.1, 0.9) * slot for i in range(args.kills)]
        log(f"soak: {args.actors} actors for {args.minutes} min, {args.kills} kills; data {service.data}")
        for moment in moments:
            time.sleep(max(0.0, started + moment - time.monotonic()))
            busy = sorted({w for (w,) in db.execute("SELECT worker FROM tasks WHERE state = 'RUNNING'")
                           if w in WORKERS})
            victim = rng.choice(busy or list(WORKERS))
            kills.append((victim, service.kill(victim)))
            log(f"kill {len(kills)}: {victim} (running tasks: {'yes' if busy else 'no'}); "
                f"load {os.getloadavg()[0]:.1f}")
        time.sleep(max(0.0, started + duration - time.monotonic()))
        stop.set()
        load_minutes = (time.monotonic() - started) / 60
        log("load stopped; waiting for the actors' last operations")
        for actor in actors:
            actor.join(OPERATION_TIMEOUT + 60)
        left = quiet(db, QUIET_TIMEOUT)
        log("quiet" if not left else f"{len(left)} tasks still unfinished")
        stuck_clusters = [f"cluster {u}: {s}" for u, s in db.execute("SELECT uuid, status FROM clusters")
                          if IN_PROGRESS.search(s)]
        mismatches = provider_vs_database(db, provider)
        kept = db.execute("SELECT count(*) FROM clusters").fetchone()[0]
        zombies_quiet = lasting_zombies(watch)
        log(f"deleting the {kept} clusters left")
        for (cluster,) in db.execute("SELECT uuid FROM clusters").fetchall():
            actors[0].delete(cluster)
        left += quiet(db, QUIET_TIMEOUT)
        taken, doubles = takeovers(db, kills)
        waits = [w for w, _ in taken]
        doubles += overlapping(db)
        steps = running_steps(db)
        zombies_end = lasting_zombies(watch)
        after = provider.inventory()
        leaked = {k: sorted(set(after[k]) - set(before[k])) for k in after if set(after[k]) - set(before[k])}
        server_5xx = metrics_5xx(service.url)
        task_states = collections.Counter(
            (a, s) for a, s in db.execute("SELECT action, state FROM tasks"))
        failures = db.execute("SELECT action, state, error FROM tasks WHERE state = 'FAILED'").fetchall()
    finally:
        stop.set()
        watch.stop.set()
        service.stop()
    # zombies of ours once every process it started has stopped (reparented ones too)
    time.sleep(PERSIST)
    table = proc_table()
    orphans = {(pid, start) for pid, (_, state, start) in table.items()
               if state == "Z" and (pid, start) in watch.ours}
    host_zombies = sum(state == "Z" for _, state, _ in table.values())

    creates = stats.durations["create"]
    figures = {
        "duration (load)": f"{load_minutes:.1f} min",
        "kills": len(kills),
        "operations": dict(sorted((f"{o} -> {s}", n) for (o, s), n in stats.outcomes.items())),
        "tasks": dict(sorted((f"{a} {s}", n) for (a, s), n in task_states.items())),
        "stuck": len(stuck_clusters) + len(stats.stuck) + len(left),
        "provider vs database mismatches": len(mismatches),
        "leaked": sum(len(v) for v in leaked.values()),
        "zombies (persisting, most at once during the run)": watch.most,
        "zombies (persisting, distinct during the run)": len(watch.persistent),
        "zombies (at quiescence / at the end / after stop)": f"{len(zombies_quiet)} / {len(zombies_end)} / "
                                                             f"{len(orphans)}",
        "zombies host-wide after stop (any owner, for context)": host_zombies,
        "RUNNING steps in finished tasks": len(steps),
        "tasks run twice at once": len(doubles),
        "5xx (seen / API metrics)": f"{sum(n for s, n in stats.statuses.items() if s >= 500)} / {server_5xx}",
        "takeovers": len(waits),
        "takeover median / 90th percentile / max": (
            f"{median(waits)} / {statistics.quantiles(waits, n=10)[-1]:.2f} s / {max(waits):.2f} s"
            if len(waits) > 1 else "-"),
        "takeover median by the other worker / by the restarted namesake (count)": (
            f"{median([w for w, same in taken if not same])} ({sum(not same for _, same in taken)}) / "
            f"{median([w for w, same in taken if same])} ({sum(same for _, same in taken)})"),
        "create median / max": f"{median(creates)} / {max(creates):.2f} s" if creates else "-",
        "resize median": median(stats.durations["resize"]),
        "delete median": median(stats.durations["delete"]),
        "load average (1 min) min / median / max": (
            f"{min(watch.loads):.1f} / {statistics.median(watch.loads):.1f} / {max(watch.loads):.1f}"
            if watch.loads else "-"),
    }
    print()
    print(f"Soak: PostgreSQL, 1 API + 2 workers, swarm clusters on the local provider, {args.actors} actors")
    for key, value in figures.items():
        print(f"  {key}: {value}")
    print(f"  before (the issue's soak): takeover median {BEFORE['takeover median']} s, create median "
          f"{BEFORE['create median']} s, create max {BEFORE['create max']} s")
    details = [("stuck", stuck_clusters + stats.stuck + [f"task {t}" for t in left]),
               ("provider vs database", mismatches), ("leaked", [f"{k}: {v}" for k, v in leaked.items()]),
               ("RUNNING steps", steps), ("twice at once", doubles), ("5xx", stats.errors),
               ("failed tasks", [f"{a}: {e}" for a, _, e in failures]),
               ("actors", [f"actor {a.n}: {a.failure!r}" for a in actors if a.failure])]
    for title, lines in details:
        for line in lines[:20]:
            print(f"  {title}: {line}")
    ok = not (figures["stuck"] or mismatches or leaked or watch.persistent or zombies_quiet or zombies_end
              or orphans or steps or doubles or server_5xx or stats.errors
              or any(a.failure for a in actors))
    print(f"  result: {'PASS' if ok else 'FAIL'}")
    return ok


def interrupted(*_) -> None:
    raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the same clean-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=7.0)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--actors", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("soak: the local provider needs root")
    signal.signal(signal.SIGTERM, interrupted)
    admin = os.environ.get("JEROBOAM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1/postgres")
    name = f"jeroboam_soak_{uuid.uuid4().hex[:8]}"
    url = admin.rsplit("/", 1)[0] + "/" + name
    # short: unix socket paths under <data>/local must stay below 108 bytes
    data = Path(tempfile.mkdtemp(prefix="jbs-", dir="/tmp"))
    service = Service(data, url)
    ok = False
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(url, autocommit=True) as db:
            ok = run(args, service, db)
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # the clean-up runs to its end
            signal.signal(sig, signal.SIG_IGN)
        service.stop()
        if not ok:
            logs = Path(f"/tmp/jeroboam-soak-logs-{time.strftime('%Y%m%d-%H%M%S')}")
            logs.mkdir()
            for path in data.glob("*.log"):
                shutil.copy(path, logs)
            print(f"logs: {logs}", file=sys.stderr)
        provider = provider_of(data)
        if provider.state_dir.exists():
            provider.remove_leftovers([], [])
        shutil.rmtree(data, ignore_errors=True)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Cluster bench (issue 4, item 9): real swarms through the API, end to end, beside the bare
bash recipe of ../shared/notes/local-swarm (no API, no database) run in the same session.

Through `jeroboam serve` (SQLite, its own data directory, hence its own provider prefix), timed
from the request until the API shows the operation's end, polling every 20 ms:
  - create a 3-node cluster (1 manager + 2 workers) until CREATE_COMPLETE
  - delete it until the API answers 404
  - create a 10-node cluster (1 + 9) until CREATE_COMPLETE
  - resize a 3-node cluster to 10 nodes until UPDATE_COMPLETE
The bare recipe: `swarm-local.sh up 3` and `up 10` (parallel starts, 1 manager, its defaults),
each from a clean `down`, in its own state directory, bridge and free /24.
Kubernetes (coe kubernetes, binaries of scripts/build-kubernetes.sh), same service:
  - create 1 master + 2 workers until CREATE_COMPLETE (the driver's last step waits until
    every node is Ready and schedulable), with the median time of each step of the create task
  - delete it until the API answers 404
Medians of --runs (3) after one untimed warm-up of each. Everything made is removed at the end,
also on failure.

With ``--server-type vm``: the same clusters on QEMU virtual machines (Swarm 1 + 2 with
--coe swarm or all, Kubernetes 1 + 2 with --coe kubernetes or all; create until
CREATE_COMPLETE, delete until 404), --runs times, no warm-up (the node images are built before
the clock starts), with the acceleration the vm provider chose (KVM or TCG) printed beside.

    bash bench/clusters/run.sh [--runs 3] [--coe all|swarm|kubernetes] [--json out.json]
                               [--server-type local|vm]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(ROOT))

from jeroboam.infra.local import LocalProvider  # noqa: E402
from jeroboam.infra.local.resources import prefix_for  # noqa: E402
from jeroboam.infra.vm.provider import VmProvider  # noqa: E402

RECIPE = ROOT.parent / "shared" / "notes" / "local-swarm" / "swarm-local.sh"
TARGETS = {"create 3 nodes": 2.7, "create 10 nodes": 9.0, "delete 3 nodes": 5.0,
           "k8s create 1+2 nodes": 20.0, "k8s delete 1+2 nodes": 5.0}
VM_TARGETS = {"tcg": 30.0, "kvm": 10.0}  # Swarm create 1 + 2 on VMs, by acceleration
BARE_OF = {"create 3 nodes": "up 3", "create 10 nodes": "up 10"}
HEADERS = {"OpenStack-API-Version": "container-infra latest"}
POLL = 0.02


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Service:
    """`jeroboam serve` on a fresh data directory; stopped and cleaned by close()."""

    def __init__(self, data: Path):
        self.data = data
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "JEROBOAM_SERVER_LOG_LEVEL": "warning",
               "JEROBOAM_SERVER_ACCESS_LOG": "false"}
        self.log = open(data / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jeroboam.cli.main", "serve", "--data-dir", str(data),
             "--bind", f"127.0.0.1:{port}"], env=env, stdout=self.log, stderr=subprocess.STDOUT,
            cwd=ROOT)
        self.http = httpx.Client(base_url=self.url, headers=HEADERS, timeout=60)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.http.get("/healthcheck").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"jeroboam serve did not start; see {data / 'serve.log'}")
            time.sleep(0.1)

    def wait(self, uuid: str, done) -> float:
        """Seconds until done(status_code, body) holds; a failure ends the bench."""
        while True:
            reply = self.http.get(f"/v1/clusters/{uuid}")
            body = reply.json() if reply.status_code == 200 else {}
            if done(reply.status_code, body):
                return time.monotonic()
            if body.get("status", "").endswith("_FAILED"):
                raise RuntimeError(f"cluster {uuid}: {body['status']}: {body['status_reason']}")
            time.sleep(POLL)

    def create(self, name: str, node_count: int, template: str = "bench") -> tuple[str, float]:
        started = time.monotonic()
        reply = self.http.post("/v1/clusters", json={
            "name": name, "cluster_template_id": template, "master_count": 1,
            "node_count": node_count})
        assert reply.status_code == 202, reply.text
        uuid = reply.json()["uuid"]
        self.last_task = reply.headers["Location"].rsplit("/", 1)[1]
        return uuid, self.wait(uuid, lambda c, b: b.get("status") == "CREATE_COMPLETE") - started

    def template(self, name: str, coe: str, server_type: str = "local") -> None:
        reply = self.http.post("/v1/clustertemplates", json={
            "name": name, "coe": coe, "image_id": "jeroboam-node", "server_type": server_type})
        assert reply.status_code == 201, reply.text

    def steps(self, task: str) -> dict[str, float]:
        body = self.http.get(f"/v1/tasks/{task}").json()["task"]
        return {s["name"]: s["duration_seconds"] for s in body["steps"]}

    def resize(self, uuid: str, node_count: int) -> float:
        started = time.monotonic()
        reply = self.http.post(f"/v1/clusters/{uuid}/actions/resize",
                               json={"node_count": node_count})
        assert reply.status_code == 202, reply.text
        return self.wait(uuid, lambda c, b: b.get("status") == "UPDATE_COMPLETE") - started

    def delete(self, uuid: str) -> float:
        started = time.monotonic()
        reply = self.http.delete(f"/v1/clusters/{uuid}")
        assert reply.status_code == 204, reply.text
        return self.wait(uuid, lambda c, b: c == 404) - started

    def close(self) -> None:
        try:
            for cluster in self.http.get("/v1/clusters").json().get("clusters", []):
                self.delete(cluster["uuid"])
        finally:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
            for kind, cls in (("local", LocalProvider), ("vm", VmProvider)):
                state = str(self.data / kind)
                if os.path.isdir(state):  # else no node was ever made
                    cls(state, prefix=prefix_for(state)).remove_leftovers([], [])


def bench_service(runs: int, data: Path) -> dict[str, list[float]]:
    service = Service(data)
    times = {"create 3 nodes": [], "delete 3 nodes": [], "create 10 nodes": [],
             "resize 3 to 10 nodes": []}
    try:
        service.template("bench", "swarm-mode")
        for run in range(runs + 1):
            warm = run == 0  # the first builds the base image and warms the caches
            uuid, t_create3 = service.create(f"c3-{run}", 2)
            t_delete3 = service.delete(uuid)
            uuid, t_create10 = service.create(f"c10-{run}", 9)
            service.delete(uuid)
            uuid, _ = service.create(f"r-{run}", 2)
            t_resize = service.resize(uuid, 9)
            service.delete(uuid)
            log(f"api  run {run}{' (warm-up)' if warm else ''}: create 3 {t_create3:.2f} s, "
                f"delete 3 {t_delete3:.2f} s, create 10 {t_create10:.2f} s, "
                f"resize 3->10 {t_resize:.2f} s")
            if not warm:
                for key, value in (("create 3 nodes", t_create3), ("delete 3 nodes", t_delete3),
                                   ("create 10 nodes", t_create10),
                                   ("resize 3 to 10 nodes", t_resize)):
                    times[key].append(value)
    finally:
        service.close()
    return times


def steps_text(took: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in took.items())


def bench_kubernetes(runs: int, data: Path) -> tuple[dict[str, list[float]], dict]:
    service = Service(data)
    times = {"k8s create 1+2 nodes": [], "k8s delete 1+2 nodes": []}
    steps: dict[str, list[float]] = {}
    try:
        service.template("bench-k8s", "kubernetes")
        for run in range(runs + 1):
            warm = run == 0
            uuid, t_create = service.create(f"k-{run}", 2, "bench-k8s")
            took = service.steps(service.last_task)
            t_delete = service.delete(uuid)
            log(f"k8s  run {run}{' (warm-up)' if warm else ''}: create 1+2 {t_create:.2f} s "
                f"({steps_text(took)}), "
                f"delete {t_delete:.2f} s, load {os.getloadavg()[0]:.1f}")
            if not warm:
                times["k8s create 1+2 nodes"].append(t_create)
                times["k8s delete 1+2 nodes"].append(t_delete)
                for name, value in took.items():
                    steps.setdefault(name, []).append(value)
    finally:
        service.close()
    return times, {k: statistics.median(v) for k, v in steps.items()}


def bench_vm(runs: int, data: Path, coe: str) -> dict:
    """Swarm and/or Kubernetes 1 + 2 on VMs: create and delete times, with the acceleration."""
    build = ROOT / "scripts" / "build-vm-images.sh"
    subprocess.run(["bash", str(build)], check=True, stdout=subprocess.DEVNULL)
    service = Service(data)
    kinds = [(k, c) for k, c in (("swarm", "swarm-mode"), ("k8s", "kubernetes"))
             if coe in ("all", "kubernetes" if k == "k8s" else k)]
    times = {f"{k} {what} 1+2 nodes": [] for k, _ in kinds for what in ("create", "delete")}
    try:
        for kind, coe_name in kinds:
            service.template(f"bench-{kind}", coe_name, "vm")
            for run in range(runs):
                uuid, t_create = service.create(f"vm-{kind}-{run}", 2, f"bench-{kind}")
                took = service.steps(service.last_task)
                t_delete = service.delete(uuid)
                log(f"vm {kind} run {run}: create 1+2 {t_create:.2f} s ({steps_text(took)}), "
                    f"delete {t_delete:.2f} s (load {os.getloadavg()[0]:.1f})")
                times[f"{kind} create 1+2 nodes"].append(t_create)
                times[f"{kind} delete 1+2 nodes"].append(t_delete)
    finally:
        service.close()
    state = str(data / "vm")
    accel = VmProvider(state, prefix=prefix_for(state)).acceleration()
    print(f"\nClusters of 1 + 2 on VMs, acceleration {accel['accel']} ({accel['reason']}): "
          f"medians of {runs} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    for key, values in times.items():
        target = VM_TARGETS[accel["accel"]] if key == "swarm create 1+2 nodes" else None
        median = statistics.median(values)
        verdict = f" (target {target:g} s: {'ok' if median <= target else 'MISSED'})" \
            if target else ""
        print(f"{key}: {median:.1f} s{verdict}")
    return {"acceleration": accel["accel"], "reason": accel["reason"], "runs": times}


def free_24() -> str:
    """A /24 no host route covers (the recipe's own network; it holds .1, nodes .10 on)."""
    routes = json.loads(subprocess.run(["ip", "-4", "-j", "route", "show", "table", "all"],
                                       capture_output=True, text=True, check=True).stdout)
    taken = [ipaddress.ip_network(r["dst"], strict=False) for r in routes
             if r.get("dst", "default") != "default"]
    for net in ipaddress.ip_network("10.249.0.0/16").subnets(new_prefix=24):
        if not any(net.overlaps(t) for t in taken):
            return str(net.network_address).rsplit(".", 1)[0]
    raise RuntimeError("no free /24 in 10.249.0.0/16 for the bare recipe")


def bench_recipe(runs: int, data: Path) -> dict[str, list[float]]:
    env = {**os.environ, "LSW_BASE": str(data), "LSW_BR": "jbkbare0", "LSW_NET": free_24()}

    def recipe(*args: str) -> float:
        started = time.monotonic()
        out = subprocess.run(["bash", str(RECIPE), *args], env=env, capture_output=True,
                             text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"swarm-local.sh {' '.join(args)}: {out.stderr[-2000:]}")
        return time.monotonic() - started

    times = {"up 3": [], "up 10": []}
    try:
        for run in range(runs + 1):
            t3 = recipe("up", "3")
            recipe("down")
            t10 = recipe("up", "10")
            recipe("down")
            log(f"bare run {run}{' (warm-up)' if run == 0 else ''}: up 3 {t3:.2f} s, "
                f"up 10 {t10:.2f} s")
            if run:
                times["up 3"].append(t3)
                times["up 10"].append(t10)
    finally:
        recipe("down")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--coe", choices=("all", "swarm", "kubernetes"), default="all")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--server-type", choices=("local", "vm"), default="local")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the bench builds real swarms: run it as root")
    if args.server_type == "vm":
        work = Path(tempfile.mkdtemp(prefix="jbk-", dir="/tmp"))
        try:
            figures = bench_vm(args.runs, work, args.coe)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
        return 0
    # short paths: unix sockets under the state directories must stay below 108 bytes
    work = Path(tempfile.mkdtemp(prefix="jbk-", dir="/tmp"))
    load_before = os.getloadavg()[0]  # the machine is shared: figures say how loaded it was
    work.chmod(0o711)  # serve's API runs as [DEFAULT] api_user: it must reach the data directories
    api, bare, k8s, k8s_steps = {}, {}, {}, {}
    try:
        for sub in ("api", "bare", "k8s"):
            (work / sub).mkdir()
        if args.coe in ("all", "swarm"):
            api = bench_service(args.runs, work / "api")
            bare = bench_recipe(args.runs, work / "bare")
        if args.coe in ("all", "kubernetes"):
            k8s, k8s_steps = bench_kubernetes(args.runs, work / "k8s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    api.update(k8s)

    medians = {k: statistics.median(v) for k, v in {**api, **bare}.items()}
    print(f"\nClusters through the API vs the bare recipe: medians of {args.runs} "
          f"({os.cpu_count()} CPUs, load {load_before:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end)")
    print(f"{'operation':<22}{'API':>9}{'bare':>9}{'ratio':>8}{'target':>9}  verdict")
    for key in api:
        bare_key = BARE_OF.get(key)
        bare_s = f"{medians[bare_key]:.2f} s" if bare_key else "-"
        ratio = f"{medians[key] / medians[bare_key]:.2f}" if bare_key else "-"
        target = TARGETS.get(key)
        verdict = ("ok" if medians[key] <= target else "MISSED") if target else ""
        print(f"{key:<22}{medians[key]:>7.2f} s{bare_s:>9}{ratio:>8}"
              f"{f'{target:.1f} s' if target else '-':>9}  {verdict}")
    if k8s_steps:
        print("\nKubernetes create, median time of each task step (the API server starts "
              "during 'start nodes'):")
        for name, value in k8s_steps.items():
            print(f"  {name:<22}{value:>7.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": {**api, **bare}, "medians": medians,
                                               "kubernetes_create_steps": k8s_steps},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

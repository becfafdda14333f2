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
Medians of --runs (3) after one untimed warm-up of each. Everything made is removed at the end,
also on failure.

With ``--server-type vm``: Swarm 1 + 2 on QEMU virtual machines (create until CREATE_COMPLETE,
delete until 404), --runs times, no warm-up (the node images are built before the clock starts),
with the acceleration the vm provider chose (KVM or TCG) printed beside the figures.

    bash bench/clusters/run.sh [--runs 3] [--json out.json] [--server-type vm]
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
TARGETS = {"create 3 nodes": 2.7, "create 10 nodes": 9.0, "delete 3 nodes": 5.0}
VM_TARGETS = {"tcg": 30.0, "kvm": 10.0}  # create 1 + 2 on VMs, by acceleration
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

    def create(self, name: str, node_count: int) -> tuple[str, float]:
        started = time.monotonic()
        reply = self.http.post("/v1/clusters", json={
            "name": name, "cluster_template_id": "bench", "master_count": 1,
            "node_count": node_count})
        assert reply.status_code == 202, reply.text
        uuid = reply.json()["uuid"]
        return uuid, self.wait(uuid, lambda c, b: b.get("status") == "CREATE_COMPLETE") - started

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
        reply = service.http.post("/v1/clustertemplates", json={
            "name": "bench", "coe": "swarm-mode", "image_id": "jeroboam-node",
            "server_type": "local"})
        assert reply.status_code == 201, reply.text
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


def bench_vm(runs: int, data: Path) -> dict:
    """Swarm 1 + 2 on VMs: create and delete times, with the acceleration in use."""
    build = ROOT / "scripts" / "build-vm-images.sh"
    subprocess.run(["bash", str(build)], check=True, stdout=subprocess.DEVNULL)
    service = Service(data)
    times = {"create 3 nodes": [], "delete 3 nodes": []}
    try:
        reply = service.http.post("/v1/clustertemplates", json={
            "name": "bench", "coe": "swarm-mode", "image_id": "jeroboam-node",
            "server_type": "vm"})
        assert reply.status_code == 201, reply.text
        for run in range(runs):
            uuid, t_create = service.create(f"vm3-{run}", 2)
            t_delete = service.delete(uuid)
            log(f"vm run {run}: create 1+2 {t_create:.2f} s, delete {t_delete:.2f} s")
            times["create 3 nodes"].append(t_create)
            times["delete 3 nodes"].append(t_delete)
    finally:
        service.close()
    state = str(data / "vm")
    accel = VmProvider(state, prefix=prefix_for(state)).acceleration()
    target = VM_TARGETS[accel["accel"]]
    create = statistics.median(times["create 3 nodes"])
    print(f"\nSwarm 1 + 2 on VMs, acceleration {accel['accel']} ({accel['reason']}): medians "
          f"of {runs} ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    print(f"create 1+2 {create:.1f} s (target {target:g} s: "
          f"{'ok' if create <= target else 'MISSED'}), "
          f"delete {statistics.median(times['delete 3 nodes']):.1f} s")
    return {"acceleration": accel["accel"], "runs": times}


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
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--server-type", choices=("local", "vm"), default="local")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("the bench builds real swarms: run it as root")
    if args.server_type == "vm":
        work = Path(tempfile.mkdtemp(prefix="jbk-", dir="/tmp"))
        try:
            figures = bench_vm(args.runs, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
        return 0
    # short paths: unix sockets under the state directories must stay below 108 bytes
    work = Path(tempfile.mkdtemp(prefix="jbk-", dir="/tmp"))
    try:
        (work / "api").mkdir()
        (work / "bare").mkdir()
        api = bench_service(args.runs, work / "api")
        bare = bench_recipe(args.runs, work / "bare")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    medians = {k: statistics.median(v) for k, v in {**api, **bare}.items()}
    print(f"\nClusters through the API vs the bare recipe: medians of {args.runs} "
          f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})")
    print(f"{'operation':<22}{'API':>9}{'bare':>9}{'ratio':>8}{'target':>9}  verdict")
    for key in api:
        bare_key = BARE_OF.get(key)
        bare_s = f"{medians[bare_key]:.2f} s" if bare_key else "-"
        ratio = f"{medians[key] / medians[bare_key]:.2f}" if bare_key else "-"
        target = TARGETS.get(key)
        verdict = ("ok" if medians[key] <= target else "MISSED") if target else ""
        print(f"{key:<22}{medians[key]:>7.2f} s{bare_s:>9}{ratio:>8}"
              f"{f'{target:.1f} s' if target else '-':>9}  {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": {**api, **bare}, "medians": medians},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

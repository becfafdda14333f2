"""The containerized deployment: scripts/build-images.sh builds the image offline (debootstrap,
cached in /var/cache/jeroboam/images), scripts/deploy-containers.sh runs PostgreSQL, the API and
a worker as containers on a dockerd of their own, and a real swarm cluster is built and deleted
through that API. `down` must then leave nothing on the host.

The first build takes several minutes (debootstrap, Debian packages, wheels); later runs reuse
the cache. Set JEROBOAM_SKIP_IMAGE_TESTS=1 to skip these tests (CI runs them)."""

import os
import shutil
import subprocess
import tempfile
import time
from contextlib import closing
from pathlib import Path

import pytest

from jeroboam.cli.privsep import status
from jeroboam.infra.local import LocalProvider
from jeroboam.infra.local.resources import prefix_for
from tests.support import host_snapshot
from tests.support import Api, free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "scripts" / "deploy-containers.sh"
PROJECT = "default"


def docker(env: dict, *args: str) -> str:
    return subprocess.run(["docker", *args], env=env, capture_output=True, text=True, check=True).stdout.strip()


def alive(pid: int) -> bool:
    try:  # a zombie is dead too: its parent (here the init process) may not have reaped it yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def netns() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


@pytest.fixture(scope="module")
def deployment():
    if os.environ.get("JEROBOAM_SKIP_IMAGE_TESTS"):
        pytest.skip("JEROBOAM_SKIP_IMAGE_TESTS is set: container images are not built")
    if os.geteuid() != 0 or not all(shutil.which(c) for c in ("dockerd", "docker")):
        pytest.skip("building and running the images needs root, dockerd and docker (scripts/host-prereqs.sh)")
    # short: node sockets live under <deploy dir>/data/local
    deploy_dir = Path(tempfile.mkdtemp(prefix="jbc-", dir="/tmp"))
    env = {**os.environ, "JEROBOAM_DEPLOY_DIR": str(deploy_dir),
           "JEROBOAM_DEPLOY_API_PORT": str(free_port()), "JEROBOAM_DEPLOY_DB_PORT": str(free_port())}
    state = str(deploy_dir / "data" / "local")
    before = host_snapshot()
    dockerd = None
    try:
        up = subprocess.run(["bash", str(DEPLOY), "up"], env=env, capture_output=True, text=True, timeout=1800)
        assert up.returncode == 0, up.stdout + up.stderr
        url = up.stdout.strip().splitlines()[-1]
        dockerd = int((deploy_dir / "dockerd.pid").read_text())
        env["DOCKER_HOST"] = f"unix://{deploy_dir}/docker.sock"
        yield url, env, deploy_dir
    finally:
        down = subprocess.run(["bash", str(DEPLOY), "down"], env=env, capture_output=True, text=True, timeout=300)
        shutil.rmtree(deploy_dir, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr
    # nothing left: no dockerd, deploy dir or mount of theirs, no node netns, no route or
    # firewall rule of ours (other services' clusters come and go meanwhile: only ours count)
    assert dockerd is None or not alive(dockerd)
    assert not deploy_dir.exists()
    assert str(deploy_dir) not in Path("/proc/self/mounts").read_text()
    assert not any(n.startswith(prefix_for(state)) for n in netns())
    assert not list(Path("/sys/fs/cgroup").glob("*/jeroboam-ctr"))
    after = host_snapshot()
    for table in before:
        added = set(after[table].splitlines()) - set(before[table].splitlines())
        ours = [line for line in added if prefix_for(state) in line or "docker" in line.lower()]
        assert ours == [] and prefix_for(state) not in after[table], (table, ours)


def wait_ready(api: Api, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if api.get("/healthcheck").status_code == 200:
                return
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        time.sleep(0.5)
    raise TimeoutError("the containerized API never became healthy")


def test_three_containers_with_their_privileges(deployment):
    url, env, deploy_dir = deployment
    names = docker(env, "ps", "--format", "{{.Names}}").split()
    assert sorted(names) == ["jeroboam-api", "jeroboam-postgres", "jeroboam-worker"]
    # the API process: not root, no capability at all, cannot gain any
    api_pid = int(docker(env, "inspect", "-f", "{{.State.Pid}}", "jeroboam-api"))
    api_status = status(api_pid)
    assert api_status["Uid"].split()[0] != "0"
    assert int(api_status["CapEff"], 16) == 0 and int(api_status["CapBnd"], 16) == 0
    assert api_status["NoNewPrivs"] == "1"
    worker_pid = int(docker(env, "inspect", "-f", "{{.State.Pid}}", "jeroboam-worker"))
    assert status(worker_pid)["Uid"].split()[0] == "0"
    # the deploy dockerd added no interface of its own to the host
    assert "docker0" not in os.listdir("/sys/class/net")
    assert api_pid != worker_pid


def test_cluster_through_the_containerized_service(deployment):
    url, env, deploy_dir = deployment
    api = Api(url, project=PROJECT, user="u-ctr")
    wait_ready(api)
    template = api.template(name="swarm", image_id="jeroboam-node", server_type="local")
    uuid, task = api.cluster(template["uuid"], name="ctr", master_count=1, node_count=0)
    done = api.wait_task(task, timeout=600)
    assert done["state"] == "SUCCEEDED", done
    cluster = api.wait_cluster(uuid, ("CREATE_COMPLETE",), timeout=30)
    assert cluster["master_addresses"]
    state = str(deploy_dir / "data" / "local")

    # the node is real and on the host: its netns, and a swarm manager answering on its dockerd
    provider = LocalProvider(state, prefix=prefix_for(state))
    nodes = provider.nodes()
    assert len(nodes) == 1 and nodes[0].name in netns()
    with closing(nodes[0].client()) as client:
        swarm = client.api.nodes()
    assert [n["Status"]["State"] for n in swarm] == ["ready"]
    assert swarm[0]["Spec"]["Role"] == "manager"

    assert api.delete(f"/v1/clusters/{uuid}").status_code == 204
    api.wait_cluster(uuid, ("GONE",), timeout=300)
    assert provider.nodes() == [] and not any(n.startswith(prefix_for(state)) for n in netns())


def test_down_removes_a_cluster_left_running(deployment):
    """A cluster not deleted is host state; `down` (the fixture's teardown, which checks the
    host) removes its nodes too."""
    url, env, deploy_dir = deployment
    api = Api(url, project=PROJECT, user="u-ctr")
    uuid, task = api.cluster("swarm", name="left", master_count=1, node_count=0)
    assert api.wait_task(task, timeout=600)["state"] == "SUCCEEDED"
    state = str(deploy_dir / "data" / "local")
    assert any(n.startswith(prefix_for(state)) for n in netns())

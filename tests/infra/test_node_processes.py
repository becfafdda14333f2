"""What a driver can do on a node besides Docker: files, commands in its network namespace,
supervised processes with node-wide private mounts; and that no process of a node is ever a
child some worker must reap."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jeroboam.infra import InfraError, Mount, ProcessSpec, wait_until
from jeroboam.infra.local import NodeSpec
from jeroboam.infra.local import host
from jeroboam.pki import new_ca
from tests.support import zombies

NET = "proc-net"
SYSCTL = "/proc/sys/kernel/panic"


@pytest.fixture(scope="module")
def node(provider):
    spec = NodeSpec("proc-node", NET, hostname="procnode")
    try:
        provider.create_network(NET)
        [info] = provider.start_nodes([spec], new_ca("jbt-proc"))
        yield info
    finally:
        provider.destroy_nodes([provider.node_name(spec.node_id)])
        if provider.get_network(NET) is not None:
            provider.delete_network(NET)


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_files_stay_in_the_node_and_commands_run_in_its_netns(node):
    path = node.put_file("etc/app/conf", "x = 1\n", mode=0o640)
    assert path == node.path("etc/app/conf") and path.startswith(node.state_dir)
    assert Path(path).read_text() == "x = 1\n" and Path(path).stat().st_mode & 0o777 == 0o640
    with pytest.raises(InfraError, match="outside"):
        node.put_file("../../escape", "no")
    assert f"inet {node.address}/" in node.run(["ip", "-4", "-o", "addr", "show", "eth0"])
    assert "default" not in node.run(["ip", "route"])
    with pytest.raises(InfraError, match="run ip on procnode"):
        node.run(["ip", "link", "show", "no-such-link"])


def test_a_process_runs_in_the_node_with_node_wide_private_mounts(node):
    host_value = Path(SYSCTL).read_text()
    value = str(int(host_value) + 7)
    scratch = Path(node.path("scratch"))
    scratch.mkdir(parents=True, exist_ok=True)
    script = f"cat {SYSCTL}; hostname; cat /sys/class/net/eth0/address; exec sleep 600"
    spec = ProcessSpec("probe", ("sh", "-c", script), mounts=(
        Mount(SYSCTL, source=node.put_file("sysctl/panic", f"{value}\n")),
        Mount(str(scratch), type="tmpfs", options="size=1m")))
    pid = node.start_process(spec)
    try:
        assert node.process_pid("probe") == pid
        assert node.start_process(spec) == pid  # running already: nothing new
        log = Path(node.process_log("probe"))
        wait_until(lambda: len(log.read_text().split()) >= 3, 10, "probe output")
        lines = log.read_text().split()
        assert lines[:3] == [value, node.hostname, node.mac]
        # its parent is the node's supervisor, not this process
        assert parent(pid) != os.getpid()
        assert f"net:[{os.stat(host.NETNS_DIR / node.name).st_ino}]" == host.netns_id(pid)
        # the mounts are the node's: another process of the node sees them, the host does not
        other = node.start_process(ProcessSpec("other", ("sleep", "600")))
        for p in (pid, other):
            mounts = Path(f"/proc/{p}/mountinfo").read_text()
            assert f" {scratch} " in mounts and f" {SYSCTL} " in mounts
        assert str(scratch) not in host.mount_points()
        assert Path(SYSCTL).read_text() == host_value
        node.stop_process("other")
    finally:
        node.stop_process("probe")
    assert node.process_pid("probe") is None
    assert not host.is_live(pid) and not Path(f"/proc/{pid}").exists()  # reaped at once
    assert json.loads(Path(node.state_dir, "proc", "probe.exit").read_text())["status"] < 0


def test_restart_until_stopped(node):
    spec = ProcessSpec("flaky", ("sh", "-c", "echo started; exit 3"), restart=True)
    node.start_process(spec)
    log = Path(node.process_log("flaky"))
    wait_until(lambda: log.read_text().count("started") >= 2, 10, "restarted")
    node.stop_process("flaky")
    runs = log.read_text().count("started")
    time.sleep(1.5)  # longer than the restart delay
    assert log.read_text().count("started") == runs
    assert json.loads(Path(node.state_dir, "proc", "flaky.exit").read_text())["status"] == 3


def test_a_process_that_exited_can_be_started_again(node):
    first = node.start_process(ProcessSpec("once", ("sh", "-c", "sleep 0.2")))
    wait_until(lambda: node.process_pid("once") is None, 10, "exited")
    second = node.start_process(ProcessSpec("once", ("sleep", "600")))
    assert second != first and node.process_pid("once") == second
    node.stop_process("once")


def test_a_bad_process_is_an_error_naming_it(node):
    with pytest.raises(InfraError, match="start nope.*No such file"):
        node.start_process(ProcessSpec("nope", ("/no/such/binary",)))
    with pytest.raises(InfraError, match="start m.*mount"):
        node.start_process(ProcessSpec("m", ("true",), mounts=(Mount("/no/such/target",
                                                                     source="/tmp"),)))


def test_a_node_whose_supervisor_died_is_rebooted_when_adopted(provider, node):
    dockerd = provider._dockerd_pid(node)
    init = int(Path(node.state_dir, "proc", "init.pid").read_text().split()[0])
    os.kill(init, 9)
    wait_until(lambda: not host.is_live(init), 10, "supervisor dead")
    with pytest.raises(InfraError, match="supervisor does not answer"):
        node.start_process(ProcessSpec("late", ("sleep", "60")))
    assert provider.adopt([NET], [node.node_id]) == {node.node_id: node}
    provider.wait_nodes([node.name])
    assert provider._dockerd_pid(node) not in (None, dockerd) and not host.is_live(dockerd)
    assert node.start_process(ProcessSpec("late", ("sleep", "60"))) == node.process_pid("late")


WORKER = textwrap.dedent("""
    import sys
    from jeroboam.infra.local import LocalProvider, NodeSpec
    from jeroboam.pki import new_ca
    p = LocalProvider(sys.argv[1], prefix=sys.argv[2])
    if sys.argv[3] == "start":
        p.create_network("zombie-net")
        p.start_nodes([NodeSpec("zombie-node", "zombie-net")], new_ca("jbt-z"))
        print("started", flush=True)
        sys.stdin.read()  # stays alive until told
    else:
        p.destroy_nodes([p.node_name("zombie-node")])
        p.delete_network("zombie-net")
""")


def test_a_node_started_by_one_worker_and_deleted_by_another_leaves_no_zombie(provider):
    def worker(action: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", WORKER, str(provider.state_dir),
                                 provider.prefix, action], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
    a = worker("start")
    try:
        assert a.stdout.readline().strip() == "started"
        name = provider.node_name("zombie-node")
        node_pids = list(provider._processes_by_node({name}))
        assert len(node_pids) >= 3  # supervisor, dockerd, containerd
        assert not [p for p in node_pids if parent(p) == a.pid]
        b = worker("delete")
        assert b.wait(60) == 0
        assert a.poll() is None  # A still lives: nothing of the node may wait on it

        def left():
            zs = zombies()
            return [p for p in node_pids if Path(f"/proc/{p}").exists()] + \
                [p for p, pp in zs.items() if pp in (a.pid, b.pid)]
        # the supervisor was PID 1's child: PID 1 reaps it, some hosts only every few seconds
        wait_until(lambda: not left(), 15, "node processes gone", interval=0.2,
                   detail=lambda: str(left()))
    finally:
        a.communicate("", timeout=30)
        provider.destroy_nodes([provider.node_name("zombie-node")])
        if provider.get_network("zombie-net") is not None:
            provider.delete_network("zombie-net")

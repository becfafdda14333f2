"""The ``vm`` infrastructure provider: every node is a QEMU virtual machine with its own kernel.

Why QEMU directly and not libvirt (which the issue prefers), as tried on this kind of host
(Debian 12, libvirt 9.0, no systemd): libvirtd and virtlogd run when started by hand and do
boot a ``microvm`` domain with virtio-mmio disks, net and serial (once the domain turns ACPI
on and drops the USB controller and PCI balloon, else "No PCI buses available"), QEMU as
``libvirt-qemu`` with no capabilities under seccomp. But libvirtd starts QEMU in its own
network namespace, so a node's tap cannot sit in its cluster's namespace as here: the
isolation below would become bridges and firewall rules in the host's namespace, which every
installation on the host shares; and nothing here would supervise the two daemons. The QEMU
flags below give what libvirt's DAC and seccomp confinement give (unprivileged ``nobody``,
seccomp sandbox, no capabilities); :meth:`VmProvider._start` is the part a libvirt domain
would replace.

A *network* is a network namespace of the cluster's own holding a bridge (``br0``, the
cluster's gateway ``.1`` of a /24). The host reaches it over a veth pair: the host end routes
the /24 into the namespace, which forwards host-initiated traffic to the nodes and lets only
replies back out (iptables inside the namespace): a node reaches neither the host's services
nor another cluster's nodes. A *node* is a tap on that bridge, a qcow2 overlay on the shared
root image (scripts/build-vm-images.sh), a config disk (a tar: address, hostname, dockerd's
TLS certificate, the guest's init and agent) and one QEMU process, run in the namespace as
``nobody`` under seccomp, started by ``setsid --fork``: no worker is its parent and no zombie
is left (the host's init reaps it, as with the local provider's supervisors).

Inside, the guest runs the local provider's node supervisor (nodeinit.py) under a small agent
(agent.py) reached over virtio-serial: ``Node.run``, ``put_file``, ``start_process``... go
there; dockerd serves TLS on ``IP:2376`` and the host's clients use a client certificate from
the cluster CA. A restart (CA rotation, adoption) is a reboot of the VM on its overlay.

Acceleration: KVM only when a tiny guest actually boots under it within seconds (some hosts
have a /dev/kvm that stock kernels cannot use), else TCG; the choice and why are logged and
kept in ``accel.json`` (``provider.acceleration``).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

import docker

from jeroboam.infra.base import ProcessSpec
from jeroboam.infra.local import host
from jeroboam.infra.local.clients import tls_client
from jeroboam.infra.local.host import InfraError, wait_until
from jeroboam.infra.local.images import build_busybox_tar
from jeroboam.infra.local.provider import TLS_PORT, NetworkRecord, NodeRecord, NodeSpec, \
    NodeStore, _read_json, _write_json
from jeroboam.pki import KeyPair

LOG = logging.getLogger(__name__)

DEFAULT_STATE_DIR = "/var/lib/jeroboam/vm"
DEFAULT_IMAGES = "/var/cache/jeroboam/vm/v1"
BUILD_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "build-vm-images.sh"
# Apart from the local provider's pools, so that the two never race for one /24.
DEFAULT_ADDRESS_POOLS = ("10.252.0.0/16", "172.29.0.0/16")
NETWORK_TYPE = "Jeroboam::VM::Network"
NODE_TYPE = "Jeroboam::VM::Node"
HERE = Path(__file__).resolve().parent
NODEINIT = HERE.parent / "local" / "nodeinit.py"
GUEST_NODE_DIR = "/var/lib/jeroboam/node"  # the guest's supervisor directory (agent.NODE_DIR)
HOST_END = "169.254.0.1"  # the veth pair between the host and a network's namespace
NS_END = "169.254.0.2"
MEMORY_MB = 1024
# Two: under TCG a vCPU is a host thread, and one alone starved a Kubernetes master's
# control plane until kube-apiserver failed its own internal deadlines.
CPUS = 2
TB_SIZE_MB = 128  # TCG's translation cache: the default (1 GB) would double each VM's memory
KVM_TRIAL_TIMEOUT = 5.0
TCG_CLIENT_TIMEOUT = 30.0
QEMU = "qemu-system-x86_64"
# Every QEMU, the trial guest's too: it opens its files as root, then runs as nobody (no
# capabilities left) under a seccomp filter that denies new processes and old syscalls.
CONFINED = ("-runas", "nobody", "-sandbox", "on,obsolete=deny,spawn=deny,resourcecontrol=deny")

# The network namespace's forwarding: the host may open connections to nodes; nodes only answer
# (and talk among themselves on the bridge).
NETNS_FIREWALL = """*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
-A FORWARD -i br0 -o br0 -j ACCEPT
-A FORWARD -i up0 -o br0 -j ACCEPT
-A FORWARD -i br0 -o up0 -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
COMMIT
"""


@dataclass(frozen=True)
class VmNode(NodeRecord):
    """A vm node (its name is its VM's name)."""

    def _tls(self, name: str) -> str:
        return (Path(self.state_dir) / "tls" / name).read_text()

    def client(self, timeout: float = 30) -> docker.DockerClient:
        # a guest under TCG answers several times slower than a local node: the drivers'
        # timeouts (meant for those) get a floor here
        if self.provider.acceleration()["accel"] == "tcg":
            timeout = max(timeout, TCG_CLIENT_TIMEOUT)
        return self._client(timeout)

    def _client(self, timeout: float) -> docker.DockerClient:
        return tls_client(self.api_address, self._tls("ca.pem"),
                          KeyPair(self._tls("client-cert.pem"), self._tls("client-key.pem")),
                          timeout)

    def ping(self) -> bool:
        try:
            with closing(self._client(timeout=5)) as client:  # a TLS handshake under TCG
                return client.ping()
        except Exception:  # noqa: BLE001 (a ping never raises)
            return False

    def path(self, relative: str) -> str:
        files = Path(GUEST_NODE_DIR, "files")
        path = Path(os.path.normpath(files / relative))
        if not path.is_relative_to(files):
            raise InfraError("node files", f"{relative}: outside the node's files")
        return str(path)

    def put_file(self, relative: str, data: str | bytes, mode: int = 0o600) -> str:
        path = self.path(relative)
        raw = data.encode() if isinstance(data, str) else data
        self.provider.agent(self, {"op": "put", "path": path, "mode": mode,
                                   "data": base64.b64encode(raw).decode()}, 60, "put file")
        return path

    def run(self, argv: list[str], input: str | None = None, timeout: float = 30) -> str:
        step = f"run {argv[0]} on {self.hostname}"
        answer = self.provider.agent(self, {"op": "run", "argv": list(argv), "input": input,
                                            "timeout": timeout}, timeout + 15, step)
        if answer["rc"] != 0:
            raise InfraError(step, f"{' '.join(argv)}: "
                             f"{answer['stderr'].strip() or answer['rc']}")
        return answer["stdout"]

    def start_process(self, spec: ProcessSpec) -> int:
        return self.provider.agent(self, {"op": "start", "spec": asdict(spec)}, 60,
                                   f"start {spec.name}")["pid"]

    def stop_process(self, name: str, timeout: float = 10) -> None:
        self.provider.agent(self, {"op": "stop", "name": name, "timeout": timeout},
                            timeout + 20, f"stop {name}")

    def process_pid(self, name: str) -> int | None:
        """The PID in the guest (a guest process has no host PID)."""
        return self.provider.agent(self, {"op": "pid", "name": name}, 15, "process pid")["pid"]

    def process_log(self, name: str) -> str:
        """A host copy of the guest's log, fetched now."""
        answer = self.provider.agent(self, {"op": "read", "path": f"{GUEST_NODE_DIR}/{name}.log"},
                                     30, f"read log of {name}")
        path = Path(self.state_dir) / "logs" / f"{name}.log"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(base64.b64decode(answer["data"]))
        return str(path)

    def attributes(self) -> dict:
        return {**super().attributes(), "acceleration": self.provider.acceleration()["accel"]}


def _digest(kind: str, ident: str) -> str:
    return hashlib.sha256(f"{kind}:{ident}".encode()).hexdigest()


def _node_mac(network_id: str, address: str) -> str:
    # a function of the address, as on local nodes: ARP caches stay right when nodes come back
    digest = _digest("network", network_id)
    octets = ipaddress.ip_address(address).packed[1:]
    return f"52:{digest[0:2]}:{digest[2:4]}:" + ":".join(f"{o:02x}" for o in octets)


def _host_khz() -> int:
    """The host's TSC rate: given to the guest kernel, whose own calibration hangs under TCG
    now and then."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return int(float(line.split(":")[1]) * 1000)
    return 0


class VmProvider(NodeStore):
    server_type = "vm"
    network_type = NETWORK_TYPE
    node_type = NODE_TYPE
    network_info = NetworkRecord
    node_info = VmNode
    start_timeout = 240
    wait_interval = 0.5  # a check is a TLS handshake with a guest under TCG
    client_cert = True

    def __init__(self, state_dir: str = DEFAULT_STATE_DIR, *, prefix: str = "jv",
                 images_dir: str = DEFAULT_IMAGES, address_pools: tuple[str, ...] | None = None,
                 memory_mb: int = MEMORY_MB, cpus: int = CPUS):
        super().__init__(state_dir, prefix, address_pools or DEFAULT_ADDRESS_POOLS)
        self.images_dir = Path(images_dir)
        self.memory_mb = memory_mb
        self.cpus = cpus
        self._netns_re = re.compile(rf"{prefix}n([0-9a-f]{{10}})")
        self._veth_re = re.compile(rf"{prefix}h([0-9a-f]{{10}})")
        self._setup_lock = threading.Lock()
        self._accel: dict | None = None

    @classmethod
    def from_settings(cls, settings) -> VmProvider:
        from .resources import configure
        return configure(settings)

    # --- set-up ------------------------------------------------------------------------

    def setup(self) -> None:
        """Check the tools, build the node images (cached), choose the acceleration."""
        with self._setup_lock:  # concurrent tasks' first nodes: one trial boot, not several
            if self._set_up:
                return
            missing = [c for c in (QEMU, "qemu-img", "ip", "iptables-restore", "nsenter")
                       if shutil.which(c) is None]
            if missing or not (self.images_dir / "VERSION").exists():
                self.build_images()
            # node keys and disks: root's alone (QEMU opens them before it drops to nobody)
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.state_dir.chmod(0o700)
            for sub in ("nodes", "networks", "images"):
                (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
            build_busybox_tar(Path(self.base_image.path))
            self.acceleration()
            self._set_up = True

    def build_images(self) -> None:
        """Run scripts/build-vm-images.sh (idempotent; minutes the first time)."""
        env = {**os.environ, "JEROBOAM_VM_IMAGES": str(self.images_dir)}
        proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                              env=env, timeout=3600)
        if proc.returncode != 0:
            raise InfraError("build vm images", proc.stderr.strip()[-500:])

    @property
    def image_id(self) -> str:
        """What the nodes boot: the images' VERSION file in one line."""
        return " ".join((self.images_dir / "VERSION").read_text().split())

    def has_state(self) -> bool:
        return self.state_dir.exists()

    def status(self) -> dict[str, str]:
        if not (self.images_dir / "VERSION").exists():
            # the trial boot needs the guest kernel: choosing now would choose TCG for nothing
            return {"images": f"not built yet in {self.images_dir} (the first node builds them)",
                    "acceleration": "chosen once the images are built"}
        accel = self.acceleration()
        return {"images": self.image_id, "acceleration": f"{accel['accel']} ({accel['reason']})"}

    def acceleration(self) -> dict:
        """{"accel": "kvm"|"tcg", "reason": ...}: KVM when a tiny guest boots with it within
        KVM_TRIAL_TIMEOUT s. Kept per host boot in accel.json (the trial costs seconds)."""
        if self._accel is not None:
            return self._accel
        path = self.state_dir / "accel.json"
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        known = _read_json(path)
        if known and known.get("boot_id") == boot_id:
            self._accel = known
            return known
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            choice = {"accel": "tcg", "reason": "no usable /dev/kvm"}
        else:
            took = self._trial_boot("kvm")
            choice = {"accel": "kvm", "reason": f"a trial guest booted in {took:.1f} s"} \
                if took is not None else \
                {"accel": "tcg", "reason": f"/dev/kvm is there but a trial guest did not boot "
                                           f"under KVM within {KVM_TRIAL_TIMEOUT:g} s"}
        LOG.warning("vm provider: acceleration %s (%s)", choice["accel"], choice["reason"])
        choice["boot_id"] = boot_id
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_json(path, choice)
        self._accel = choice
        return choice

    def _trial_boot(self, accel: str) -> float | None:
        """Seconds until the guest kernel runs the initramfs's init, or None."""
        argv = [QEMU, *self._machine_argv(accel), *CONFINED, "-serial", "stdio",
                "-append", self._cmdline(quiet=False)]
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL)
        try:
            os.set_blocking(proc.stdout.fileno(), False)
            seen = b""
            while time.monotonic() - started < KVM_TRIAL_TIMEOUT and proc.poll() is None:
                seen += proc.stdout.read() or b""
                if b"Run /init as init process" in seen:
                    return time.monotonic() - started
                time.sleep(0.05)
            return None
        finally:
            proc.kill()
            proc.wait()

    @property
    def time_scale(self) -> float:
        # measured here under TCG: a guest's dockerd answers about 5 times slower than a local
        # node's, a Kubernetes control plane comes up 10 to 20 times slower (kube-apiserver
        # ready after 200-400 s, 21 s on local nodes): the larger, or its API wait runs out
        return 10.0 if self.acceleration()["accel"] == "tcg" else 1.5

    def _machine_argv(self, accel: str) -> list[str]:
        cpu = ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else \
            ["-accel", f"tcg,tb-size={TB_SIZE_MB}", "-cpu", "max"]
        return [*cpu, "-M", "microvm", "-m", str(self.memory_mb), "-smp", str(self.cpus),
                "-nodefaults",
                "-no-user-config", "-display", "none", "-no-reboot",
                "-kernel", str(self.images_dir / "vmlinuz"),
                "-initrd", str(self.images_dir / "initrd.img")]

    @staticmethod
    def _cmdline(quiet: bool = True) -> str:
        khz = _host_khz()
        return " ".join(["console=ttyS0", "panic=-1", "tsc=reliable",
                         *([f"tsc_early_khz={khz}"] if khz else []),
                         *(["quiet"] if quiet else [])])

    # --- names -------------------------------------------------------------------------

    def network_name(self, network_id: str) -> str:
        return f"{self.prefix}n{_digest('network', network_id)[:10]}"

    def _veth(self, network_name: str) -> str:
        return f"{self.prefix}h{network_name[len(self.prefix) + 1:]}"

    @staticmethod
    def _tap(node_name: str) -> str:
        return "t" + node_name.split("-", 1)[1]

    # --- networks ----------------------------------------------------------------------

    def _new_network(self, network_id: str, name: str, net) -> NetworkRecord:
        return NetworkRecord(network_id, name, str(net), str(net[1]))

    def _network_present(self, name: str) -> bool:
        return (host.NETNS_DIR / name).exists()

    def _ensure_network(self, info: NetworkRecord) -> None:
        """Create what is missing of the network's namespace (bridge, firewall) and of the
        veth pair and route joining the host to it."""
        veth = self._veth(info.name)
        enter = ["nsenter", f"--net={host.NETNS_DIR / info.name}"]
        if not (host.NETNS_DIR / info.name).exists():
            with self._lock:  # concurrent first `ip netns add`s stack /run/netns mounts
                host.run(["ip", "netns", "add", info.name], "create network namespace")
            _ip_batch(info.name, ["link add br0 type bridge",
                                  f"addr add {info.gateway}/{info.prefixlen} dev br0",
                                  "link set br0 up", "link set lo up"], "create bridge")
            host.run([*enter, "sysctl", "-qw", "net.ipv4.ip_forward=1"], "network forwarding")
            host.run([*enter, "iptables-restore"], "network firewall", input=NETNS_FIREWALL)
        if not host.link_exists(veth):
            if _ns_link_exists(info.name, "up0"):  # half of a pair whose host end went
                _ip_batch(info.name, ["link del up0"], "remove half a veth pair")
            host.ip_batch([f"link add {veth} type veth peer name up0 netns {info.name}",
                           f"addr add {HOST_END}/32 dev {veth}", f"link set {veth} up"],
                          f"join the host to {info.name}")
            _ip_batch(info.name, [f"addr add {NS_END}/32 dev up0", "link set up0 up",
                                  f"route add {HOST_END}/32 dev up0",
                                  f"route add default via {HOST_END} dev up0"], "route out")
            host.run(["ip", "route", "replace", info.subnet, "via", NS_END, "dev", veth,
                      "onlink"], f"route to {info.name}")

    def _remove_network(self, name: str) -> None:
        # the namespace takes its bridge, the taps and the veth pair (hence the route) along
        if (host.NETNS_DIR / name).exists():
            host.run(["ip", "netns", "del", name], "delete network namespace")
        # the host end goes with the namespace's, a moment later
        wait_until(lambda: not host.link_exists(self._veth(name)) or
                   subprocess.run(["ip", "link", "del", self._veth(name)],
                                  capture_output=True).returncode == 0, 10, "delete veth")
        (self.state_dir / "networks" / f"{name}.json").unlink(missing_ok=True)

    # --- nodes: create -----------------------------------------------------------------

    def _check_running(self, info: VmNode) -> None:
        if self._qemu_pid(info.name) is None:
            raise InfraError("start node", f"{info.name}: the VM stopped: "
                             f"{self._console_tail(info.name)}")

    def _start_detail(self, name: str) -> str:
        return self._console_tail(name)

    def node_running(self, name: str) -> bool:
        return self._qemu_pid(name) is not None

    def _allocate_node(self, spec: NodeSpec, name: str, ca: KeyPair) -> VmNode:
        hostname, address = self._hostname_and_address(spec, name)
        d = self._node_dir(name)
        info = VmNode(spec.node_id, name, spec.network_id, hostname, address,
                      _node_mac(spec.network_id, address), str(d), tuple(spec.images), self)
        (d / "tls").mkdir(parents=True, exist_ok=True, mode=0o700)
        self._write_tls(info, ca)
        self._save_node(info)
        return info

    def _config_disk(self, info: VmNode, net: NetworkRecord) -> Path:
        """The node's config disk: a tar the initramfs unpacks into the guest's /run/jeroboam."""
        tls = Path(info.state_dir) / "tls"
        guest_tls = "/run/jeroboam/tls"
        dockerd = ProcessSpec("dockerd", (
            "dockerd", "-H", "unix:///run/docker.sock", "-H", f"tcp://{info.address}:{TLS_PORT}",
            "--tlsverify", "--tlscacert", f"{guest_tls}/ca.pem",
            "--tlscert", f"{guest_tls}/server-cert.pem", "--tlskey", f"{guest_tls}/server-key.pem",
            "--containerd", "/run/containerd/containerd.sock",
            "--cgroup-parent", info.cgroup_parent,
            "--swarm-default-advertise-addr", info.address,
            "--log-level", "warn", "--shutdown-timeout", "3"),
            env={"DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"},
            # under TCG on a busy host dockerd may give up waiting for containerd: it tries again
            restart=True)
        # a containerd of its own, not dockerd's child: dockerd gives its own child only
        # seconds to start, too few under TCG on a busy host
        containerd = ProcessSpec("containerd", ("containerd",), restart=True)
        env = (f"HOSTNAME={info.hostname}\nADDRESS={info.address}\n"
               f"PREFIXLEN={net.prefixlen}\nGATEWAY={net.gateway}\n")
        files = [("node.env", env.encode(), 0o644),
                 ("containerd.json", json.dumps(asdict(containerd)).encode(), 0o644),
                 ("dockerd.json", json.dumps(asdict(dockerd)).encode(), 0o644),
                 ("init", (HERE / "guest-init.sh").read_bytes(), 0o755),
                 ("agent.py", (HERE / "agent.py").read_bytes(), 0o644),
                 ("nodeinit.py", NODEINIT.read_bytes(), 0o644)]
        files += [(f"tls/{n}", (tls / n).read_bytes(), 0o600)
                  for n in ("ca.pem", "server-cert.pem", "server-key.pem")]
        path = Path(info.state_dir) / "config.tar"
        with tarfile.open(path.with_suffix(".tmp"), "w", format=tarfile.USTAR_FORMAT) as tar:
            for fname, data, mode in files:
                member = tarfile.TarInfo(fname)
                member.size, member.mode = len(data), mode
                tar.addfile(member, io.BytesIO(data))
        os.replace(path.with_suffix(".tmp"), path)
        return path

    def _start(self, info: VmNode) -> None:
        with self._node_lock(info.name):
            if self._qemu_pid(info.name) is not None:
                return
            net = self.get_network(info.network_id)
            if net is None:
                raise InfraError("start node", f"network {info.network_id} does not exist")
            self._ensure_network(net)
            d = Path(info.state_dir)
            overlay = d / "overlay.qcow2"
            if not overlay.exists():
                host.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                          "-b", str((self.images_dir / "rootfs.img").resolve()),
                          str(overlay.with_suffix(".tmp"))],
                         "create overlay")
                os.replace(overlay.with_suffix(".tmp"), overlay)
            config = self._config_disk(info, net)
            tap = self._tap(info.name)
            ns = host.NETNS_DIR / net.name
            if _ns_link_exists(net.name, tap):  # left by a VM that died
                host.run(["ip", "-n", net.name, "link", "del", tap], "remove old tap")
            _ip_batch(net.name, [f"tuntap add dev {tap} mode tap",
                                 f"link set {tap} master br0 up"], f"tap of {info.name}")
            for stale in ("qemu.pid", "agent.sock", "agent.up"):
                (d / stale).unlink(missing_ok=True)
            accel = self.acceleration()["accel"]
            argv = ["nsenter", f"--net={ns}", QEMU, "-name", f"{info.name},process={info.name}",
                    *self._machine_argv(accel),
                    "-append", self._cmdline(),
                    "-serial", f"file:{d / 'console.log'}",
                    "-drive", f"file={overlay},format=qcow2,if=none,id=root,discard=unmap",
                    "-device", "virtio-blk-device,drive=root",
                    "-drive", f"file={config},format=raw,if=none,id=config,readonly=on",
                    "-device", "virtio-blk-device,drive=config",
                    "-netdev", f"tap,id=net0,ifname={tap},script=no,downscript=no",
                    "-device", f"virtio-net-device,netdev=net0,mac={info.mac}",
                    "-chardev", f"socket,id=agent,path={d / 'agent.sock'},server=on,wait=off",
                    # the guest hands the pages it frees back to the host
                    "-device", "virtio-balloon-device,free-page-reporting=on",
                    "-device", "virtio-serial-device",
                    "-device", "virtserialport,chardev=agent,name=org.jeroboam.agent",
                    *CONFINED,
                    "-pidfile", str(d / "qemu.pid")]
            # `setsid --fork`: QEMU is no worker's child (its own -daemonize forks after the
            # seccomp filter that denies forking is in place)
            with open(d / "qemu.log", "wb") as log:
                subprocess.run(["setsid", "--fork", *argv], stdin=subprocess.DEVNULL,
                               stdout=log, stderr=log, check=True)
            wait_until(lambda: (d / "agent.sock").exists() or self._qemu_log(d), 30,
                       f"start VM {info.name}")
            if not (d / "agent.sock").exists():
                raise InfraError("start VM", f"{info.name}: {self._qemu_log(d)}")

    @staticmethod
    def _qemu_log(d: Path) -> str:
        """QEMU's complaint, if it wrote one (it exits then)."""
        try:
            return (d / "qemu.log").read_text(errors="replace").strip()
        except FileNotFoundError:
            return ""

    def _qemu_pid(self, name: str) -> int | None:
        try:
            pid = int((self._node_dir(name) / "qemu.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if host.is_live(pid) and self._node_of(pid) == name else None

    def _node_of(self, pid: int) -> str | None:
        """The node whose QEMU ``pid`` is (by its -name), or None."""
        argv = host.cmdline(pid)
        if not argv or os.path.basename(argv[0]) != QEMU or "-name" not in argv:
            return None
        name = argv[argv.index("-name") + 1].split(",")[0]
        return name if self._node_re.fullmatch(name) and \
            str(self._node_dir(name)) in " ".join(argv) else None

    def _console_tail(self, name: str) -> str:
        try:
            text = (self._node_dir(name) / "console.log").read_text(errors="replace")
        except FileNotFoundError:
            return "no console output"
        return " | ".join(text.strip().splitlines()[-3:])

    # --- the guest agent ---------------------------------------------------------------

    def agent(self, info: VmNode, request: dict, timeout: float, step: str) -> dict:
        """One request to the node's agent (virtio-serial, one host connection at a time).
        Until the agent first answers after a boot, a request waits for the guest to boot (a
        driver may act on a node as soon as its VM runs)."""
        request = {**request, "id": uuid.uuid4().hex}
        up = Path(info.state_dir) / "agent.up"
        booting = not up.exists()
        deadline = time.monotonic() + max(timeout, self.start_timeout if booting else 0)
        try:
            with open(Path(info.state_dir) / "agent.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    self._connect(info, s, deadline if booting else time.monotonic())
                    s.settimeout(max(deadline - time.monotonic(), 1))
                    s.sendall(json.dumps(request).encode() + b"\n")
                    with s.makefile("rb") as f:
                        while time.monotonic() < deadline:
                            line = f.readline()
                            if not line:
                                break
                            try:
                                answer = json.loads(line)
                            except ValueError:
                                continue
                            if answer.get("id") == request["id"]:
                                break
                        else:
                            answer = {}
        except OSError as exc:
            raise InfraError(step, f"{info.hostname}: the node's agent does not answer "
                             f"({exc})") from None
        if not answer or "error" in answer:
            raise InfraError(step, f"{info.hostname}: {answer.get('error', 'no answer')}")
        if booting:
            up.touch()
        return answer

    def _connect(self, info: VmNode, s: socket.socket, deadline: float) -> None:
        """Connect to the agent's socket, which QEMU makes as it starts: until ``deadline``
        while the VM runs."""
        while True:
            try:
                return s.connect(f"{info.state_dir}/agent.sock")
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() >= deadline or self._qemu_pid(info.name) is None:
                    raise
                time.sleep(0.2)

    # --- nodes: restart, delete --------------------------------------------------------

    def stop_node(self, name: str, timeout: float = 20) -> None:
        """Power the VM off (its overlay stays)."""
        with self._node_lock(name):
            pid = self._qemu_pid(name)
            if pid is not None:
                host.kill([pid])
                wait_until(lambda: self._qemu_pid(name) is None, timeout, f"stop VM {name}",
                           interval=0.1)

    def delete_node(self, name: str) -> None:
        """Begin deleting: kill the VM, remove its tap. Poll :meth:`check_node_delete`."""
        with self._node_lock(name):
            host.kill(self._processes(name))
            info = self._load_node(name)
            net = self.get_network(info.network_id) if info else None
            if net is not None and _ns_link_exists(net.name, self._tap(name)):
                host.run(["ip", "-n", net.name, "link", "del", self._tap(name)], "delete tap")

    def check_node_delete(self, name: str) -> bool:
        with self._node_lock(name):
            pids = self._processes(name)
            if pids:
                host.kill(pids)
                return False
            shutil.rmtree(self._node_dir(name), ignore_errors=True)
            return not self._node_dir(name).exists()

    def destroy_nodes(self, names: list[str], timeout: float = 30) -> None:
        for name in names:
            self.delete_node(name)
        wait_until(lambda: all([self.check_node_delete(n) for n in names]), timeout,
                   "delete nodes", interval=0.1)

    def _processes_by_node(self) -> dict[int, str]:
        """Live QEMU processes of our nodes -> node name."""
        return {pid: name for pid in host.pids()
                if (name := self._node_of(pid)) is not None and host.is_live(pid)}

    def _processes(self, name: str) -> list[int]:
        return [p for p, n in self._processes_by_node().items() if n == name]

    # --- restart safety ----------------------------------------------------------------

    def _nodes_on_host(self) -> set[str]:
        return set(self._processes_by_node().values())

    def _networks_on_host(self) -> set[str]:
        nets = {n for n in host.netns_names() if self._netns_re.fullmatch(n)}
        return nets | {f"{self.prefix}n{m.group(1)}" for link in host.links()
                       if (m := self._veth_re.fullmatch(link))}

    def inventory(self) -> dict[str, list[str]]:
        """What this provider has on the host, for leak checks."""
        return {
            "netns": [n for n in host.netns_names() if self._netns_re.fullmatch(n)],
            "links": [link for link in host.links() if self._veth_re.fullmatch(link)],
            "processes": sorted(f"{pid} {name}"
                                for pid, name in self._processes_by_node().items()),
            "state": sorted(f"{sub}/{p.name}" for sub in ("nodes", "networks")
                            for p in (self.state_dir / sub).glob("*")),
        }


def _ns_link_exists(netns: str, link: str) -> bool:
    return subprocess.run(["ip", "-n", netns, "link", "show", link], capture_output=True
                          ).returncode == 0


def _ip_batch(netns: str, commands: list[str], step: str) -> None:
    host.run(["ip", "-n", netns, "-batch", "-"], step, input="\n".join(commands) + "\n")

"""The ``local`` infrastructure provider.

A *network* is a Linux bridge on the host with its own /24 (the host holds ``.1``). A *node* is
a network namespace joined to that bridge by a veth with a fixed MAC, plus private mount and UTS
namespaces running a dockerd of its own (own data-root, exec-root, /etc/docker,
/run/containerd and cgroup parent) that serves TLS on ``IP:2376`` and a unix socket for us.
The node's first process is its supervisor (nodeinit.py): it holds the namespaces, starts
dockerd and whatever else a driver asks for, and reaps them, so no worker process is the
parent of any node process.

Names are derived from the caller's ids, so a create retried after a crash finds what the first
attempt made. Every create/delete comes as a quick call plus a ``check_*`` poll, the shape the
orchestration engine's resources need; ``start_nodes``/``destroy_node`` wrap them with waits.
"""

from __future__ import annotations

import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import docker

from jeroboam.infra.base import Node, ProcessSpec, Provider
from jeroboam.pki import KeyPair, issue_client_cert, issue_server_cert

from . import host
from .clients import ping, socket_client
from .host import InfraError, InfraTimeout, wait_until
from .images import BASE_IMAGE, ImageTarball, build_busybox_tar, ensure_images

DEFAULT_STATE_DIR = "/var/lib/jeroboam/local"
# Candidates for the networks' /24s; a /24 overlapping any host route is skipped.
DEFAULT_ADDRESS_POOLS = ("10.251.0.0/16", "172.30.0.0/16", "192.168.240.0/20")
TLS_PORT = 2376
FIRST_NODE_HOST = 10  # node addresses start at .10 of their /24
REQUIRED_COMMANDS = ("dockerd", "containerd", "runc", "nsenter", "unshare", "ip", "iptables",
                     "mount", "umount", "hostname", "busybox")
DOCKERD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_UNIX_PATH = 107
NETWORK_TYPE = "Jeroboam::Local::Network"
NODE_TYPE = "Jeroboam::Local::Node"
NODEINIT = str(Path(__file__).with_name("nodeinit.py"))

# Runs inside the node's fresh mount and UTS namespaces, already in its netns; execs the
# node's supervisor (nodeinit.py), which starts dockerd.
NODE_INIT = r"""
set -e
dir=$1 host=$2 addr=$3
shift 3
# done here rather than by the provider: it runs in parallel with the other nodes' starts
printf 'addr replace %s dev eth0\nlink set eth0 up\nlink set lo up\n' "$addr" | ip -batch -
# A sysfs of this netns (libnetwork reads /sys/class/net), with the host's cgroup hierarchies
# moved back on top: `ip netns exec` would drop them and dockerd needs the v1 devices cgroup.
mount --rbind /sys/fs/cgroup "$dir/cgroup"
mount -t sysfs sysfs /sys
mount --move "$dir/cgroup" /sys/fs/cgroup
# Our copies of the other nodes' /run/netns mounts would keep their netns alive after deletion.
umount -l /run/netns 2>/dev/null || :
# Own key.json, hence own engine ID.
mount --bind "$dir/etc-docker" /etc/docker
# dockerd would use (and share) a system containerd whose socket it finds here, and shims of
# all nodes would put their sockets in one directory.
mount -t tmpfs -o mode=0711,size=16m tmpfs /run/containerd
hostname "$host"
exec "$@"
"""


@dataclass(frozen=True)
class NetworkRecord:
    """A network as a provider keeping records (NodeStore) knows it."""

    network_id: str
    name: str  # the resource's physical id
    subnet: str
    gateway: str

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen


@dataclass(frozen=True)
class NetworkInfo(NetworkRecord):
    """A local network (its name is its bridge's)."""

    mac: str


@dataclass(frozen=True)
class NodeSpec:
    node_id: str
    network_id: str
    hostname: str | None = None  # defaults to the node's name
    images: tuple[ImageTarball, ...] = ()  # besides the base image


@dataclass(frozen=True)
class NodeRecord(Node):
    """A node as a provider keeping records (NodeStore) knows it; its provider does the rest."""

    node_id: str
    name: str  # the resource's physical id
    network_id: str
    hostname: str
    address: str
    mac: str
    state_dir: str
    images: tuple[ImageTarball, ...] = field(default=())
    provider: Provider | None = field(default=None, compare=False, repr=False)

    @property
    def api_address(self) -> str:
        return f"tcp://{self.address}:{TLS_PORT}"

    @property
    def cgroup_parent(self) -> str:
        return f"/{self.name}"

    def attributes(self) -> dict:
        return {"name": self.name, "hostname": self.hostname, "address": self.address,
                "api_address": self.api_address, "mac": self.mac}


@dataclass(frozen=True)
class NodeInfo(NodeRecord):
    """A local node (its name is its netns's name and its cgroup parent)."""

    @property
    def socket_path(self) -> str:
        return f"{self.state_dir}/docker.sock"

    def client(self, timeout: float = 30) -> docker.DockerClient:
        """An SDK client on the node's unix socket (close it after use)."""
        return socket_client(self.socket_path, timeout)

    def ping(self) -> bool:
        return ping(self.socket_path)

    def path(self, relative: str) -> str:
        files = Path(self.state_dir, "files")
        path = (files / relative).resolve()
        if not path.is_relative_to(files):
            raise InfraError("node files", f"{relative}: outside the node's files")
        return str(path)

    def put_file(self, relative: str, data: str | bytes, mode: int = 0o600) -> str:
        path = Path(self.path(relative))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with open(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, mode)  # whatever the umask
        os.replace(tmp, path)
        return str(path)

    def run(self, argv: list[str], input: str | None = None, timeout: float = 30) -> str:
        return host.run(["nsenter", f"--net={host.NETNS_DIR / self.name}", "--", *argv],
                        f"run {argv[0]} on {self.hostname}", input=input, timeout=timeout)

    def start_process(self, spec: ProcessSpec) -> int:
        return self.provider.start_process(self, spec)

    def stop_process(self, name: str, timeout: float = 10) -> None:
        self.provider.stop_process(self, name, timeout)

    def process_pid(self, name: str) -> int | None:
        return _process_pid(self.state_dir, name)

    def process_log(self, name: str) -> str:
        return f"{self.state_dir}/{name}.log"



def scoped(stack_id: str, ident: str) -> str:
    """The provider's id of a stack's network or node: ids a template chose, within its stack."""
    return f"{stack_id}/{ident}"


def _digest(kind: str, ident: str) -> str:
    return hashlib.sha256(f"{kind}:{ident}".encode()).hexdigest()


def _bridge_mac(network_id: str) -> str:
    # fixed: by default a bridge takes the lowest MAC of its ports, changing as nodes come and go
    digest = _digest("network", network_id)
    return "02:" + ":".join(digest[i:i + 2] for i in range(0, 10, 2))


def _node_mac(network_id: str, address: str) -> str:
    # A function of the address: whichever node gets an address later, the host's and the
    # peers' ARP caches stay right (a new MAC behind an old IP stalled swarm joins 10-30 s).
    digest = _digest("network", network_id)
    octets = ipaddress.ip_address(address).packed[1:]
    return f"06:{digest[0:2]}:{digest[2:4]}:" + ":".join(f"{o:02x}" for o in octets)


class NodeStore(Provider):
    """What providers keeping their networks and nodes as JSON files in a state directory
    share: names, locks, records, address allocation, create/adopt. A subclass sets
    ``network_info``/``node_info`` (the dataclasses of its records) and brings
    ``_new_network``, ``_ensure_network``, ``_network_present``, ``_remove_network``,
    ``_networks_on_host``, ``_allocate_node``, ``_start``, ``_check_running``, ``stop_node``,
    ``destroy_nodes`` and ``_nodes_on_host``."""

    network_info: type
    node_info: type
    start_timeout: float = 60  # start_nodes' and wait_nodes' default bound
    wait_interval: float = 0.02  # between checks of a starting node
    client_cert = False  # whether our clients reach a node's dockerd over TLS (no unix socket)
    scoped = staticmethod(scoped)

    def __init__(self, state_dir: str, prefix: str, address_pools: tuple[str, ...]):
        if not re.fullmatch(r"[a-z][a-z0-9]{1,3}", prefix):
            raise ValueError("prefix must be 2-4 lowercase letters or digits (link names <= 15)")
        self.state_dir = Path(state_dir).resolve()
        self.prefix = prefix
        self.address_pools = tuple(ipaddress.ip_network(p) for p in address_pools)
        self.base_image = ImageTarball(str(self.state_dir / "images" / "busybox.tar"), BASE_IMAGE)
        self._node_re = re.compile(rf"{prefix}-([0-9a-f]{{10}})")
        self._lock = threading.Lock()
        self._node_locks: dict[str, threading.Lock] = {}
        self._set_up = False

    def network_resource(self, network_id: str) -> dict:
        return {"type": self.network_type, "properties": {"network_id": network_id}}

    def node_resource(self, node_id: str, network, hostname: str, ca_cert, ca_key,
                      images) -> dict:
        return {"type": self.node_type, "properties": {
            "node_id": node_id, "network": network, "hostname": hostname,
            "ca_cert": ca_cert, "ca_key": ca_key, "images": images}}

    @contextmanager
    def _locked(self):
        """Serialises address allocation across threads and processes."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def _node_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._node_locks.setdefault(name, threading.Lock())

    def node_name(self, node_id: str) -> str:
        return f"{self.prefix}-{_digest('node', node_id)[:10]}"

    def _node_dir(self, name: str) -> Path:
        return self.state_dir / "nodes" / name

    # --- records -----------------------------------------------------------------------

    def get_network(self, network_id: str):
        return self._load_network(self.network_name(network_id))

    def _load_network(self, name: str):
        data = _read_json(self.state_dir / "networks" / f"{name}.json")
        return self.network_info(**data) if data else None

    def networks(self) -> list:
        return [self.network_info(**d)
                for p in sorted((self.state_dir / "networks").glob("*.json"))
                if (d := _read_json(p))]

    def get_node(self, name: str):
        return self._load_node(name)

    def nodes(self) -> list:
        return self._nodes()

    def _load_node(self, name: str):
        data = _read_json(self._node_dir(name) / "node.json")
        if not data:
            return None
        data["images"] = tuple(ImageTarball(**i) for i in data["images"])
        return self.node_info(name=name, state_dir=str(self._node_dir(name)), provider=self,
                              **data)

    def _nodes(self) -> list:
        # glob, not iterdir: before the first node (a cluster deleted at once) there is no dir
        return [n for p in sorted((self.state_dir / "nodes").glob("*"))
                if (n := self._load_node(p.name))]

    def _save_node(self, info) -> None:
        record = {k: getattr(info, k) for k in ("node_id", "network_id", "hostname", "address",
                                                "mac")}
        record["images"] = [asdict(i) for i in info.images]
        _write_json(Path(info.state_dir) / "node.json", record)  # last: means "allocated"

    def _hostname_and_address(self, spec: NodeSpec, name: str) -> tuple[str, str]:
        """A new node's hostname (checked) and the first free address of its network."""
        net = self.get_network(spec.network_id)
        if net is None:
            raise InfraError("create node", f"network {spec.network_id} does not exist")
        hostname = spec.hostname or name
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", hostname):
            raise InfraError("create node", f"invalid hostname {hostname!r}")
        used = {n.address for n in self._nodes() if n.network_id == spec.network_id}
        subnet = ipaddress.ip_network(net.subnet)
        free = (str(a) for i, a in enumerate(subnet.hosts(), 1)
                if i >= FIRST_NODE_HOST and str(a) not in used)
        address = next(free, None)
        if address is None:
            raise InfraError("create node", f"no free address left in {net.subnet}")
        return hostname, address

    # --- networks ----------------------------------------------------------------------

    def create_network(self, network_id: str, subnet: str | None = None):
        """Create (or find) the network of ``network_id``; returns at once, nothing to wait
        for. Its /24: ``subnet``, else the first of the address pools clashing with nothing."""
        self.setup()
        name = self.network_name(network_id)
        with self._locked():
            info = self._load_network(name)
            if info is None:
                taken = [ipaddress.ip_network(n.subnet) for n in self.networks()]
                net = host.check_subnet(ipaddress.ip_network(subnet), taken) if subnet \
                    else host.free_subnet(self.address_pools, taken)
                info = self._new_network(network_id, name, net)
                _write_json(self.state_dir / "networks" / f"{name}.json", asdict(info))
            self._ensure_network(info)
        return info

    def delete_network(self, network_id: str) -> None:
        """Delete the network; refused while nodes are still attached."""
        name = self.network_name(network_id)
        with self._locked():
            attached = [n.name for n in self._nodes() if n.network_id == network_id]
            if attached:
                raise InfraError("delete network", f"{name} still has nodes {attached}")
            self._remove_network(name)

    def network_deleted(self, network_id: str) -> bool:
        name = self.network_name(network_id)
        return not self._network_present(name) and self._load_network(name) is None

    # --- create, restart, adopt ----------------------------------------------------------

    def create_node(self, spec: NodeSpec, ca: KeyPair):
        """Start the node (address, certificate, network, dockerd) and return without waiting.

        ``ca`` is the cluster CA; the node gets a server certificate for its address from it.
        Poll :meth:`check_node_create` until it returns True.
        """
        self.setup()
        name = self.node_name(spec.node_id)
        with self._locked():
            info = self._load_node(name) or self._allocate_node(spec, name, ca)
        self._start(info)
        return info

    def start_nodes(self, specs: list[NodeSpec], ca: KeyPair, timeout: float | None = None):
        """Create several nodes and wait until all of them answer with their images in."""
        infos = [self.create_node(spec, ca) for spec in specs]
        self.wait_nodes([i.name for i in infos], timeout or self.start_timeout)
        return infos

    def check_node_create(self, name: str) -> bool:
        """True once the node's dockerd answers and holds its images; raises if it died."""
        info = self.get_node(name)
        if info is None:
            raise InfraError("start dockerd", f"{name}: no such node")
        if info.ping():
            with closing(info.client(timeout=120)) as client:
                try:
                    ensure_images(client, [self.base_image, *info.images])
                except docker.errors.APIError as exc:
                    raise InfraError("import images", f"{name}: {exc}") from None
            return True
        self._check_running(info)
        return False

    def wait_nodes(self, names: list[str], timeout: float | None = None) -> None:
        def wait(name: str) -> None:
            wait_until(lambda: self.check_node_create(name), timeout or self.start_timeout,
                       f"start node {name}", interval=self.wait_interval,
                       detail=lambda: self._start_detail(name))
        if names:
            with ThreadPoolExecutor(max_workers=len(names)) as pool:
                for future in [pool.submit(wait, n) for n in names]:
                    future.result()

    def _start_detail(self, name: str) -> str:
        """What a start that timed out says besides (e.g. a console's last lines)."""
        return ""

    def _found(self) -> tuple[set[str], set[str]]:
        """Names of the nodes and networks of ours here, whatever is left of them (what the
        state directory records and what the host has under our names)."""
        nodes = {p.name for p in (self.state_dir / "nodes").glob("*")} | self._nodes_on_host()
        nets = {p.stem for p in (self.state_dir / "networks").glob("*.json")}
        return nodes, nets | self._networks_on_host()

    def _remove(self, nodes: set[str], nets: set[str], timeout: float) -> list[str]:
        self.destroy_nodes(sorted(nodes), timeout)
        for name in sorted(nets):
            self._remove_network(name)
        return sorted(nodes) + sorted(nets)

    def remove_leftovers(self, node_ids: list[str], network_ids: list[str],
                         timeout: float = 60) -> list[str]:
        """Remove every node and network of ours not in the lists. Returns the names removed."""
        nodes, nets = self._found()
        nodes -= {self.node_name(i) for i in node_ids}
        nets -= {self.network_name(i) for i in network_ids}
        with self._locked():
            return self._remove(nodes, nets, timeout)

    def remove_debris(self, timeout: float = 60) -> list[str]:
        # Records read, and debris removed, under the allocation lock: a node's or network's
        # record is written under it before anything else of it is made (and a network's
        # deleted under it), so what has none then is debris, and none gets one meanwhile.
        # A node being deleted loses its record last, once only its directory is left.
        nodes, nets = self._found()  # before: it reads every process's namespaces
        with self._locked():
            nodes -= {n.name for n in self._nodes()}
            nets -= {n.name for n in self.networks()}
            return self._remove(nodes, nets, timeout)

    def restart_node(self, name: str, ca: KeyPair | None = None) -> None:
        """Restart the node on its data (swarm membership survives); with ``ca``, re-issue
        its server certificate first (CA rotation). Poll check_node_create after."""
        info = self.get_node(name)
        if info is None:
            raise InfraError("restart node", f"{name}: no such node")
        self.stop_node(name)
        if ca is not None:
            self._write_tls(info, ca)
        self._start(info)

    def _write_tls(self, info, ca: KeyPair) -> None:
        """The node's TLS files from ``ca``: the CA, dockerd's server certificate, and with
        ``client_cert`` one for our own clients."""
        server = issue_server_cert(ca, info.hostname, ip_addresses=[info.address],
                                   dns_names=sorted({info.hostname, info.name}))
        files = [("ca.pem", ca.cert_pem), ("server-cert.pem", server.cert_pem),
                 ("server-key.pem", server.key_pem)]
        if self.client_cert:
            client = issue_client_cert(ca, f"jeroboam-{self.server_type}-{info.name}")
            files += [("client-cert.pem", client.cert_pem), ("client-key.pem", client.key_pem)]
        for fname, text in files:
            _write_private(Path(info.state_dir) / "tls" / fname, text)

    def restart_with_ca(self, name: str, ca: KeyPair) -> None:
        """Restart the node's dockerd with a server certificate from ``ca`` unless its
        certificate already comes from it (a retry, or a rotation that already rolled over
        this node); poll ``check_node_create`` after."""
        info = self.get_node(name)
        if info is None:
            raise InfraError("restart node", f"{name}: no such node")
        if Path(info.state_dir, "tls", "ca.pem").read_text() != ca.cert_pem:
            self.restart_node(name, ca=ca)

    def adopt(self, network_ids: list[str], node_ids: list[str]) -> dict:
        """Find the given networks and nodes on the host (after a restart of ours or of the
        host), re-create what is missing of the networks and start the nodes that are down.
        Returns node id -> node (None: nothing known); wait for them with :meth:`wait_nodes`."""
        self.setup()
        for network_id in network_ids:
            net = self.get_network(network_id)
            if net is not None:
                self._ensure_network(net)
        found = {}
        for node_id in node_ids:
            info = self._load_node(self.node_name(node_id))
            if info is not None and self.get_network(info.network_id) is not None:
                self._start(info)
            found[node_id] = info
        return found


class LocalProvider(NodeStore):
    server_type = "local"
    network_type = NETWORK_TYPE
    node_type = NODE_TYPE
    network_info = NetworkInfo
    node_info = NodeInfo

    def __init__(self, state_dir: str = DEFAULT_STATE_DIR, *, prefix: str = "jb",
                 address_pools: tuple[str, ...] | None = None, storage_driver: str = "vfs",
                 iptables: bool = True, docker_bridge: bool = False, log_level: str = "warn"):
        super().__init__(state_dir, prefix, address_pools or DEFAULT_ADDRESS_POOLS)
        longest = f"{self.state_dir}/nodes/{prefix}-{'0' * 10}/exec/containerd/containerd.sock"
        if len(longest) > MAX_UNIX_PATH:
            raise ValueError(f"state_dir too long for unix socket paths: {longest}")
        self.storage_driver = storage_driver
        self.iptables = iptables
        self.docker_bridge = docker_bridge
        self.log_level = log_level
        self._veth_re = re.compile(rf"{prefix}v([0-9a-f]{{10}})")
        self._bridge_re = re.compile(rf"{prefix}b[0-9a-f]{{10}}")
        self._daemon_marker = re.compile(re.escape(f"{self.state_dir}/nodes/") + r"([^/]+)/")

    @classmethod
    def from_settings(cls, settings) -> LocalProvider:
        from .resources import configure  # the resources' module keeps the process's provider
        return configure(settings)

    # --- set-up ------------------------------------------------------------------------

    def setup(self) -> None:
        """Check the host's tools, make the state dirs, build the base image (cached)."""
        if self._set_up:
            return
        missing = [c for c in REQUIRED_COMMANDS if shutil.which(c, path=DOCKERD_PATH) is None]
        if missing:
            raise InfraError("check host", f"missing {', '.join(missing)}; "
                             "run scripts/host-prereqs.sh as root")
        # node keys, dockerd sockets and root filesystems: root's alone, whoever else may reach
        # state_path (the API's user, see jeroboam.cli.privsep)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        for sub in ("nodes", "networks", "images"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        # mount points every node covers with its own
        for path in ("/run/containerd", "/etc/docker"):
            os.makedirs(path, exist_ok=True)
        build_busybox_tar(Path(self.base_image.path))
        self._set_up = True

    def has_state(self) -> bool:
        return self.state_dir.exists()

    # --- names -------------------------------------------------------------------------

    def network_name(self, network_id: str) -> str:
        return f"{self.prefix}b{_digest('network', network_id)[:10]}"

    def _veth(self, node_name: str) -> str:
        return f"{self.prefix}v{node_name[len(self.prefix) + 1:]}"

    # --- networks ----------------------------------------------------------------------

    def _new_network(self, network_id: str, name: str, net) -> NetworkInfo:
        return NetworkInfo(network_id, name, str(net), str(net[1]), _bridge_mac(network_id))

    def _network_present(self, name: str) -> bool:
        return host.link_exists(name)

    def _remove_network(self, name: str) -> None:
        if host.link_exists(name):
            host.run(["ip", "link", "del", name], "delete bridge")
        (self.state_dir / "networks" / f"{name}.json").unlink(missing_ok=True)

    def _ensure_network(self, info: NetworkInfo) -> None:
        cmds = [] if host.link_exists(info.name) else \
            [f"link add {info.name} address {info.mac} type bridge"]
        host.ip_batch(cmds + [f"addr replace {info.gateway}/{info.prefixlen} dev {info.name}",
                              f"link set {info.name} up"], "create bridge")

    # --- nodes: create -----------------------------------------------------------------

    def _check_running(self, info: NodeInfo) -> None:
        if self._dockerd_pid(info) is None:
            raise InfraError("start dockerd", f"{info.name}: dockerd exited: "
                             f"{self._log_tail(info)}")

    def node_running(self, name: str) -> bool:
        info = self._load_node(name)
        return info is not None and self._dockerd_pid(info) is not None

    def _allocate_node(self, spec: NodeSpec, name: str, ca: KeyPair) -> NodeInfo:
        hostname, address = self._hostname_and_address(spec, name)
        d = self._node_dir(name)
        info = NodeInfo(spec.node_id, name, spec.network_id, hostname, address,
                        _node_mac(spec.network_id, address), str(d), tuple(spec.images), self)
        for sub in ("data", "exec", "etc-docker", "cgroup", "tls"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "daemon.json").write_text("{}\n")  # keeps dockerd off /etc/docker/daemon.json
        self._write_tls(info, ca)
        self._save_node(info)
        return info

    def _start(self, info: NodeInfo) -> None:
        with self._node_lock(info.name):
            net = self._ensure_netns(info)
            if self._dockerd_pid(info) is not None and \
                    _process_pid(info.state_dir, "init") is not None:
                return
            d = Path(info.state_dir)
            if (d / "exec" / "containerd").exists() or (d / "init.sock").exists():
                # a crashed dockerd leaves containerd shims and containers behind; a new dockerd
                # (with a new /run/containerd) cannot take them over, so a restart is a reboot
                self._kill_processes(info.name)
            # containerd.pid naming a zombie makes dockerd wait for a containerd that never comes
            for stale in ("docker.sock", "docker.pid", "exec/containerd/containerd.pid",
                          "exec/containerd/containerd.sock"):
                (d / stale).unlink(missing_ok=True)
            # containerd dumps its stacks into TMPDIR when signalled; keep that in the node's
            # directory, which goes with the node, not in the host's /tmp.
            (d / "tmp").mkdir(exist_ok=True)
            (d / "proc").mkdir(exist_ok=True)
            dockerd = ProcessSpec("dockerd", tuple(self._dockerd_argv(info)), env={
                # swarm tasks would otherwise look for their image in a registry first
                "DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1", "TMPDIR": str(d / "tmp")})
            _write_json(d / "proc" / "dockerd.json", asdict(dockerd))
            argv = ["nsenter", f"--net={host.NETNS_DIR / info.name}",
                    "unshare", "--mount", "--uts", "--propagation", "private", "--",
                    "sh", "-c", NODE_INIT, "node-init", str(d), info.hostname,
                    f"{info.address}/{net.prefixlen}",
                    sys.executable, "-I", "-S", NODEINIT, str(d),
                    str(d / "proc" / "dockerd.json")]
            with open(d / "init.log", "ab") as log:
                # the supervisor's first process exits once the supervisor runs dockerd
                try:
                    init = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=log, env={"PATH": DOCKERD_PATH},
                                          start_new_session=True, timeout=30)
                except subprocess.TimeoutExpired:
                    raise InfraTimeout("start node", f"{info.name}: supervisor not ready after "
                                       "30 s") from None
            if init.returncode != 0:
                raise InfraError("start node", f"{info.name}: supervisor: "
                                 f"{init.stdout.decode(errors='replace').strip()} "
                                 f"{_tail(d / 'init.log')}")

    def start_process(self, info: NodeInfo, spec: ProcessSpec) -> int:
        answer = self._request(info, {"op": "start", "spec": asdict(spec)}, 60,
                               f"start {spec.name}")
        return answer["pid"]

    def stop_process(self, info: NodeInfo, name: str, timeout: float = 10) -> None:
        self._request(info, {"op": "stop", "name": name, "timeout": timeout}, timeout + 20,
                      f"stop {name}")

    def _request(self, info: NodeInfo, request: dict, timeout: float, step: str) -> dict:
        """One request to the node's supervisor."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(f"{info.state_dir}/init.sock")
                s.sendall(json.dumps(request).encode() + b"\n")
                with s.makefile("rb") as f:
                    answer = json.loads(f.readline() or b"{}")
        except OSError as exc:
            raise InfraError(step, f"{info.hostname}: the node's supervisor does not answer "
                             f"({exc})") from None
        if "error" in answer or not answer:
            raise InfraError(step, f"{info.hostname}: {answer.get('error', 'no answer')}")
        return answer

    def _dockerd_argv(self, info: NodeInfo) -> list[str]:
        d, tls = info.state_dir, f"{info.state_dir}/tls"
        return [
            "dockerd", "--config-file", f"{d}/daemon.json",
            "--data-root", f"{d}/data", "--exec-root", f"{d}/exec", "--pidfile", f"{d}/docker.pid",
            "-H", f"unix://{info.socket_path}", "-H", f"tcp://{info.address}:{TLS_PORT}",
            "--tlsverify", "--tlscacert", f"{tls}/ca.pem",
            "--tlscert", f"{tls}/server-cert.pem", "--tlskey", f"{tls}/server-key.pem",
            "--storage-driver", self.storage_driver,
            f"--iptables={str(self.iptables).lower()}",
            *([] if self.docker_bridge else ["--bridge=none"]),
            "--cgroup-parent", f"/{info.name}",
            "--swarm-default-advertise-addr", info.address,
            "--log-level", self.log_level,
            "--shutdown-timeout", "3",  # busybox sleep ignores SIGTERM: don't wait 15 s for it
        ]

    def _ensure_netns(self, info: NodeInfo) -> NetworkInfo:
        """Create what is missing of the node's netns and veth (eth0 is set up by NODE_INIT)."""
        net = self.get_network(info.network_id)
        if net is None:
            raise InfraError("create node", f"network {info.network_id} does not exist")
        veth = self._veth(info.name)
        cmds = []
        if not (host.NETNS_DIR / info.name).exists():
            cmds.append(f"netns add {info.name}")
        if not host.link_exists(veth):
            cmds.append(f"link add {veth} type veth peer name eth0 address {info.mac} "
                        f"netns {info.name}")
        if _master(veth) != net.name:
            cmds.append(f"link set {veth} master {net.name} up")
        if cmds:
            # concurrent first `ip netns add`s each turn /run/netns into a mount point, stacked
            with self._lock:
                host.ip_batch(cmds, f"create netns of {info.name}")
        return net

    def _dockerd_pid(self, info: NodeInfo) -> int | None:
        return _process_pid(info.state_dir, "dockerd")

    def _log_tail(self, info: NodeInfo) -> str:
        return _tail(Path(info.process_log("dockerd")))

    # --- nodes: stop, restart, delete ---------------------------------------------------

    def stop_node(self, name: str, timeout: float = 20) -> None:
        """Stop dockerd gracefully (SIGKILL after ``timeout``) and what it left; keep the state."""
        info = self.get_node(name)
        if info is None:
            return
        with self._node_lock(name):
            pid = self._dockerd_pid(info)
            if pid is not None:
                host.kill([pid], signal.SIGTERM)
                try:
                    wait_until(lambda: self._dockerd_pid(info) is None, timeout,
                               f"stop dockerd of {name}", interval=0.1)
                except host.InfraTimeout:
                    host.kill([pid])
            self._kill_processes(name)

    def delete_node(self, name: str) -> None:
        """Begin deleting a node: kill its processes, remove its veth and netns. Idempotent;
        poll :meth:`check_node_delete` until True."""
        with self._node_lock(name):
            # SIGKILL: the node's data is discarded, a graceful dockerd stop only costs seconds
            self._kill_processes(name, wait=False)
            veth = self._veth(name)
            if host.link_exists(veth):
                host.run(["ip", "link", "del", veth], f"delete veth of {name}")
            if (host.NETNS_DIR / name).exists():
                host.run(["ip", "netns", "del", name], f"delete netns of {name}")

    def check_node_delete(self, name: str) -> bool:
        """Finish deleting: once no process is left, remove cgroups and the state directory."""
        return self._finish_delete(name, self._processes(name))

    def destroy_nodes(self, names: list[str], timeout: float = 30) -> None:
        """Delete nodes and wait until nothing of them is left."""
        for name in names:
            self.delete_node(name)

        def done() -> bool:
            procs = self._processes_by_node(set(names))
            return all([self._finish_delete(n, [p for p, owner in procs.items() if owner == n])
                        for n in names])
        wait_until(done, timeout, "delete nodes",
                   detail=lambda: f"left: {self._processes_by_node(set(names))}")

    def _finish_delete(self, name: str, pids: list[int]) -> bool:
        with self._node_lock(name):
            if pids:
                host.kill(pids)
                return False
            if not host.remove_cgroup(name):
                return False
            shutil.rmtree(self._node_dir(name), ignore_errors=True)
            return not self._node_dir(name).exists()

    def _processes_by_node(self, names: set[str] | None = None) -> dict[int, str]:
        """Live processes of our nodes -> node name: dockerd and containerd (by their paths in
        our state dir), whatever runs in a node's netns (shims, docker-proxy), and containers
        (by cgroup parent: they have netns of their own and outlive a killed dockerd)."""
        netns = {host.netns_id_of(n): n for n in host.netns_names() if self._node_re.fullmatch(n)}
        found = {}
        for pid in host.pids():
            name = netns.get(host.netns_id(pid))
            if name is None:
                for path in host.cgroup_paths(pid):
                    top = path.split("/")[1] if path.startswith("/") and path != "/" else ""
                    if self._node_re.fullmatch(top):
                        name = top
                        break
            if name is None:
                argv = host.cmdline(pid)
                if argv and os.path.basename(argv[0]).startswith(("dockerd", "containerd")):
                    m = self._daemon_marker.search(" ".join(argv))
                    name = m.group(1) if m else None
            if name is not None and (names is None or name in names) and host.is_live(pid):
                found[pid] = name
        return found

    def _processes(self, name: str) -> list[int]:
        return list(self._processes_by_node({name}))

    def _kill_processes(self, name: str, wait: bool = True) -> None:
        host.kill(self._processes(name))
        if wait:
            wait_until(lambda: not self._kill_again(name), 10, f"kill processes of {name}")

    def _kill_again(self, name: str) -> list[int]:
        pids = self._processes(name)
        host.kill(pids)
        return pids

    # --- restart safety ----------------------------------------------------------------

    def _nodes_on_host(self) -> set[str]:
        nodes = {n for n in host.netns_names() if self._node_re.fullmatch(n)}
        nodes |= {f"{self.prefix}-{m.group(1)}" for link in host.links()
                  if (m := self._veth_re.fullmatch(link))}
        nodes |= set(host.cgroup_names(self._node_re))
        return nodes | set(self._processes_by_node().values())

    def _networks_on_host(self) -> set[str]:
        return {link for link in host.links() if self._bridge_re.fullmatch(link)}

    def inventory(self) -> dict[str, list[str]]:
        """What this provider has on the host, for leak checks (compare before and after)."""
        netns_mounts = f"{host.NETNS_DIR}/{self.prefix}-"
        return {
            "netns": [n for n in host.netns_names() if self._node_re.fullmatch(n)],
            "links": [link for link in host.links()
                      if self._veth_re.fullmatch(link) or self._bridge_re.fullmatch(link)],
            "processes": sorted(f"{pid} {name} {' '.join(host.cmdline(pid))[:80]}"
                                for pid, name in self._processes_by_node().items()),
            "mounts": sorted(m for m in host.mount_points()
                             if m.startswith(f"{self.state_dir}/") or m.startswith(netns_mounts)),
            "cgroups": host.cgroup_names(self._node_re),
            "state": sorted(f"{sub}/{p.name}" for sub in ("nodes", "networks")
                            for p in (self.state_dir / sub).glob("*")),
        }


def _process_pid(state_dir: str, name: str) -> int | None:
    """The PID of a node's supervised process while it runs (its start time tells it from a
    later process that got the same PID)."""
    try:
        pid, started = (Path(state_dir) / "proc" / f"{name}.pid").read_text().split()
    except (FileNotFoundError, ValueError):
        return None
    return int(pid) if str(host.start_time(int(pid))) == started and host.is_live(int(pid)) \
        else None


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "no log"
    return " | ".join(text.strip().splitlines()[-lines:])


def _master(link: str) -> str | None:
    try:
        return os.path.basename(os.readlink(host.SYS_NET / link / "master"))
    except OSError:
        return None


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as f:
        f.write(text)

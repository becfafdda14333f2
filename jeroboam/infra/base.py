"""What every infrastructure provider hands the COE drivers, whatever makes its nodes.

A provider makes networks and nodes; a driver gets :class:`Node` handles and never imports a
provider module. A node is reachable at its address, runs a dockerd serving TLS with a
certificate from the cluster's CA, takes files, runs one-shot commands in its network
namespace, and supervises long-running processes (dockerd, kubelet, etcd...) that no worker
process has to reap: any worker can stop any node and no zombie is left.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import docker

from jeroboam.pki import KeyPair

T = TypeVar("T")


class InfraError(RuntimeError):
    """A provider step failed; ``step`` names it (it ends up in a cluster's status_reason)."""

    def __init__(self, step: str, detail: str):
        self.step = step
        self.detail = detail
        super().__init__(f"{step}: {detail}")


class InfraTimeout(InfraError):
    """A bounded wait ran out."""


def wait_until(predicate: Callable[[], T], timeout: float, step: str,
               interval: float = 0.05, detail: Callable[[], str] | None = None) -> T:
    """Poll ``predicate`` until it returns something truthy; raise InfraTimeout naming ``step``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            extra = f" ({detail()})" if detail else ""
            raise InfraTimeout(step, f"not done after {timeout:g} s{extra}")
        time.sleep(interval)


@dataclass(frozen=True)
class Mount:
    """A mount in the node's own mount namespace, made before the process that asks for it
    starts. ``type``: ``bind`` (``source``, a file or directory, over ``target``; ``options``
    ``ro`` makes it read-only) or ``tmpfs`` (``options`` as mount(8) takes them). The target
    must exist. A mount asked for again (same type, source, target) is not made twice."""

    target: str
    source: str | None = None
    type: str = "bind"
    options: str = ""


@dataclass(frozen=True)
class ProcessSpec:
    """A long-running process on a node.

    It runs in the node's network namespace, with the node's hostname, in the node's own mount
    namespace where the provider has one (there ``/sys`` is the node's own), under the node's
    supervisor: not a child of the worker that asked for it. ``name`` is unique on the node
    (starting a name that runs is a no-op) and names its log. With ``restart`` the supervisor
    starts it again a second after it exits, until it is stopped.
    """

    name: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    restart: bool = False


class Node(abc.ABC):
    """A provider's node as a driver sees it. Also its state: equal handles, same node."""

    node_id: str  # the driver's id for it (e.g. cluster/nodegroup/index)
    name: str  # the provider's name for it; the node resource's physical id
    network_id: str
    hostname: str
    address: str  # its IP address on the cluster network

    @property
    @abc.abstractmethod
    def api_address(self) -> str:
        """The dockerd's TLS endpoint, ``tcp://IP:PORT``; the server certificate comes from
        the cluster CA and clients need a certificate from it."""

    @property
    @abc.abstractmethod
    def cgroup_parent(self) -> str:
        """The cgroup under which the node's containers belong (dockerd's --cgroup-parent;
        a kubelet's --cgroup-root goes under it); it goes with the node."""

    @abc.abstractmethod
    def client(self, timeout: float = 30) -> docker.DockerClient:
        """A Docker SDK client with full rights on the node's dockerd (close it after use)."""

    @abc.abstractmethod
    def ping(self) -> bool:
        """Whether the node's dockerd answers (quick; never raises)."""

    @abc.abstractmethod
    def path(self, relative: str) -> str:
        """Where ``relative`` (a path inside the node's own file area) is, as the node's
        processes see it. The area goes with the node."""

    @abc.abstractmethod
    def put_file(self, relative: str, data: str | bytes, mode: int = 0o600) -> str:
        """Write a file into the node's file area (parents made); returns :meth:`path`."""

    @abc.abstractmethod
    def run(self, argv: list[str], input: str | None = None, timeout: float = 30) -> str:
        """Run a command to completion in the node's network namespace (e.g. ``ip route``,
        ``iptables``); its stdout. Raises InfraError naming the command when it fails."""

    @abc.abstractmethod
    def start_process(self, spec: ProcessSpec) -> int:
        """Start ``spec`` under the node's supervisor unless a process of that name runs;
        returns its PID (as the host sees it, where there is such a thing)."""

    @abc.abstractmethod
    def stop_process(self, name: str, timeout: float = 10) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; it is not restarted. No-op when not running."""

    @abc.abstractmethod
    def process_pid(self, name: str) -> int | None:
        """The PID of the running process ``name``; None when it is not running."""

    @abc.abstractmethod
    def process_log(self, name: str) -> str:
        """Path of the process's log (stdout and stderr), readable on this host."""


class Provider(abc.ABC):
    """An infrastructure provider, chosen by a template's ``server_type`` (the name of its
    ``jeroboam.infra.providers`` entry point).

    Nodes and networks are orchestration resources of the provider's own types; a driver puts
    them into its stacks through :meth:`network_resource` and :meth:`node_resource` and never
    names the types itself. Their physical ids are node / network names.
    """

    server_type: str
    network_type: str  # orchestration resource type names
    node_type: str
    # How many times slower than a namespace node this provider's nodes answer: drivers
    # stretch their liveness timings (heartbeats, formation timeouts) by it.
    time_scale: float = 1.0

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings) -> Provider:
        """The provider of these service settings (one per process and settings); it is also
        the one its orchestration resources use. Raises InfraError when it cannot work here."""

    @abc.abstractmethod
    def setup(self) -> None:
        """Check and prepare the host (idempotent, cheap after the first call)."""

    @abc.abstractmethod
    def has_state(self) -> bool:
        """Whether this provider ever kept anything here (else there is nothing to reconcile)."""

    def status(self) -> dict[str, str]:
        """What an operator should know of this provider on this host, beyond that it works
        (``jeroboam provider status`` prints it)."""
        return {}

    # --- stack fragments -------------------------------------------------------------------

    @abc.abstractmethod
    def scoped(self, stack_id: str, ident: str) -> str:
        """The id the provider knows a stack's network or node by, given the ``network_id`` /
        ``node_id`` its resource names (ids are per stack: no stack names, adopts or deletes
        another's): what :meth:`get_network` takes and ``Node.node_id`` is."""

    @abc.abstractmethod
    def network_resource(self, network_id: str) -> dict:
        """A stack resource for the network ``network_id`` (its ``network_id`` property is
        that id; attribute ``network_id``)."""

    @abc.abstractmethod
    def node_resource(self, node_id: str, network, hostname: str, ca_cert, ca_key,
                      images) -> dict:
        """A stack resource for a node (its ``node_id`` property is ``node_id``): on
        ``network`` (a network id or an intrinsic function giving one), dockerd's server
        certificate from ``ca_cert``/``ca_key`` (a change re-issues it), ``images``: a list of
        ``{"path": tarball, "name": optional}`` imported into its dockerd (a change imports the
        new ones). Values may be intrinsic functions. The resource's attributes include
        ``address`` and ``api_address``."""

    # --- nodes and networks ----------------------------------------------------------------

    @abc.abstractmethod
    def get_node(self, name: str) -> Node | None:
        ...

    @abc.abstractmethod
    def nodes(self) -> list[Node]:
        """Every node of this provider here (any cluster, any stack)."""

    @abc.abstractmethod
    def node_running(self, name: str) -> bool:
        """Whether the node is up (its dockerd process lives; see also Node.ping)."""

    @abc.abstractmethod
    def wait_nodes(self, names: list[str], timeout: float = 60) -> None:
        """Wait until the nodes (just created or restarted) answer with their images in."""

    @abc.abstractmethod
    def restart_with_ca(self, name: str, ca: KeyPair) -> None:
        """Restart the node's dockerd with a server certificate from ``ca`` unless its
        certificate already comes from it; :meth:`wait_nodes` after. A restart is a reboot:
        the node's other processes stop too."""

    @abc.abstractmethod
    def destroy_nodes(self, names: list[str], timeout: float = 30) -> None:
        """Delete nodes and wait until nothing of them is left."""

    @abc.abstractmethod
    def get_network(self, network_id: str):
        """The network (with ``network_id``, ``subnet``, ``gateway``) or None."""

    @abc.abstractmethod
    def networks(self) -> list:
        """Every network of this provider here (any cluster, any stack), as get_network gives."""

    @abc.abstractmethod
    def delete_network(self, network_id: str) -> None:
        """Delete a network without nodes."""

    @abc.abstractmethod
    def adopt(self, network_ids: list[str], node_ids: list[str]) -> dict[str, Node | None]:
        """After a restart of ours or of the host: bring up what is down of these networks
        and nodes. Node id -> node (None: nothing known); :meth:`wait_nodes` after."""

    @abc.abstractmethod
    def remove_leftovers(self, node_ids: list[str], network_ids: list[str],
                         timeout: float = 60) -> list[str]:
        """Remove every node and network of this provider not in the lists; names removed."""

    @abc.abstractmethod
    def remove_debris(self, timeout: float = 60) -> list[str]:
        """Remove what is left here of nodes and networks that have no record any more (nor
        :meth:`nodes` nor :meth:`networks` lists them: a crash in the middle of a create or a
        delete); names removed. Race-free beside workers creating and deleting nodes: what
        gets its record meanwhile is not debris."""

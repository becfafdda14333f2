"""Docker Swarm operations for the swarm driver.

The primitives take SDK clients, so a node can be reached through its full-rights client or
its TLS endpoint; :func:`form_swarm` works on any provider's nodes.
"""

from __future__ import annotations

import ipaddress
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass

import docker

from jeroboam.infra import InfraError, Node, wait_until

SWARM_PORT = 2377
# Seconds between agent heartbeats; a dead node shows Down after about 2 of them (the
# default 5 s took 11 s, too slow for a 15 s health verdict).
DEFAULT_HEARTBEAT = 2.0
# Overlay subnets live inside the nodes only, but must not cover the nodes' own addresses.
OVERLAY_POOLS = ("10.252.0.0/16", "172.29.0.0/16", "192.168.0.0/17")


@dataclass(frozen=True)
class SwarmNode:
    id: str
    hostname: str
    role: str  # manager | worker
    state: str  # ready | down | unknown | disconnected
    availability: str  # active | pause | drain
    address: str
    leader: bool
    message: str

    @property
    def ready(self) -> bool:
        return self.state == "ready" and self.availability == "active"


def overlay_pool(node_addresses: list[str]) -> str:
    for pool in map(ipaddress.ip_network, OVERLAY_POOLS):
        if not any(ipaddress.ip_address(a) in pool for a in node_addresses):
            return str(pool)
    raise InfraError("swarm init", "every overlay address pool holds a node address")


def init(client: docker.DockerClient, address: str, addr_pool: str,
         heartbeat: float = DEFAULT_HEARTBEAT) -> str:
    """Make the node the swarm's first manager; returns its swarm node ID."""
    try:
        client.swarm.init(advertise_addr=address, listen_addr=f"{address}:{SWARM_PORT}",
                          default_addr_pool=[addr_pool], subnet_size=24,
                          dispatcher_heartbeat_period=int(heartbeat * 1e9))
    except docker.errors.APIError as exc:
        raise InfraError("swarm init", f"{address}: {exc.explanation or exc}") from None
    return local_node_id(client)


def join_tokens(manager: docker.DockerClient) -> dict[str, str]:
    manager.swarm.reload()
    tokens = manager.swarm.attrs["JoinTokens"]
    return {"worker": tokens["Worker"], "manager": tokens["Manager"]}


def join(client: docker.DockerClient, address: str, manager_address: str, token: str) -> str:
    """Join the node to the swarm of ``manager_address``; returns its swarm node ID."""
    try:
        client.swarm.join(remote_addrs=[f"{manager_address}:{SWARM_PORT}"], join_token=token,
                          listen_addr=f"{address}:{SWARM_PORT}", advertise_addr=address)
    except docker.errors.APIError as exc:
        raise InfraError("swarm join", f"{address}: {exc.explanation or exc}") from None
    return local_node_id(client)


def local_node_id(client: docker.DockerClient) -> str:
    return client.info()["Swarm"]["NodeID"]


def local_state(client: docker.DockerClient) -> str:
    """inactive | pending | active | error | locked"""
    return client.info()["Swarm"]["LocalNodeState"]


def node_states(manager: docker.DockerClient) -> list[SwarmNode]:
    """Every node as the swarm sees it (the health monitor's input)."""
    return [
        SwarmNode(
            id=n["ID"], role=n["Spec"]["Role"],
            # a node that has just joined has no description yet
            hostname=n.get("Description", {}).get("Hostname", ""),
            state=n["Status"]["State"], availability=n["Spec"]["Availability"],
            address=n["Status"].get("Addr", ""),
            leader=bool(n.get("ManagerStatus", {}).get("Leader")),
            message=n["Status"].get("Message", ""),
        )
        for n in manager.api.nodes()
    ]


def wait_ready(manager: docker.DockerClient, count: int, timeout: float = 60) -> list[SwarmNode]:
    """Wait until ``count`` nodes are ready and active."""
    def ready():
        nodes = node_states(manager)
        return nodes if sum(n.ready for n in nodes) >= count else None
    return wait_until(ready, timeout, "swarm ready", interval=0.1,
                      detail=lambda: f"{sum(n.ready for n in node_states(manager))} of {count}")


def remove_node(manager: docker.DockerClient, node_id: str,
                leaving: docker.DockerClient | None = None, timeout: float = 30) -> None:
    """Demote and drain a node, wait for its tasks to stop, make it leave, remove it.

    ``leaving`` is a client of the node itself. Leave it out for a node about to be deleted
    (saves about a second) or already dead: it is then only removed from the swarm.
    """
    node = _update_spec(manager, node_id, Role="worker", Availability="drain")
    if "ManagerStatus" in node:
        # leaving or removal before the raft member is gone would leave quorum one short
        wait_until(lambda: "ManagerStatus" not in manager.api.inspect_node(node_id),
                   timeout, "demote manager", interval=0.1)
    if node["Status"]["State"] == "ready":
        def drained():
            return not any(t["DesiredState"] == "running" or t["Status"]["State"] == "running"
                           for t in manager.api.tasks(filters={"node": node_id}))
        wait_until(drained, timeout, "drain node", interval=0.2)
    if leaving is not None:
        try:
            leaving.swarm.leave()
        except docker.errors.APIError:
            leaving.swarm.leave(force=True)
    # a node that just left is reported Down only 10-15 s later, and plain rm refuses until then
    manager.api.remove_node(node_id, force=True)


def set_role(manager: docker.DockerClient, node_id: str, role: str) -> None:
    """Promote (``manager``) or demote (``worker``) a node."""
    _update_spec(manager, node_id, Role=role)


def _update_spec(manager: docker.DockerClient, node_id: str, **changes) -> dict:
    node = manager.api.inspect_node(node_id)
    manager.api.update_node(node_id, node["Version"]["Index"], dict(node["Spec"], **changes))
    return node


def _ensure_member(node: Node, role: str, manager: Node, tokens: dict[str, str]) -> None:
    with closing(node.client()) as client, closing(manager.client()) as mgr:
        if local_state(client) != "inactive":
            try:
                mgr.api.inspect_node(local_node_id(client))
                return
            except docker.errors.NotFound:
                # state from another swarm (e.g. its first manager was re-created)
                client.swarm.leave(force=True)
        join(client, node.address, manager.address, tokens[role])


def form_swarm(managers: list[Node], workers: list[Node], addr_pool: str | None = None,
               heartbeat: float = DEFAULT_HEARTBEAT, timeout: float = 60) -> list[SwarmNode]:
    """Init on the first manager unless done, join the others (idempotent), wait until ready.

    Managers join one at a time (raft membership changes are serialised), workers in parallel.
    """
    first = managers[0]
    nodes = managers + workers
    with closing(first.client()) as mgr:
        if local_state(mgr) == "inactive":
            init(mgr, first.address, addr_pool or overlay_pool([n.address for n in nodes]),
                 heartbeat)
        tokens = join_tokens(mgr)
        for node in managers[1:]:
            _ensure_member(node, "manager", first, tokens)
        if workers:
            with ThreadPoolExecutor(max_workers=len(workers)) as pool:
                for future in [pool.submit(_ensure_member, w, "worker", first, tokens)
                               for w in workers]:
                    future.result()
        return wait_ready(mgr, len(nodes), timeout)

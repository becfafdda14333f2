"""What the swarm driver does outside cluster tasks: the health monitor (and its auto-heal),
and reconciling the host with the database when a worker starts."""

from __future__ import annotations

import logging
from collections import defaultdict
from contextlib import closing
from pathlib import Path

import docker
import requests
import sqlalchemy as sa

from jeroboam import lifecycle, states
from jeroboam.db.models import Cluster, ClusterTemplate, NodeGroup, Task
from jeroboam.db.stack_models import Stack, StackResource
from jeroboam.infra.local import LocalProvider, NodeInfo, ping, swarm
from jeroboam.infra.local.resources import NETWORK_TYPE, NODE_TYPE, configure, scoped, state_dir
from jeroboam.orchestration.store import IN_PROGRESS
from jeroboam.tasks import queue

LOG = logging.getLogger("jeroboam.drivers.swarm")

HEALTHY, UNHEALTHY, UNKNOWN = "HEALTHY", "UNHEALTHY", "UNKNOWN"
AUTO_HEAL_LABEL = "auto_heal_enabled"
# Clusters whose nodes no task is changing; the monitor looks only at these.
WATCHED = states.STABLE_STATUSES | {states.UPDATE_FAILED}
# Clusters that have no working nodes to keep: their leftovers go when a worker starts.
BROKEN = frozenset({states.CREATE_FAILED, states.DELETE_FAILED})
MONITOR_INTERVAL = 3.0  # seconds; a dead node shows down in swarm after about 5 s
CLIENT_TIMEOUT = 3  # seconds; a monitor round must not hang on one stuck dockerd


def dead_nodes(provider: LocalProvider, nodes: list[NodeInfo]) -> list[NodeInfo]:
    """Nodes whose dockerd is gone or does not answer: what a converge replaces."""
    return [n for n in nodes if not (provider.node_running(n.name) and ping(n.socket_path))]


def swarm_view(managers: list[NodeInfo]) -> list[swarm.SwarmNode] | None:
    """Every node as the first manager that answers sees it; None when none answers."""
    for manager in managers:
        if not ping(manager.socket_path):
            continue
        try:
            with closing(manager.client(CLIENT_TIMEOUT)) as client:
                if client.info()["Swarm"].get("ControlAvailable"):
                    return swarm.node_states(client)
        except (docker.errors.DockerException, requests.RequestException):
            continue
    return None


def by_hostname(view: list[swarm.SwarmNode]) -> dict[str, swarm.SwarmNode]:
    # a hostname may also be listed by a stale entry (a node that left): the ready one wins
    return {n.hostname: n for n in sorted(view, key=lambda n: n.state == "ready")}


def assess(provider: LocalProvider, managers: list[NodeInfo],
           nodes: list[NodeInfo]) -> tuple[str, dict]:
    """(health_status, health_status_reason): each node's readiness as the swarm sees it."""
    view = swarm_view(managers)
    if view is None:
        dead = {n.name for n in dead_nodes(provider, nodes)}
        reason = {f"{n.hostname}.Ready": "False" if n.name in dead else "Unknown" for n in nodes}
        reason["api"] = "no manager answers"
        return (UNHEALTHY if dead else UNKNOWN), reason
    seen = by_hostname(view)
    reason = {f"{n.hostname}.Ready": str(n.hostname in seen and seen[n.hostname].state == "ready")
              for n in nodes}
    return (HEALTHY if all(v == "True" for v in reason.values()) else UNHEALTHY), reason


def node_key(info: NodeInfo) -> tuple[str, str, int] | None:
    """(cluster, nodegroup, index) of a cluster's node, from its node id (stack/cluster/
    nodegroup/index); None for a node of some other stack."""
    parts = info.node_id.split("/")
    return (parts[1], parts[2], int(parts[3])) if len(parts) == 4 and parts[3].isdigit() else None


class Monitor:
    """One round every few seconds, in every worker: health of each watched cluster of the
    driver; with the ``auto_heal_enabled`` label, a cluster with dead nodes gets a
    cluster.update task (durable, visible in the Tasks API) that replaces them."""

    __name__ = "health_monitor"  # names the worker's thread

    def __init__(self, driver_name: str, settings):
        self.driver_name = driver_name
        self.settings = settings

    def __call__(self, session_factory) -> None:
        with session_factory() as session:
            clusters = session.execute(
                sa.select(Cluster.uuid, Cluster.status, Cluster.labels, Cluster.health_status,
                          Cluster.health_status_reason)
                .join(ClusterTemplate, ClusterTemplate.uuid == Cluster.cluster_template_id)
                .where(ClusterTemplate.driver == self.driver_name, Cluster.status.in_(WATCHED))
            ).all()
            if not clusters:
                return
            # made only now: a worker whose data_dir cannot hold the provider's state still runs
            provider = configure(self.settings)
            roles = dict(session.execute(
                sa.select(NodeGroup.uuid, NodeGroup.role)
                .where(NodeGroup.cluster_id.in_([c.uuid for c in clusters]))).all())
        nodes = defaultdict(list)
        for key, info in sorted((k, n) for n in provider.nodes() if (k := node_key(n))):
            nodes[key[0]].append((roles.get(key[1]), info))
        for cluster in clusters:
            members = [info for _, info in nodes.get(cluster.uuid, [])]
            managers = [info for role, info in nodes.get(cluster.uuid, []) if role == "master"]
            status, reason = assess(provider, managers, members)
            if (status, reason) != (cluster.health_status, cluster.health_status_reason):
                with session_factory() as session, session.begin():
                    session.execute(sa.update(Cluster).where(Cluster.uuid == cluster.uuid)
                                    .values(health_status=status, health_status_reason=reason))
            if status != HEALTHY and str(cluster.labels.get(AUTO_HEAL_LABEL)).lower() == "true":
                dead = dead_nodes(provider, members)
                if dead and cluster.status in states.STABLE_STATUSES:
                    self.heal(session_factory, cluster.uuid, dead)

    @staticmethod
    def heal(session_factory, cluster_uuid: str, dead: list[NodeInfo]) -> None:
        hostnames = ", ".join(n.hostname for n in dead)
        try:
            with session_factory() as session, session.begin():
                cluster = session.scalars(sa.select(Cluster).where(Cluster.uuid == cluster_uuid)).first()
                busy = session.scalar(sa.select(sa.exists().where(
                    Task.lock_key == cluster_uuid, Task.state.in_((states.PENDING, states.RUNNING)))))
                if cluster is None or busy:
                    return
                lifecycle.begin(session, [(cluster, "update")], lambda: queue.enqueue(
                    session, "cluster.update", "cluster", cluster_uuid, cluster.project_id, cluster.user_id,
                    {"auto_heal": [n.name for n in dead]}), reason=f"auto-heal: replacing {hostnames}")
        except states.InvalidTransition as exc:
            # of several workers' monitors the first begins the update; for the others the
            # cluster is no longer stable and the table refuses
            LOG.info("cluster %s: no auto-heal (%s)", cluster_uuid, exc)
            return
        LOG.warning("cluster %s: auto-heal replaces %s", cluster_uuid, hostnames)
        queue.work_available.set()


def reconcile(driver_name: str, settings, session_factory) -> None:
    """After a restart of ours or of the host: adopt the nodes of live clusters and stacks
    (their dockerds restarted if down), remove what the database does not know or what
    belongs to failed clusters. Clusters with a task under way are left to it."""
    with session_factory() as session:
        clusters = session.execute(
            sa.select(Cluster.uuid, Cluster.status, Cluster.stack_id)
            .join(ClusterTemplate, ClusterTemplate.uuid == Cluster.cluster_template_id)
            .where(ClusterTemplate.driver == driver_name)).all()
        resources = session.execute(
            sa.select(StackResource.stack_id, StackResource.type, StackResource.properties,
                      Stack.status)
            .join(Stack, Stack.uuid == StackResource.stack_id)
            .where(Stack.deleted_at.is_(None), StackResource.type.in_((NODE_TYPE, NETWORK_TYPE)))
        ).all()
    if not clusters and not resources and not Path(state_dir(settings)).exists():
        return  # never used here: no need for root, dockerd, a short data_dir...
    provider = configure(settings)
    provider.setup()
    broken = {c.stack_id for c in clusters if c.status in BROKEN}
    busy = {c.uuid for c in clusters if c.status in states.IN_PROGRESS_STATUSES}
    busy_stacks = {c.stack_id for c in clusters if c.uuid in busy}
    from jeroboam.drivers.swarm import stack_id_of  # the driver module imports this one

    keep = {NODE_TYPE: set(), NETWORK_TYPE: {scoped(stack_id_of(c), c) for c in busy}}
    adopt = {NODE_TYPE: set(), NETWORK_TYPE: set()}
    for res in resources:
        ident = (res.properties or {}).get("node_id" if res.type == NODE_TYPE else "network_id")
        if not ident or res.stack_id in broken:
            continue
        ident = scoped(res.stack_id, ident)
        keep[res.type].add(ident)
        if res.stack_id not in busy_stacks and res.status != IN_PROGRESS:
            adopt[res.type].add(ident)
    # a task may be making nodes its stack does not list yet
    keep[NODE_TYPE] |= {n.node_id for n in provider.nodes()
                        if (key := node_key(n)) and key[0] in busy}
    removed = provider.remove_leftovers(sorted(keep[NODE_TYPE]), sorted(keep[NETWORK_TYPE]))
    found = provider.adopt(sorted(adopt[NETWORK_TYPE]), sorted(adopt[NODE_TYPE]))
    LOG.info("local provider reconciled: %d nodes adopted, removed %s",
             sum(v is not None for v in found.values()), removed or "nothing")

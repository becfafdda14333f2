"""What the swarm driver does outside cluster tasks: the health monitor and its auto-heal."""

from __future__ import annotations

import logging
from collections import defaultdict
from contextlib import closing

import docker
import requests
import sqlalchemy as sa

from jeroboam import lifecycle, states
from jeroboam.db.models import Cluster, ClusterTemplate, NodeGroup, Task
from jeroboam.drivers import swarm_ops as swarm
from jeroboam.drivers.nodes import dead_nodes, node_key
from jeroboam.infra import Node, Provider, provider_for
from jeroboam.tasks import queue

LOG = logging.getLogger("jeroboam.drivers.swarm")

HEALTHY, UNHEALTHY, UNKNOWN = "HEALTHY", "UNHEALTHY", "UNKNOWN"
# Magnum's label, and the name this project used first (still honoured)
AUTO_HEAL_LABELS = ("auto_healing_enabled", "auto_heal_enabled")
# Clusters whose nodes no task is changing; the monitor looks only at these.
WATCHED = states.STABLE_STATUSES | {states.UPDATE_FAILED}
MONITOR_INTERVAL = 3.0  # seconds; a dead node shows down in swarm after about 5 s
CLIENT_TIMEOUT = 3  # seconds; a monitor round must not hang on one stuck dockerd


def auto_heal(labels: dict) -> bool:
    """Whether the cluster's labels ask for auto-heal."""
    return any(str(labels.get(label)).lower() == "true" for label in AUTO_HEAL_LABELS)


def swarm_view(managers: list[Node]) -> list[swarm.SwarmNode] | None:
    """Every node as the first manager that answers sees it; None when none answers."""
    for manager in managers:
        if not manager.ping():
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


def assess(provider: Provider, managers: list[Node],
           nodes: list[Node]) -> tuple[str, dict]:
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


class Monitor:
    """One round every few seconds, in every worker: health of each watched cluster of the
    driver; with the ``auto_healing_enabled`` label, a cluster with dead nodes gets a
    cluster.update task (durable, visible in the Tasks API) that replaces them."""

    __name__ = "health_monitor"  # names the worker's thread

    def __init__(self, driver_name: str, settings):
        self.driver_name = driver_name
        self.settings = settings

    def __call__(self, session_factory) -> None:
        with session_factory() as session:
            clusters = session.execute(
                sa.select(Cluster.uuid, Cluster.status, Cluster.labels, Cluster.health_status,
                          Cluster.health_status_reason, ClusterTemplate.server_type)
                .join(ClusterTemplate, ClusterTemplate.uuid == Cluster.cluster_template_id)
                .where(ClusterTemplate.driver == self.driver_name, Cluster.status.in_(WATCHED))
            ).all()
            if not clusters:
                return
            # made only now: a worker whose state_path cannot hold the provider's state still runs
            providers = {t: provider_for(t, self.settings)
                         for t in {c.server_type for c in clusters}}
            roles = dict(session.execute(
                sa.select(NodeGroup.uuid, NodeGroup.role)
                .where(NodeGroup.cluster_id.in_([c.uuid for c in clusters]))).all())
        nodes = defaultdict(list)
        for provider in providers.values():
            for key, info in sorted((k, n) for n in provider.nodes() if (k := node_key(n))):
                nodes[key[0]].append((roles.get(key[1]), info))
        for cluster in clusters:
            provider = providers[cluster.server_type]
            members = [info for _, info in nodes.get(cluster.uuid, [])]
            managers = [info for role, info in nodes.get(cluster.uuid, []) if role == "master"]
            status, reason = assess(provider, managers, members)
            if (status, reason) != (cluster.health_status, cluster.health_status_reason):
                with session_factory() as session, session.begin():
                    session.execute(sa.update(Cluster).where(Cluster.uuid == cluster.uuid)
                                    .values(health_status=status, health_status_reason=reason))
            if status != HEALTHY and auto_heal(cluster.labels):
                dead = dead_nodes(provider, members)
                if dead and cluster.status in states.STABLE_STATUSES:
                    self.heal(session_factory, cluster.uuid, dead)

    @staticmethod
    def heal(session_factory, cluster_uuid: str, dead: list[Node]) -> None:
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

"""What every COE driver does with a provider's nodes: which are dead, whose they are, and
reconciling the host with the database when a worker starts."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from jeroboam import states
from jeroboam.db.models import Cluster, ClusterTemplate
from jeroboam.db.stack_models import Stack, StackResource
from jeroboam.infra import Node, Provider
from jeroboam.orchestration.store import IN_PROGRESS
from jeroboam.tasks import queue

LOG = logging.getLogger("jeroboam.drivers.nodes")

# Clusters that have no working nodes to keep: their leftovers go when a worker starts.
BROKEN = frozenset({states.CREATE_FAILED, states.DELETE_FAILED})


def dead_nodes(provider: Provider, nodes: list[Node]) -> list[Node]:
    """Nodes whose dockerd is gone or does not answer: what a converge replaces."""
    return [n for n in nodes if not (provider.node_running(n.name) and n.ping())]


def node_key(info: Node) -> tuple[str, str, int] | None:
    """(cluster, nodegroup, index) of a cluster's node, from its node id (stack/cluster/
    nodegroup/index); None for a node of some other stack."""
    parts = info.node_id.split("/")
    return (parts[1], parts[2], int(parts[3])) if len(parts) == 4 and parts[3].isdigit() else None


def reconcile(provider: Provider, session_factory) -> None:
    """After a restart of ours or of the host: adopt the nodes of live clusters and stacks
    (their dockerds restarted if down), remove what the database does not know or what
    belongs to failed clusters. Clusters with a task under way or waiting (an operation in
    progress, a live worker on it) are left to it, their nodes neither removed nor restarted.
    Every cluster on the provider counts, whatever its driver: leftovers are the provider's."""
    node_type, network_type = provider.node_type, provider.network_type
    with session_factory() as session:
        clusters = session.execute(
            sa.select(Cluster.uuid, Cluster.status, Cluster.stack_id)
            .join(ClusterTemplate, ClusterTemplate.uuid == Cluster.cluster_template_id)
            .where(ClusterTemplate.server_type == provider.server_type)).all()
        resources = session.execute(
            sa.select(StackResource.stack_id, StackResource.type, StackResource.properties,
                      Stack.status)
            .join(Stack, Stack.uuid == StackResource.stack_id)
            .where(Stack.deleted_at.is_(None), StackResource.type.in_((node_type, network_type)))
        ).all()
        worked_on = queue.worked_on(session)
    if not clusters and not resources and not provider.has_state():
        return  # never used here: no need for root, dockerd, a short state_path...
    provider.setup()
    busy = {c.uuid for c in clusters if c.status in states.IN_PROGRESS_STATUSES or c.uuid in worked_on}
    broken = {c.stack_id for c in clusters if c.status in BROKEN and c.uuid not in busy}
    # a stack of the Stacks API is its own tasks' lock key
    busy_stacks = {c.stack_id for c in clusters if c.uuid in busy} | worked_on
    from jeroboam.drivers.stack import stack_id_of  # that module imports this one

    keep = {node_type: set(),
            network_type: {provider.scoped(stack_id_of(c), c) for c in busy}}
    adopt = {node_type: set(), network_type: set()}
    for res in resources:
        ident = (res.properties or {}).get("node_id" if res.type == node_type else "network_id")
        if not ident or res.stack_id in broken:
            continue
        ident = provider.scoped(res.stack_id, ident)
        keep[res.type].add(ident)
        if res.stack_id not in busy_stacks and res.status != IN_PROGRESS:
            adopt[res.type].add(ident)
    # a task may be making nodes its stack does not list yet
    keep[node_type] |= {n.node_id for n in provider.nodes()
                        if (key := node_key(n)) and key[0] in busy}
    removed = provider.remove_leftovers(sorted(keep[node_type]), sorted(keep[network_type]))
    found = provider.adopt(sorted(adopt[network_type]), sorted(adopt[node_type]))
    LOG.info("%s provider reconciled: %d nodes adopted, removed %s", provider.server_type,
             sum(v is not None for v in found.values()), removed or "nothing")

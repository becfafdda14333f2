"""What every COE driver does with a provider's nodes: which are dead, whose they are, and
reconciling the host with the database when a worker starts."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from jeroboam import states
from jeroboam.db.models import Cluster, ClusterTemplate, Task
from jeroboam.db.stack_models import Stack, StackResource
from jeroboam.infra import Node, Provider
from jeroboam.orchestration.store import IN_PROGRESS
from jeroboam.tasks import liveness

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


def owner(ident: str) -> str:
    """The stack a provider's node or network id belongs to (see Provider.scoped)."""
    return ident.split("/", 1)[0]


def reconcile(provider: Provider, session_factory) -> None:
    """After a restart of ours or of the host: adopt the nodes of live clusters and stacks
    (their dockerds restarted if down), remove what the database does not know or what
    belongs to failed clusters. A cluster or stack with an operation under way or waiting
    is left to it, its nodes neither removed nor restarted. Every cluster on the provider
    counts, whatever its driver: leftovers are the provider's.

    Race-free beside live workers, whatever they begin or end meanwhile:
    - the host is listed before the database is read. A worker makes nodes and networks
      only for a cluster or stack committed before (the API commits it with its task, and
      workers see committed tasks only), so the owner of anything listed was in the
      database before the read: one missing at the read was deleted, and nothing acts for
      a deleted one again. Its nodes and networks are leftovers.
    - every owner in the database is decided on, and acted on, in a transaction holding the
      lock of its lock key, under which it is read again. No task of the key starts while
      it is held (a claim takes it to start one: jeroboam.tasks.queue), and one that began
      before shows as a task running (its worker alive or not) which leaves the owner to it,
      as does one pending (an operation begun). The API never waits for that lock: an
      operation begun meanwhile queues its task, which starts once the owner is let go.
    - what has no record at all (a crash mid-create or mid-delete) the provider removes
      under its allocation lock, re-checked there (Provider.remove_debris).
    """
    if not provider.has_state():
        return  # never used here: no need for root, dockerd, a short state_path...
    from jeroboam.drivers.stack import stack_id_of  # that module imports this one

    provider.setup()
    listed = {owner(n.node_id) for n in provider.nodes()} | {owner(n.network_id) for n in provider.networks()}
    with session_factory() as session:
        clusters = {stack_id_of(uuid): uuid for uuid in session.scalars(
            sa.select(Cluster.uuid).join(ClusterTemplate, ClusterTemplate.uuid == Cluster.cluster_template_id)
            .where(ClusterTemplate.server_type == provider.server_type))}
        stacks = set(session.scalars(
            sa.select(Stack.uuid).where(Stack.deleted_at.is_(None), Stack.uuid.not_in(list(clusters)), sa.or_(
                Stack.uuid.in_(listed),
                Stack.uuid.in_(sa.select(StackResource.stack_id).where(
                    StackResource.type.in_((provider.node_type, provider.network_type))))))))
    gone = listed - clusters.keys() - stacks
    removed = _remove(provider, gone, lambda _: True) if gone else []
    adopted = 0
    for stack_id in sorted(clusters.keys() | stacks):
        with session_factory() as session, session.begin():
            done = _settle(provider, session, stack_id, clusters.get(stack_id))
        removed += done[0]
        adopted += done[1]
    removed += provider.remove_debris()
    LOG.info("%s provider reconciled: %d nodes adopted, removed %s", provider.server_type, adopted,
             removed or "nothing")


def _remove(provider: Provider, stacks: set[str], unwanted) -> list[str]:
    """Remove the nodes, then the networks, of these stacks for which unwanted(id) holds."""
    nodes = [n.name for n in provider.nodes() if owner(n.node_id) in stacks and unwanted(n.node_id)]
    provider.destroy_nodes(nodes)
    networks = [n for n in provider.networks() if owner(n.network_id) in stacks and unwanted(n.network_id)]
    for network in networks:
        provider.delete_network(network.network_id)
    return nodes + [n.name for n in networks]


def _settle(provider: Provider, session, stack_id: str, cluster: str | None) -> tuple[list[str], int]:
    """One owner, holding its lock key's lock: left alone when busy, else its nodes adopted and
    the rest of them removed (all of them for a failed cluster). (Names removed, nodes adopted.)"""
    key = cluster or stack_id
    if not liveness.hold(session, liveness.key_lock(key), wait=True):
        LOG.warning("%s: its lock key stayed held; left alone", key)
        return [], 0
    if cluster is not None:
        status = session.scalar(sa.select(Cluster.status).where(Cluster.uuid == cluster))
        busy, broken = status in states.IN_PROGRESS_STATUSES, status in BROKEN
    else:
        status = session.scalar(sa.select(Stack.status).where(Stack.uuid == stack_id, Stack.deleted_at.is_(None)))
        busy, broken = status == IN_PROGRESS, False
    if status is None:  # deleted since the read: nothing acts for it again
        return _remove(provider, {stack_id}, lambda _: True), 0
    if busy or session.scalar(sa.select(sa.exists().where(
            Task.lock_key == key, Task.state.in_((states.PENDING, states.RUNNING))))):
        return [], 0
    resources = [] if broken else session.execute(
        sa.select(StackResource.type, StackResource.properties, StackResource.status)
        .where(StackResource.stack_id == stack_id,
               StackResource.type.in_((provider.node_type, provider.network_type)))).all()
    wanted, adopt = set(), {provider.node_type: [], provider.network_type: []}
    for res in resources:
        ident = (res.properties or {}).get("node_id" if res.type == provider.node_type else "network_id")
        if ident:
            wanted.add(provider.scoped(stack_id, ident))
            if res.status != IN_PROGRESS:
                adopt[res.type].append(provider.scoped(stack_id, ident))
    removed = _remove(provider, {stack_id}, lambda ident: ident not in wanted)
    found = provider.adopt(sorted(adopt[provider.network_type]), sorted(adopt[provider.node_type]))
    return removed, sum(v is not None for v in found.values())

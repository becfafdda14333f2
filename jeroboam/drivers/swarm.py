"""Docker Swarm: coe ``swarm-mode`` (and the legacy ``swarm``), on the nodes of the provider of
the template's server_type (``local`` today).

A cluster is one orchestration stack: the provider's network resource and, per nodegroup, an
``OS::Heat::ResourceGroup`` of the provider's node resource. Master nodegroups are the swarm's
managers, the others its workers. Every change of nodes runs the same steps: choose the nodes
that go, take them out of the swarm, update and run the stack (nodes start and stop in
parallel), make the swarm match, report addresses. Steps are idempotent, so a worker taking a
task over resumes it.

Labels: ``image_tarballs`` (``FILE[=NAME],...``: tarballs in the provider's images directory,
``<state_path>/local/images``, imported into every node besides busybox; NAME for a root file
system tarball; an upgrade to a template naming others imports them), ``auto_healing_enabled``
(see swarm_health).
"""

from __future__ import annotations

import logging
from contextlib import closing

from jeroboam.db.models import NodeGroup
from jeroboam.drivers import swarm_ops as swarm
from jeroboam.drivers.nodes import dead_nodes
from jeroboam.drivers.stack import ClusterStack, StackDriver, counts, live, parallel
from jeroboam.drivers.swarm_health import (MONITOR_INTERVAL, Monitor, assess, by_hostname,
                                           swarm_view)
from jeroboam.infra import Node, server_types, wait_until
from jeroboam.pki import KeyPair

LOG = logging.getLogger("jeroboam.drivers.swarm")

# A dead node still shows ready for a few heartbeats; it is taken out only once it is down.
DOWN_TIMEOUT = 20
SWARM_TIMEOUT = 60
CREATE_STEPS = ["create stack", "start nodes", "form swarm", "report addresses"]
CONVERGE_STEPS = ["choose nodes", "drain nodes", "update nodes", "form swarm", "report addresses"]


class _ClusterStack(ClusterStack):
    """The cluster's stack, and the swarm its nodes form."""

    kind = "Docker Swarm"

    def roles(self, groups: list[NodeGroup]) -> tuple[list[Node], list[Node]]:
        """(managers, workers); managers that hold the swarm come first."""
        members = self.members(groups)
        managers = [n for g in groups if g.role == "master" for n in members[g.uuid]]
        workers = [n for g in groups if g.role != "master" for n in members[g.uuid]]
        return sorted(managers, key=lambda n: not _in_control(n)), workers

    def more_keys(self, nodes: list[Node]) -> dict[str, Node]:
        """Swarm node IDs, as the managers know them."""
        view = swarm_view(self.roles(live(self.ctx.nodegroups()))[0]) or []
        by_host = {n.hostname: n for n in nodes}
        return {sn.id: by_host[sn.hostname] for sn in view if sn.hostname in by_host}

    def drain(self, names: list[str]) -> None:
        """Take nodes out of the swarm (managers demoted first) before they are deleted."""
        leaving = [i for n in names if (i := self.provider.get_node(n))]
        groups = live(self.ctx.nodegroups())
        managers = [m for m in self.roles(groups)[0] if m.name not in names]
        view = swarm_view(managers)
        if not leaving or view is None:
            if leaving:
                self.ctx.event("no manager answers: nodes are deleted without draining")
            return
        seen = by_hostname(view)
        dead = {n.name for n in dead_nodes(self.provider, leaving)}
        manager = managers[0]

        def remove(info: Node) -> None:
            node = seen[info.hostname]
            with closing(manager.client()) as mgr:
                if info.name in dead:
                    # draining would wait for tasks that cannot stop
                    wait_until(lambda: mgr.api.inspect_node(node.id)["Status"]["State"] != "ready",
                               DOWN_TIMEOUT, "wait for the dead node to be down", interval=0.2)
                swarm.remove_node(mgr, node.id)

        listed = [i for i in leaving if i.hostname in seen]
        for info in listed:
            if seen[info.hostname].role == "manager":
                remove(info)  # raft membership changes go one at a time
        parallel(remove, [i for i in listed if seen[i.hostname].role != "manager"])

    def form_swarm(self, groups: list[NodeGroup]) -> None:
        managers, workers = self.roles(groups)
        scale = self.provider.time_scale
        swarm.form_swarm(managers, workers, heartbeat=swarm.DEFAULT_HEARTBEAT * scale,
                         timeout=SWARM_TIMEOUT * scale)

    def report(self, groups: list[NodeGroup]) -> None:
        members = self.members(groups)
        managers, workers = self.roles(groups)
        first = managers[0]
        with closing(first.client()) as client:
            version = client.version()["Version"]
        health, reason = assess(self.provider, managers, managers + workers)
        self.ctx.update_cluster(api_address=first.api_address, coe_version=version,
                                container_version=version, stack_id=self.id,
                                health_status=health, health_status_reason=reason)
        for group in groups:
            self.ctx.update_nodegroup(group.uuid, stack_id=self.id,
                                      node_addresses=[n.address for n in members[group.uuid]])


def _in_control(node: Node) -> bool:
    """Whether the node is a manager of an active swarm (the one to init from or join to)."""
    if not node.ping():
        return False
    with closing(node.client(timeout=5)) as client:
        state = client.info()["Swarm"]
    return state["LocalNodeState"] == "active" and bool(state.get("ControlAvailable"))


class SwarmDriver(StackDriver):
    stack_class = _ClusterStack

    @property
    def provides(self) -> list[dict]:
        # every provider's nodes run a dockerd: a swarm can be made of any of them
        return [{"server_type": t, "os": "debian", "coe": coe}
                for t in server_types() for coe in ("swarm-mode", "swarm")]

    # --- cluster life cycle ------------------------------------------------------------

    def create_cluster(self, ctx) -> None:
        s = _ClusterStack(ctx)
        groups = live(ctx.nodegroups())
        ctx.plan(CREATE_STEPS)
        ctx.run_step("create stack", lambda: s.create(groups))
        ctx.run_step("start nodes", lambda: s.run("CREATE"))
        ctx.run_step("form swarm", lambda: s.form_swarm(groups))
        ctx.run_step("report addresses", lambda: s.report(groups))

    def rotate_ca_certificate(self, ctx, new_ca: KeyPair) -> None:
        """Managers restart one at a time with certificates from the new CA (the raft quorum
        holds), then the stack takes the new CA and restarts the workers in parallel. Swarm
        state lives in each node's data-root, so the swarm is the same afterwards."""
        s = _ClusterStack(ctx)
        groups = live(ctx.nodegroups())
        managers, workers = s.roles(groups)
        leader = {n.hostname for n in swarm_view(managers) or [] if n.leader}
        # The leader last: its restart costs an election (about 15 s), the others' nothing.
        # (Demoting it first would hand leadership over at once, but the raft membership
        # changes that takes failed often on a loaded host.)
        for manager in sorted(managers, key=lambda m: m.hostname in leader):
            s.provider.restart_with_ca(manager.name, new_ca)
            s.provider.wait_nodes([manager.name])
            with closing(manager.client()) as client:
                swarm.wait_ready(client, len(managers) + len(workers), SWARM_TIMEOUT)
        s.update(groups, {"ca_cert": new_ca.cert_pem, "ca_key": new_ca.key_pem})
        s.form_swarm(groups)

    # --- the rest of the interface ------------------------------------------------------

    def periodic_tasks(self, settings):
        return [(MONITOR_INTERVAL, Monitor(self.name, settings))]

    # --- converge ----------------------------------------------------------------------

    def converge(self, ctx, remove: dict[str, list[str]] | None = None,
                 images: list[dict] | None = None) -> None:
        s = _ClusterStack(ctx)
        groups = live(ctx.nodegroups())
        ctx.plan(CONVERGE_STEPS)
        ctx.run_step("choose nodes", lambda: s.choose(remove))
        ctx.run_step("drain nodes", lambda: s.drain(ctx.payload["drain"]))
        params = counts(groups, ctx.payload["removals"])
        if images is not None:
            params["images"] = images
        ctx.run_step("update nodes", lambda: s.update(groups, params))
        ctx.run_step("form swarm", lambda: s.form_swarm(groups))
        ctx.run_step("report addresses", lambda: s.report(groups))

"""Docker Swarm: coe ``swarm-mode`` (and the legacy ``swarm``), on the nodes of the provider of
the template's server_type (``local`` today).

A cluster is one orchestration stack: the provider's network resource and, per nodegroup, an
``OS::Heat::ResourceGroup`` of the provider's node resource. Master nodegroups are the swarm's
managers, the others its workers. Every change of nodes runs the same steps: choose the nodes
that go, take them out of the swarm, update and run the stack (nodes start and stop in
parallel), make the swarm match, report addresses. Steps are idempotent, so a worker taking a
task over resumes it.

Labels: ``image_tarballs`` (``FILE[=NAME],...``: tarballs in the provider's images directory,
``<data_dir>/local/images``, imported into every node besides busybox; NAME for a root file
system tarball; an upgrade to a template naming others imports them), ``auto_heal_enabled``
(see swarm_health).
"""

from __future__ import annotations

import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import sqlalchemy as sa

from jeroboam import states
from jeroboam.db.models import ClusterTemplate, NodeGroup
from jeroboam.drivers import Driver
from jeroboam.drivers import swarm_ops as swarm
from jeroboam.drivers.nodes import dead_nodes, reconcile
from jeroboam.drivers.swarm_health import (MONITOR_INTERVAL, Monitor, assess, by_hostname,
                                           swarm_view)
from jeroboam.infra import InfraError, Node, Provider, provider_for, server_types, wait_until
from jeroboam.orchestration.engine import Engine
from jeroboam.orchestration.sql_store import SqlStore
from jeroboam.orchestration.store import COMPLETE, DELETE, IN_PROGRESS, StackRecord
from jeroboam.orchestration.errors import StackNotFound
from jeroboam.pki import KeyPair
from jeroboam.tasks.context import TaskCancelled

LOG = logging.getLogger("jeroboam.drivers.swarm")

IMAGES_LABEL = "image_tarballs"
TEMPLATE_VERSION = "2018-08-31"
# A cluster's stack id is derived from the cluster's, so a retried create finds its stack.
STACK_NAMESPACE = uuid.UUID("6a0c3f8e-5f4e-4d55-9d55-6a1c2b9e7f10")
# A dead node still shows ready for a few heartbeats; it is taken out only once it is down.
DOWN_TIMEOUT = 20
SWARM_TIMEOUT = 60
CREATE_STEPS = ["create stack", "start nodes", "form swarm", "report addresses"]
CONVERGE_STEPS = ["choose nodes", "drain nodes", "update nodes", "form swarm", "report addresses"]
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


class StackFailed(RuntimeError):
    pass


def stack_id_of(cluster_uuid: str) -> str:
    return str(uuid.uuid5(STACK_NAMESPACE, cluster_uuid))


def parse_images(labels: dict) -> list[dict]:
    images = []
    for entry in str(labels.get(IMAGES_LABEL) or "").split(","):
        path, _, name = entry.strip().partition("=")
        if path:
            images.append({"path": path, **({"name": name} if name else {})})
    return images


def _group_key(group: NodeGroup) -> str:
    """The nodegroup's resource (and output) name in the stack."""
    return "ng-" + (group.name if SAFE_NAME.fullmatch(group.name) else group.uuid)


def _hostname(cluster_name: str | None, group: NodeGroup) -> str:
    def label(text: str, size: int) -> str:
        return re.sub(r"[^a-z0-9-]+", "-", (text or "").lower()).strip("-")[:size].strip("-")
    kind = ("master" if group.role == "master" else "node") if group.is_default \
        else label(group.name, 20) or group.uuid[:8]
    return f"{label(cluster_name, 30) or 'cluster'}-{kind}-%index%"


def stack_template(provider: Provider, cluster, groups: list[NodeGroup]) -> dict:
    parameters = {"ca_cert": {"type": "string"}, "ca_key": {"type": "string", "hidden": True},
                  "images": {"type": "json", "default": []}}
    resources = {"network": provider.network_resource(cluster.uuid)}
    outputs = {}
    for group in groups:
        key = _group_key(group)
        parameters[f"{key}_count"] = {"type": "number"}
        parameters[f"{key}_remove"] = {"type": "comma_delimited_list", "default": []}
        resources[key] = {"type": "OS::Heat::ResourceGroup", "properties": {
            "count": {"get_param": f"{key}_count"},
            # names removed are never reused: hostnames stay unique in the swarm
            "removal_policies": [{"resource_list": {"get_param": f"{key}_remove"}}],
            "resource_def": provider.node_resource(
                node_id=f"{cluster.uuid}/{group.uuid}/%index%",
                network={"get_attr": ["network", "network_id"]},
                hostname=_hostname(cluster.name, group),
                ca_cert={"get_param": "ca_cert"}, ca_key={"get_param": "ca_key"},
                images={"get_param": "images"}),
        }}
        outputs[key] = {"description": f"nodegroup {group.name} ({group.role}): member -> node",
                        "value": {"get_attr": [key, "refs_map"]}}
    return {"heat_template_version": TEMPLATE_VERSION,
            "description": f"Docker Swarm cluster {cluster.name} ({cluster.uuid})",
            "parameters": parameters, "resources": resources, "outputs": outputs}


def _counts(groups: list[NodeGroup], removals: dict[str, list[str]]) -> dict:
    params = {}
    for group in groups:
        params[f"{_group_key(group)}_count"] = group.node_count
        params[f"{_group_key(group)}_remove"] = removals.get(group.uuid, [])
    return params


def _live(groups: list[NodeGroup]) -> list[NodeGroup]:
    return [g for g in groups if g.status not in states.DELETE_STATUSES]


class _ClusterStack:
    """One task's view of its cluster: the stack, the engine that runs it, the provider."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.provider = provider_for(ctx.template.server_type, ctx.task.settings)
        # the engine's writes are fenced like the task's own: a worker whose task was taken
        # over stops at its next write
        store = SqlStore(ctx.task.session_factory, fence=ctx.task.owned)
        self.engine = Engine(store, concurrency=32)
        self.cluster = ctx.cluster
        self.id = stack_id_of(self.cluster.uuid)

    def get(self) -> StackRecord | None:
        try:
            stack = self.engine.store.get_stack(self.id)
        except StackNotFound:
            return None
        return None if stack.state == f"{DELETE}_{COMPLETE}" else stack

    def _run(self) -> StackRecord:
        """Run (or resume) the stack's action in progress; stops when the task is cancelled."""
        cancelled = []

        def cancel() -> bool:
            try:
                self.ctx.check_cancel()
            except TaskCancelled:
                cancelled.append(True)
                return True
            return False

        stack = self.engine.run(self.id, cancel=cancel)
        if cancelled:
            raise TaskCancelled(stack.status_reason)
        return stack

    def run(self, action: str) -> StackRecord:
        """Run the stack's action in progress; raise unless it completes."""
        stack = self._run()
        if stack.state != f"{action}_{COMPLETE}":
            raise StackFailed(f"stack {stack.state}: {stack.status_reason}")
        return stack

    def settle(self) -> StackRecord | None:
        """Finish, whatever its outcome, an action a worker left in progress (it died, or its
        task was cancelled while taken over): a new action starts from a settled stack."""
        stack = self.get()
        return self._run() if stack is not None and stack.status == IN_PROGRESS else stack

    def members(self, groups: list[NodeGroup]) -> dict[str, list[Node]]:
        """Nodegroup uuid -> its nodes, oldest first."""
        stack = self.get()
        outputs = {o["output_key"]: o.get("output_value") for o in self.engine.outputs(stack)} \
            if stack else {}
        members = {}
        for group in groups:
            refs = outputs.get(_group_key(group)) or {}
            names = [refs[k] for k in sorted(refs, key=int) if refs[k]]
            members[group.uuid] = [i for n in names if (i := self.provider.get_node(n))]
        return members

    def roles(self, groups: list[NodeGroup]) -> tuple[list[Node], list[Node]]:
        """(managers, workers); managers that hold the swarm come first."""
        members = self.members(groups)
        managers = [n for g in groups if g.role == "master" for n in members[g.uuid]]
        workers = [n for g in groups if g.role != "master" for n in members[g.uuid]]
        return sorted(managers, key=lambda n: not _in_control(n)), workers

    def update(self, groups: list[NodeGroup], params: dict) -> None:
        """Bring the stack to the template of ``groups`` with ``params`` (others kept)."""
        stack = self.settle()
        template = stack_template(self.provider, self.cluster, groups)
        wanted = {**{k: v for k, v in stack.parameters.items() if k in template["parameters"]},
                  **params}
        if stack.template == template and stack.parameters == wanted \
                and stack.state in (f"{a}_{COMPLETE}" for a in ("CREATE", "UPDATE")):
            return  # done before a takeover
        self.engine.update_stack(self.id, template, params)
        self.run("UPDATE")

    def drain(self, names: list[str]) -> None:
        """Take nodes out of the swarm (managers demoted first) before they are deleted."""
        leaving = [i for n in names if (i := self.provider.get_node(n))]
        groups = _live(self.ctx.nodegroups())
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
        _parallel(remove, [i for i in listed if seen[i.hostname].role != "manager"])

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


def _parallel(fn, items: list) -> None:
    if items:
        with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
            for future in [pool.submit(fn, item) for item in items]:
                future.result()


class SwarmDriver(Driver):
    @property
    def provides(self) -> list[dict]:
        # every provider's nodes run a dockerd: a swarm can be made of any of them
        return [{"server_type": t, "os": "debian", "coe": coe}
                for t in server_types() for coe in ("swarm-mode", "swarm")]

    # --- cluster life cycle ------------------------------------------------------------

    def create_cluster(self, ctx) -> None:
        s = _ClusterStack(ctx)
        groups = _live(ctx.nodegroups())
        ctx.plan(CREATE_STEPS)

        def create_stack() -> None:
            if s.get() is None:
                ca = ctx.ca()
                params = {"ca_cert": ca.cert_pem, "ca_key": ca.key_pem,
                          "images": parse_images({**ctx.template.labels, **s.cluster.labels}),
                          **_counts(groups, {})}
                s.engine.create_stack(f"{s.cluster.name}-{s.cluster.uuid}"[-255:],
                                      stack_template(s.provider, s.cluster, groups), params,
                                      project_id=s.cluster.project_id,
                                      timeout_mins=s.cluster.create_timeout, stack_id=s.id)
            ctx.update_cluster(stack_id=s.id)

        ctx.run_step("create stack", create_stack)
        ctx.run_step("start nodes", lambda: s.run("CREATE"))
        ctx.run_step("form swarm", lambda: s.form_swarm(groups))
        ctx.run_step("report addresses", lambda: s.report(groups))

    def update_cluster(self, ctx) -> None:
        """Converge: node counts as the nodegroups ask, dead nodes replaced."""
        self._converge(ctx)

    def resize_cluster(self, ctx, nodegroup: str, node_count: int,
                       nodes_to_remove: list[str]) -> None:
        self._converge(ctx, {nodegroup: nodes_to_remove})

    def upgrade_cluster(self, ctx, template_uuid: str, max_batch_size: int,
                        nodegroup: str) -> None:
        """Import the tarballs the new template names into every node (nothing restarts, so
        every node is done at once whatever the batch size)."""
        with ctx.task.session_factory() as session:
            labels = session.scalar(sa.select(ClusterTemplate.labels)
                                    .where(ClusterTemplate.uuid == template_uuid))
        images = parse_images(labels or {})
        ctx.event(f"images to import: {', '.join(i['path'] for i in images) or 'none'}")
        self._converge(ctx, images=images)

    def create_nodegroup(self, ctx, nodegroup: str) -> None:
        self._converge(ctx)

    def update_nodegroup(self, ctx, nodegroup: str) -> None:
        self._converge(ctx)

    def delete_nodegroup(self, ctx, nodegroup: str) -> None:
        self._converge(ctx)  # the nodegroup is DELETE_IN_PROGRESS: its nodes go

    def delete_cluster(self, ctx) -> None:
        s = _ClusterStack(ctx)
        ctx.plan(["delete nodes", "clean up host"])

        def delete_stack() -> None:
            stack = s.get()
            if stack is None:
                return
            if stack.action != DELETE:
                s.settle()
            s.engine.delete_stack(s.id)  # one under way goes on
            s.run(DELETE)

        def clean_up() -> None:
            # what a stack never recorded (a create interrupted at the wrong moment)
            prefix = s.provider.scoped(s.id, f"{s.cluster.uuid}/")
            left = [n.name for n in s.provider.nodes() if n.node_id.startswith(prefix)]
            s.provider.destroy_nodes(left)
            network = s.provider.scoped(s.id, s.cluster.uuid)
            if s.provider.get_network(network) is not None:
                s.provider.delete_network(network)

        ctx.run_step("delete nodes", delete_stack)
        ctx.run_step("clean up host", clean_up)

    def rotate_ca_certificate(self, ctx, new_ca: KeyPair) -> None:
        """Managers restart one at a time with certificates from the new CA (the raft quorum
        holds), then the stack takes the new CA and restarts the workers in parallel. Swarm
        state lives in each node's data-root, so the swarm is the same afterwards."""
        s = _ClusterStack(ctx)
        groups = _live(ctx.nodegroups())
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

    def on_worker_start(self, session_factory, settings) -> None:
        for server_type in server_types():
            try:
                # also the resources' provider, for stacks of the Stacks API
                provider = provider_for(server_type, settings)
            except InfraError as exc:
                LOG.warning("the %s provider cannot work in this worker: %s", server_type, exc)
                continue
            try:
                reconcile(provider, session_factory)
            except Exception:  # a host without dockerd still serves the API and other drivers
                LOG.exception("reconciling the %s provider with the database failed",
                              server_type)

    # --- converge ----------------------------------------------------------------------

    def _converge(self, ctx, remove: dict[str, list[str]] | None = None,
                  images: list[dict] | None = None) -> None:
        s = _ClusterStack(ctx)
        everything = ctx.nodegroups()
        groups = _live(everything)
        ctx.plan(CONVERGE_STEPS)

        def choose() -> None:
            members = s.members(everything)
            removals, leaving = {}, []
            for group in groups:
                nodes = members[group.uuid]
                gone = dead_nodes(s.provider, nodes)
                for info in _resolve(s, group, nodes, (remove or {}).get(group.uuid, [])):
                    if info not in gone:
                        gone.append(info)
                survivors = [n for n in nodes if n not in gone]
                gone += survivors[group.node_count:]  # else the newest go
                removals[group.uuid] = [n.name for n in gone]
                leaving += gone
            leaving += [n for g in everything if g not in groups for n in members[g.uuid]]
            ctx.save_payload(removals=removals, drain=[n.name for n in leaving])
            if leaving:
                ctx.event(f"nodes to remove: {', '.join(n.hostname for n in leaving)}")

        ctx.run_step("choose nodes", choose)
        ctx.run_step("drain nodes", lambda: s.drain(ctx.payload["drain"]))
        params = _counts(groups, ctx.payload["removals"])
        if images is not None:
            params["images"] = images
        ctx.run_step("update nodes", lambda: s.update(groups, params))
        ctx.run_step("form swarm", lambda: s.form_swarm(groups))
        ctx.run_step("report addresses", lambda: s.report(groups))


def _resolve(s: _ClusterStack, group: NodeGroup, nodes: list[Node],
             wanted: list[str]) -> list[Node]:
    """The nodes named in a resize's nodes_to_remove: by node name, hostname, address, node id
    or swarm node ID."""
    keys = {k: n for n in nodes for k in (n.name, n.hostname, n.address, n.node_id)}
    missing = [w for w in wanted if w not in keys]
    if missing:
        view = swarm_view(s.roles(_live(s.ctx.nodegroups()))[0]) or []
        by_host = {n.hostname: n for n in nodes}
        keys.update({sn.id: by_host[sn.hostname] for sn in view if sn.hostname in by_host})
        missing = [w for w in wanted if w not in keys]
    if missing:
        raise InfraError("choose nodes", f"{', '.join(missing)}: not nodes of nodegroup "
                         f"{group.name}")
    return [keys[w] for w in wanted]

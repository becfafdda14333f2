"""What every COE driver does with its cluster's orchestration stack, whatever the COE.

A cluster is one stack: the provider's network resource and, per nodegroup, an
``OS::Heat::ResourceGroup`` of the provider's node resource. Node changes go through the stack
(nodes start and stop in parallel); a driver adds what its COE needs around that. Steps are
idempotent, so a worker taking a task over resumes it.
"""

from __future__ import annotations

import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from jeroboam import states
from jeroboam.db.models import ClusterTemplate, NodeGroup
from jeroboam.drivers import Driver
from jeroboam.drivers.nodes import dead_nodes, reconcile
from jeroboam.infra import InfraError, Node, Provider, provider_for, server_types
from jeroboam.orchestration.engine import Engine
from jeroboam.orchestration.errors import StackNotFound
from jeroboam.orchestration.sql_store import SqlStore
from jeroboam.orchestration.store import COMPLETE, DELETE, IN_PROGRESS, StackRecord
from jeroboam.tasks.context import TaskCancelled

LOG = logging.getLogger("jeroboam.drivers")

IMAGES_LABEL = "image_tarballs"
TEMPLATE_VERSION = "2018-08-31"
# A cluster's stack id is derived from the cluster's, so a retried create finds its stack.
STACK_NAMESPACE = uuid.UUID("6a0c3f8e-5f4e-4d55-9d55-6a1c2b9e7f10")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
DELETE_STEPS = ["delete nodes", "clean up host"]


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


def group_key(group: NodeGroup) -> str:
    """The nodegroup's resource (and output) name in the stack."""
    return "ng-" + (group.name if SAFE_NAME.fullmatch(group.name) else group.uuid)


def hostname_pattern(cluster_name: str | None, group: NodeGroup) -> str:
    def label(text: str, size: int) -> str:
        return re.sub(r"[^a-z0-9-]+", "-", (text or "").lower()).strip("-")[:size].strip("-")
    kind = ("master" if group.role == "master" else "node") if group.is_default \
        else label(group.name, 20) or group.uuid[:8]
    return f"{label(cluster_name, 30) or 'cluster'}-{kind}-%index%"


def stack_template(provider: Provider, cluster, groups: list[NodeGroup], kind: str) -> dict:
    parameters = {"ca_cert": {"type": "string"}, "ca_key": {"type": "string", "hidden": True},
                  "images": {"type": "json", "default": []}}
    resources = {"network": provider.network_resource(cluster.uuid)}
    outputs = {}
    for group in groups:
        key = group_key(group)
        parameters[f"{key}_count"] = {"type": "number"}
        parameters[f"{key}_remove"] = {"type": "comma_delimited_list", "default": []}
        resources[key] = {"type": "OS::Heat::ResourceGroup", "properties": {
            "count": {"get_param": f"{key}_count"},
            # names removed are never reused: hostnames stay unique in the cluster
            "removal_policies": [{"resource_list": {"get_param": f"{key}_remove"}}],
            "resource_def": provider.node_resource(
                node_id=f"{cluster.uuid}/{group.uuid}/%index%",
                network={"get_attr": ["network", "network_id"]},
                hostname=hostname_pattern(cluster.name, group),
                ca_cert={"get_param": "ca_cert"}, ca_key={"get_param": "ca_key"},
                images={"get_param": "images"}),
        }}
        outputs[key] = {"description": f"nodegroup {group.name} ({group.role}): member -> node",
                        "value": {"get_attr": [key, "refs_map"]}}
    return {"heat_template_version": TEMPLATE_VERSION,
            "description": f"{kind} cluster {cluster.name} ({cluster.uuid})",
            "parameters": parameters, "resources": resources, "outputs": outputs}


def counts(groups: list[NodeGroup], removals: dict[str, list[str]]) -> dict:
    params = {}
    for group in groups:
        params[f"{group_key(group)}_count"] = group.node_count
        params[f"{group_key(group)}_remove"] = removals.get(group.uuid, [])
    return params


def live(groups: list[NodeGroup]) -> list[NodeGroup]:
    return [g for g in groups if g.status not in states.DELETE_STATUSES]


def parallel(fn, items: list) -> list:
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        return [future.result() for future in [pool.submit(fn, item) for item in items]]


class ClusterStack:
    """One task's view of its cluster: the stack, the engine that runs it, the provider.
    Drivers subclass it; ``kind`` names the COE in the stack's description."""

    kind = "Container"

    def __init__(self, ctx):
        self.ctx = ctx
        self.provider = provider_for(ctx.template.server_type, ctx.task.settings)
        # the engine's writes are fenced like the task's own: a worker whose task was taken
        # over stops at its next write
        store = SqlStore(ctx.task.session_factory, fence=ctx.task.owned)
        self.engine = Engine(store, concurrency=32)
        self.cluster = ctx.cluster
        self.id = stack_id_of(self.cluster.uuid)

    def template(self, groups: list[NodeGroup]) -> dict:
        return stack_template(self.provider, self.cluster, groups, self.kind)

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
            except TaskCancelled as exc:
                cancelled.append(exc)
                return True
            return False

        stack = self.engine.run(self.id, cancel=cancel)
        if cancelled:
            raise cancelled[0]  # the task's reason: who asked it to stop
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

    def create(self, groups: list[NodeGroup]) -> None:
        """The ``create stack`` step: the stack of ``groups`` with the cluster's CA and
        images (the ``start nodes`` step runs it)."""
        if self.get() is None:
            ca = self.ctx.ca()
            params = {"ca_cert": ca.cert_pem, "ca_key": ca.key_pem,
                      "images": parse_images({**self.ctx.template.labels, **self.cluster.labels}),
                      **counts(groups, {})}
            self.engine.create_stack(f"{self.cluster.name}-{self.cluster.uuid}"[-255:],
                                     self.template(groups), params,
                                     project_id=self.cluster.project_id,
                                     timeout_mins=self.cluster.create_timeout, stack_id=self.id)
        self.ctx.update_cluster(stack_id=self.id)

    def members(self, groups: list[NodeGroup]) -> dict[str, list[Node]]:
        """Nodegroup uuid -> its nodes, oldest first."""
        stack = self.get()
        outputs = {o["output_key"]: o.get("output_value") for o in self.engine.outputs(stack)} \
            if stack else {}
        members = {}
        for group in groups:
            refs = outputs.get(group_key(group)) or {}
            names = [refs[k] for k in sorted(refs, key=int) if refs[k]]
            members[group.uuid] = [i for n in names if (i := self.provider.get_node(n))]
        return members

    def update(self, groups: list[NodeGroup], params: dict) -> None:
        """Bring the stack to the template of ``groups`` with ``params`` (others kept)."""
        stack = self.settle()
        template = self.template(groups)
        wanted = {**{k: v for k, v in stack.parameters.items() if k in template["parameters"]},
                  **params}
        if stack.template == template and stack.parameters == wanted \
                and stack.state in (f"{a}_{COMPLETE}" for a in ("CREATE", "UPDATE")):
            return  # done before a takeover
        self.engine.update_stack(self.id, template, params)
        self.run("UPDATE")

    # --- what goes in a change of nodes --------------------------------------------------

    def dead(self, group: NodeGroup, nodes: list[Node]) -> list[Node]:
        """The group's nodes a converge replaces."""
        return dead_nodes(self.provider, nodes)

    def more_keys(self, nodes: list[Node]) -> dict[str, Node]:
        """Other names a resize's nodes_to_remove may give nodes by (e.g. the COE's IDs)."""
        return {}

    def resolve(self, group: NodeGroup, nodes: list[Node], wanted: list[str]) -> list[Node]:
        """The nodes named in a resize's nodes_to_remove: by node name, hostname, address,
        node id, or what :meth:`more_keys` knows."""
        keys = {k: n for n in nodes for k in (n.name, n.hostname, n.address, n.node_id)}
        if any(w not in keys for w in wanted):
            keys.update(self.more_keys(nodes))
        missing = [w for w in wanted if w not in keys]
        if missing:
            raise InfraError("choose nodes", f"{', '.join(missing)}: not nodes of nodegroup "
                             f"{group.name}")
        return [keys[w] for w in wanted]

    def choose(self, remove: dict[str, list[str]] | None) -> None:
        """The ``choose nodes`` step: per live nodegroup, its dead nodes, those named, and the
        newest beyond its node_count go, as do all nodes of groups being deleted. Kept in the
        task's payload (``removals``: group -> names, ``drain``: every name)."""
        everything = self.ctx.nodegroups()
        groups = live(everything)
        members = self.members(everything)
        removals, leaving = {}, []
        for group in groups:
            nodes = members[group.uuid]
            gone = self.dead(group, nodes)
            for info in self.resolve(group, nodes, (remove or {}).get(group.uuid, [])):
                if info not in gone:
                    gone.append(info)
            survivors = [n for n in nodes if n not in gone]
            gone += survivors[group.node_count:]  # else the newest go
            removals[group.uuid] = [n.name for n in gone]
            leaving += gone
        leaving += [n for g in everything if g not in groups for n in members[g.uuid]]
        self.ctx.save_payload(removals=removals, drain=[n.name for n in leaving])
        if leaving:
            self.ctx.event(f"nodes to remove: {', '.join(n.hostname for n in leaving)}")

    def delete(self) -> None:
        """The whole delete: the stack, then whatever of the cluster a stack never recorded
        (a create interrupted at the wrong moment)."""
        self.ctx.plan(DELETE_STEPS)

        def delete_stack() -> None:
            stack = self.get()
            if stack is None:
                return
            if stack.action != DELETE:
                self.settle()
            self.engine.delete_stack(self.id)  # one under way goes on
            self.run(DELETE)

        def clean_up() -> None:
            prefix = self.provider.scoped(self.id, f"{self.cluster.uuid}/")
            left = [n.name for n in self.provider.nodes() if n.node_id.startswith(prefix)]
            self.provider.destroy_nodes(left)
            network = self.provider.scoped(self.id, self.cluster.uuid)
            if self.provider.get_network(network) is not None:
                self.provider.delete_network(network)

        self.ctx.run_step(DELETE_STEPS[0], delete_stack)
        self.ctx.run_step(DELETE_STEPS[1], clean_up)


def reconcile_providers(session_factory, settings) -> None:
    """A driver's on_worker_start: each provider set up (also for the stacks of the Stacks
    API) and reconciled with the database."""
    for server_type in server_types():
        try:
            provider = provider_for(server_type, settings)
        except InfraError as exc:
            LOG.warning("the %s provider cannot work in this worker: %s", server_type, exc)
            continue
        try:
            reconcile(provider, session_factory)
        except Exception:  # a host without dockerd still serves the API and other drivers
            LOG.exception("reconciling the %s provider with the database failed", server_type)


class StackDriver(Driver):
    """A driver whose clusters are such stacks: every change of nodes is one converge
    (:meth:`converge`, the driver's own steps), a delete is the stack's."""

    stack_class = ClusterStack

    def converge(self, ctx, remove: dict[str, list[str]] | None = None,
                 images: list[dict] | None = None) -> None:
        """Node counts as the nodegroups ask, dead nodes and those in ``remove`` (nodegroup
        uuid -> names) replaced; with ``images``, those imported into every node."""
        raise NotImplementedError

    def update_cluster(self, ctx) -> None:
        self.converge(ctx)

    def resize_cluster(self, ctx, nodegroup: str, node_count: int,
                       nodes_to_remove: list[str]) -> None:
        self.converge(ctx, {nodegroup: nodes_to_remove})

    def upgrade_cluster(self, ctx, template_uuid: str, max_batch_size: int,
                        nodegroup: str) -> None:
        """Import the tarballs the new template names into every node (nothing restarts, so
        every node is done at once whatever the batch size)."""
        with ctx.task.session_factory() as session:
            labels = session.scalar(sa.select(ClusterTemplate.labels)
                                    .where(ClusterTemplate.uuid == template_uuid))
        images = parse_images(labels or {})
        ctx.event(f"images to import: {', '.join(i['path'] for i in images) or 'none'}")
        self.converge(ctx, images=images)

    def create_nodegroup(self, ctx, nodegroup: str) -> None:
        self.converge(ctx)

    def update_nodegroup(self, ctx, nodegroup: str) -> None:
        self.converge(ctx)

    def delete_nodegroup(self, ctx, nodegroup: str) -> None:
        self.converge(ctx)  # the nodegroup is DELETE_IN_PROGRESS: its nodes go

    def delete_cluster(self, ctx) -> None:
        self.stack_class(ctx).delete()

    def on_worker_start(self, session_factory, settings) -> None:
        reconcile_providers(session_factory, settings)

"""Cluster and nodegroup actions: what a worker runs for each task, and how the task's end
moves the cluster through its state machine (jeroboam.states.CLUSTER).

The API has begun the operation (jeroboam.lifecycle.begin) in the transaction that
queued the task; here the driver does the work, and the task's end settles the
status (jeroboam.lifecycle.settle), in the same transaction as the task's own state.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from jeroboam import lifecycle, pki
from jeroboam.db.models import Cluster, ClusterTemplate, NodeGroup, Task
from jeroboam.drivers import Registry
from jeroboam.tasks import registry
from jeroboam.tasks.context import TaskContext

class ClusterContext:
    """A TaskContext plus access to the cluster the task works on."""

    def __init__(self, task_ctx: TaskContext, cluster_uuid: str):
        self.task = task_ctx
        self.cluster_uuid = cluster_uuid
        self.payload = task_ctx.payload
        self.run_step = task_ctx.run_step
        self.plan = task_ctx.plan
        self.event = task_ctx.event
        self.check_cancel = task_ctx.check_cancel

    def _session(self):
        return self.task.session_factory()

    @property
    def cluster(self) -> Cluster:
        with self._session() as session:
            return session.scalars(sa.select(Cluster).where(Cluster.uuid == self.cluster_uuid)).one()

    @property
    def template(self) -> ClusterTemplate:
        with self._session() as session:
            cluster = session.scalars(sa.select(Cluster).where(Cluster.uuid == self.cluster_uuid)).one()
            return session.scalars(
                sa.select(ClusterTemplate).where(ClusterTemplate.uuid == cluster.cluster_template_id)).one()

    def nodegroups(self) -> list[NodeGroup]:
        with self._session() as session:
            return list(session.scalars(
                sa.select(NodeGroup).where(NodeGroup.cluster_id == self.cluster_uuid).order_by(NodeGroup.id)))

    def ca(self) -> pki.KeyPair:
        cluster = self.cluster
        return pki.KeyPair(cluster.ca_cert_pem, cluster.ca_key_pem)

    def _write(self, statement) -> None:
        # Fenced like every write of the task: a worker that lost its lease changes nothing.
        self.task.write(lambda session, _task: session.execute(statement))

    def update_cluster(self, **fields) -> None:
        self._write(sa.update(Cluster).where(Cluster.uuid == self.cluster_uuid).values(**fields))

    def update_nodegroup(self, nodegroup_uuid: str, **fields) -> None:
        self._write(sa.update(NodeGroup).where(NodeGroup.uuid == nodegroup_uuid).values(**fields))

    def save_payload(self, **values) -> None:
        """Keep values a re-run of this task must reuse (e.g. a generated key) with the task."""
        self.payload.update(values)
        self._write(sa.update(Task).where(Task.id == self.task.task_id).values(payload=self.payload))


def driver_for(ctx: "ClusterContext"):
    disabled = ctx.task.settings.get("drivers", "disabled_drivers") if ctx.task.settings else ()
    return Registry(disabled).by_name(ctx.template.driver)


# -- how task ends move clusters and nodegroups ---------------------------------------------

def _on_success(session: Session, task: Task) -> None:
    lifecycle.settle(session, task, "succeed")
    if task.action == "cluster.upgrade":
        # what runs is the new template's, whichever operation the status shows now
        session.execute(sa.update(Cluster).where(Cluster.uuid == task.lock_key)
                        .values(cluster_template_id=task.payload["cluster_template"]))


def _on_failure(session: Session, task: Task, reason: str) -> None:
    owned = lifecycle.settle(session, task, "fail", reason)
    restore = task.payload.get("restore_node_count")
    if restore and any(isinstance(o, NodeGroup) and o.uuid == restore["nodegroup"] for o in owned):
        # A failed PATCH/resize leaves the nodegroup asking for what it had (unless a newer
        # operation has asked for something else since).
        session.execute(sa.update(NodeGroup).where(NodeGroup.uuid == restore["nodegroup"])
                        .values(node_count=restore["node_count"]))


# -- handlers ---------------------------------------------------------------------------------

def _with_driver(method_name: str, *arg_keys: str):
    def handler(task_ctx: TaskContext) -> None:
        ctx = ClusterContext(task_ctx, task_ctx.lock_key)
        driver = driver_for(ctx)
        if method_name == "create_cluster":
            task_ctx.set_timeout(ctx.cluster.create_timeout)
        getattr(driver, method_name)(ctx, *(task_ctx.payload[k] for k in arg_keys))
    return handler


def _rotate_ca(task_ctx: TaskContext) -> None:
    ctx = ClusterContext(task_ctx, task_ctx.lock_key)
    driver = driver_for(ctx)
    ctx.plan(["issue new CA", "re-issue node certificates", "activate new CA"])

    def issue():
        if "new_ca" not in ctx.payload:
            ca = pki.new_ca(f"cluster {ctx.cluster_uuid}")
            ctx.save_payload(new_ca={"cert_pem": ca.cert_pem, "key_pem": ca.key_pem})

    ctx.run_step("issue new CA", issue)
    new_ca = pki.KeyPair(**ctx.payload["new_ca"])
    ctx.run_step("re-issue node certificates", lambda: driver.rotate_ca_certificate(ctx, new_ca))
    ctx.run_step("activate new CA",
                 lambda: ctx.update_cluster(ca_cert_pem=new_ca.cert_pem, ca_key_pem=new_ca.key_pem))


for _name, _handler, _cancellable in [
    ("cluster.create", _with_driver("create_cluster"), True),
    ("cluster.update", _with_driver("update_cluster"), True),
    ("cluster.resize", _with_driver("resize_cluster", "nodegroup", "node_count", "nodes_to_remove"), True),
    ("cluster.upgrade", _with_driver("upgrade_cluster", "cluster_template", "max_batch_size", "nodegroup"), True),
    ("cluster.rotate_ca", _rotate_ca, False),
    ("cluster.delete", _with_driver("delete_cluster"), False),
    ("nodegroup.create", _with_driver("create_nodegroup", "nodegroup"), True),
    ("nodegroup.update", _with_driver("update_nodegroup", "nodegroup"), True),
    ("nodegroup.delete", _with_driver("delete_nodegroup", "nodegroup"), False),
]:
    registry.register(registry.Action(
        name=_name, resource_type=_name.split(".")[0], handler=_handler, cancellable=_cancellable,
        on_success=_on_success, on_failure=_on_failure))

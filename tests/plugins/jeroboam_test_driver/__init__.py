"""A test-only cluster driver (a test double: it builds nothing, it only walks the task steps).

It exists so that the task machinery, the state machine and the API can be
tested before and apart from real drivers. Cluster labels steer it:
`test_delay` (seconds per step), `test_delay_<method>` (the same for one driver
method, e.g. `test_delay_delete_cluster`), `test_fail` (a step, or a driver
method whose steps, to fail), `test_sql_error` (a step that sends the database a
statement it refuses), `test_marker` (a file each executed step appends its name to),
`test_stack` (the cluster's stack is a real one, made through the engine as real drivers
make theirs, holding the CA).
"""

import time
import uuid

import sqlalchemy as sa

from jeroboam.drivers import Driver
from jeroboam.orchestration.engine import Engine
from jeroboam.orchestration.errors import StackNotFound
from jeroboam.orchestration.sql_store import SqlStore

STACK_TEMPLATE = {
    "heat_template_version": "2018-08-31",
    "parameters": {"ca_cert": {"type": "string"}, "ca_key": {"type": "string", "hidden": True}},
    "resources": {"nodes": {"type": "OS::Heat::None", "properties": {"key": {"get_param": "ca_key"}}}},
    "outputs": {"ca_cert": {"value": {"get_param": "ca_cert"}}},
}


class TestDriver(Driver):
    provides = [{"server_type": "vm", "os": "testos", "coe": "swarm-mode"}]

    def _steps(self, ctx, method, names, finish=None):
        labels = ctx.cluster.labels
        delay = float(labels.get(f"test_delay_{method}", labels.get("test_delay", 0)))
        ctx.plan(names)
        for name in names:
            def work(name=name):
                if delay:
                    time.sleep(delay)
                if labels.get("test_marker"):
                    with open(labels["test_marker"], "a") as marker:
                        marker.write(name + "\n")
                if labels.get("test_fail") in (name, method):
                    raise RuntimeError(f"injected failure in {name}")
                if labels.get("test_sql_error") == name:
                    with ctx.task.session_factory() as session:
                        session.execute(sa.text("SELECT secret FROM no_such_table"))
            ctx.run_step(name, work)
        if finish:
            finish()

    def _report(self, ctx):
        for group in ctx.nodegroups():
            base = 10 if group.role == "master" else 100
            ctx.update_nodegroup(group.uuid, node_addresses=[f"192.0.2.{base + i}" for i in range(group.node_count)])
        stack_id = self._stack(ctx) if ctx.cluster.labels.get("test_stack") else f"stack-{ctx.cluster_uuid}"
        ctx.update_cluster(api_address="tcp://192.0.2.10:2376", coe_version="test-1", stack_id=stack_id)

    def _stack(self, ctx):
        engine = Engine(SqlStore(ctx.task.session_factory))
        stack_id = str(uuid.uuid5(uuid.NAMESPACE_URL, ctx.cluster_uuid))
        try:
            engine.store.get_stack(stack_id)
        except StackNotFound:
            ca = ctx.ca()
            engine.create_stack(f"test-{ctx.cluster_uuid}", STACK_TEMPLATE,
                                {"ca_cert": ca.cert_pem, "ca_key": ca.key_pem},
                                project_id=ctx.cluster.project_id, stack_id=stack_id)
            engine.run(stack_id)
        return stack_id

    def create_cluster(self, ctx):
        self._steps(ctx, "create_cluster", ["provision nodes", "bootstrap", "report addresses"],
                    lambda: self._report(ctx))

    def delete_cluster(self, ctx):
        self._steps(ctx, "delete_cluster", ["remove nodes"])

    def update_cluster(self, ctx):
        self._steps(ctx, "update_cluster", ["converge nodes"], lambda: self._report(ctx))

    def resize_cluster(self, ctx, nodegroup, node_count, nodes_to_remove):
        self._steps(ctx, "resize_cluster", ["converge nodes"], lambda: self._report(ctx))

    def upgrade_cluster(self, ctx, template_uuid, max_batch_size, nodegroup):
        self._steps(ctx, "upgrade_cluster", ["upgrade nodes"])

    def create_nodegroup(self, ctx, nodegroup):
        self._steps(ctx, "create_nodegroup", ["converge nodegroup"], lambda: self._report(ctx))

    def update_nodegroup(self, ctx, nodegroup):
        self._steps(ctx, "update_nodegroup", ["converge nodegroup"])

    def delete_nodegroup(self, ctx, nodegroup):
        self._steps(ctx, "delete_nodegroup", ["converge nodegroup"])

    def rotate_ca_certificate(self, ctx, new_ca):
        ctx.event("no node certificates to re-issue")

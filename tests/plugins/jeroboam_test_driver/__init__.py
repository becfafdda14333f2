"""A test-only cluster driver (a test double: it builds nothing, it only walks the task steps).

It exists so that the task machinery, the state machine and the API can be
tested before and apart from real drivers. Cluster labels steer it:
`test_delay` (seconds per step), `test_delay_<method>` (the same for one driver
method, e.g. `test_delay_delete_cluster`), `test_fail` (a step, or a driver
method whose steps, to fail), `test_sql_error` (a step that sends the database a
statement it refuses), `test_marker` (a file each executed step appends its name to).
"""

import time

import sqlalchemy as sa

from jeroboam.drivers import Driver


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
        ctx.update_cluster(api_address="tcp://192.0.2.10:2376", coe_version="test-1", stack_id=f"stack-{ctx.cluster_uuid}")

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

"""One operation per cluster: tasks' lock key (one running task per key), and the task that
owns each cluster's and nodegroup's status.

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

RUNNING = sa.text("state = 'RUNNING'")


def _partial_indexes() -> bool:
    # MySQL has none: there only the claim's ordering keeps a cluster's tasks apart.
    return op.get_bind().dialect.name != 'mysql'


def upgrade() -> None:
    for table in ('clusters', 'nodegroups'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('task_id', sa.Integer(), nullable=True))
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lock_key', sa.String(length=36), nullable=True))
    # Tasks queued before: a nodegroup's lock their cluster. One already running keeps its own
    # resource as key, so that the unique index below holds whatever was running at upgrade.
    op.execute("UPDATE tasks SET lock_key = resource_uuid")
    op.execute("UPDATE tasks SET lock_key = (SELECT cluster_id FROM nodegroups WHERE nodegroups.uuid = "
               "tasks.resource_uuid) WHERE resource_type = 'nodegroup' AND state <> 'RUNNING' AND EXISTS "
               "(SELECT 1 FROM nodegroups WHERE nodegroups.uuid = tasks.resource_uuid)")
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.alter_column('lock_key', existing_type=sa.String(length=36), nullable=False)
        batch_op.create_index(batch_op.f('ix_tasks_lock_key'), ['lock_key'], unique=False)
        if _partial_indexes():
            batch_op.create_index('ux_tasks_running_lock_key', ['lock_key'], unique=True,
                                  sqlite_where=RUNNING, postgresql_where=RUNNING)


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        if _partial_indexes():
            batch_op.drop_index('ux_tasks_running_lock_key', sqlite_where=RUNNING, postgresql_where=RUNNING)
        batch_op.drop_index(batch_op.f('ix_tasks_lock_key'))
        batch_op.drop_column('lock_key')
    for table in ('nodegroups', 'clusters'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('task_id')

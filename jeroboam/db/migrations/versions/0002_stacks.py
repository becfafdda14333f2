"""Orchestration: stacks, stack resources, stack events.

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa

from jeroboam.db.base import UTCDateTime

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('stacks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=True),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=False),
    sa.Column('template', sa.JSON(), nullable=False),
    sa.Column('parameters', sa.JSON(), nullable=False),
    sa.Column('prev_template', sa.JSON(), nullable=True),
    sa.Column('prev_parameters', sa.JSON(), nullable=True),
    sa.Column('timeout_mins', sa.Float(), nullable=True),
    sa.Column('disable_rollback', sa.Boolean(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=True),
    sa.Column('action_started_at', UTCDateTime(), nullable=True),
    sa.Column('deleted_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uuid')
    )
    with op.batch_alter_table('stacks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stacks_name'), ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_stacks_project_id'), ['project_id'], unique=False)
        # MySQL has no partial index: there the name check of create_stack stands alone.
        unique = op.get_bind().dialect.name != 'mysql'
        batch_op.create_index('ux_stacks_project_name_live', ['project_id', 'name'], unique=unique, sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))

    op.create_table('stack_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('stack_id', sa.String(length=36), nullable=False),
    sa.Column('resource_name', sa.String(length=255), nullable=False),
    sa.Column('physical_resource_id', sa.String(length=255), nullable=True),
    sa.Column('resource_type', sa.String(length=255), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('time', UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['stack_id'], ['stacks.uuid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uuid')
    )
    with op.batch_alter_table('stack_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stack_events_stack_id'), ['stack_id'], unique=False)

    op.create_table('stack_resources',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('stack_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('type', sa.String(length=255), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=False),
    sa.Column('physical_id', sa.String(length=255), nullable=True),
    sa.Column('properties', sa.JSON(), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=False),
    sa.Column('attributes', sa.JSON(), nullable=True),
    sa.Column('requires', sa.JSON(), nullable=False),
    sa.Column('depends_on', sa.JSON(), nullable=False),
    sa.Column('update_policy', sa.JSON(), nullable=False),
    sa.Column('deletion_policy', sa.String(length=16), nullable=False),
    sa.Column('replaces', sa.String(length=36), nullable=True),
    sa.Column('replaced_by', sa.String(length=36), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=True),
    sa.Column('updated_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['stack_id'], ['stacks.uuid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('stack_resources', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stack_resources_stack_id'), ['stack_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('stack_resources', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stack_resources_stack_id'))

    op.drop_table('stack_resources')
    with op.batch_alter_table('stack_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stack_events_stack_id'))

    op.drop_table('stack_events')
    with op.batch_alter_table('stacks', schema=None) as batch_op:
        batch_op.drop_index('ux_stacks_project_name_live', sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))
        batch_op.drop_index(batch_op.f('ix_stacks_project_id'))
        batch_op.drop_index(batch_op.f('ix_stacks_name'))

    op.drop_table('stacks')

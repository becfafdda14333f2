"""Foundation: templates, clusters, nodegroups, tasks, services, quotas, federations.

Revision ID: 0001
Revises: 
"""

from alembic import op
import sqlalchemy as sa

from jeroboam.db.base import UTCDateTime

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cluster_templates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('user_id', sa.String(length=255), nullable=False),
    sa.Column('coe', sa.String(length=255), nullable=False),
    sa.Column('image_id', sa.String(length=255), nullable=False),
    sa.Column('cluster_distro', sa.String(length=255), nullable=True),
    sa.Column('driver', sa.String(length=255), nullable=True),
    sa.Column('server_type', sa.String(length=255), nullable=False),
    sa.Column('flavor_id', sa.String(length=255), nullable=True),
    sa.Column('master_flavor_id', sa.String(length=255), nullable=True),
    sa.Column('keypair_id', sa.String(length=255), nullable=True),
    sa.Column('external_network_id', sa.String(length=255), nullable=True),
    sa.Column('fixed_network', sa.String(length=255), nullable=True),
    sa.Column('fixed_subnet', sa.String(length=255), nullable=True),
    sa.Column('network_driver', sa.String(length=255), nullable=True),
    sa.Column('volume_driver', sa.String(length=255), nullable=True),
    sa.Column('dns_nameserver', sa.String(length=255), nullable=True),
    sa.Column('apiserver_port', sa.Integer(), nullable=True),
    sa.Column('docker_volume_size', sa.Integer(), nullable=True),
    sa.Column('docker_storage_driver', sa.String(length=255), nullable=True),
    sa.Column('http_proxy', sa.String(length=255), nullable=True),
    sa.Column('https_proxy', sa.String(length=255), nullable=True),
    sa.Column('no_proxy', sa.String(length=255), nullable=True),
    sa.Column('insecure_registry', sa.String(length=255), nullable=True),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('tls_disabled', sa.Boolean(), nullable=False),
    sa.Column('public', sa.Boolean(), nullable=False),
    sa.Column('hidden', sa.Boolean(), nullable=False),
    sa.Column('registry_enabled', sa.Boolean(), nullable=False),
    sa.Column('master_lb_enabled', sa.Boolean(), nullable=False),
    sa.Column('floating_ip_enabled', sa.Boolean(), nullable=False),
    sa.Column('tags', sa.String(length=255), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uuid')
    )
    with op.batch_alter_table('cluster_templates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cluster_templates_name'), ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_cluster_templates_project_id'), ['project_id'], unique=False)

    op.create_table('federations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('hostcluster_id', sa.String(length=255), nullable=False),
    sa.Column('member_ids', sa.JSON(), nullable=False),
    sa.Column('properties', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uuid')
    )
    with op.batch_alter_table('federations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_federations_name'), ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_federations_project_id'), ['project_id'], unique=False)

    op.create_table('quotas',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('resource', sa.String(length=255), nullable=False),
    sa.Column('hard_limit', sa.Integer(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'resource')
    )
    op.create_table('services',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('binary', sa.String(length=255), nullable=False),
    sa.Column('report_count', sa.Integer(), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('disabled_reason', sa.String(length=255), nullable=True),
    sa.Column('last_seen_at', UTCDateTime(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('host', 'binary')
    )
    op.create_table('tasks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('resource_type', sa.String(length=32), nullable=False),
    sa.Column('resource_uuid', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('user_id', sa.String(length=255), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('progress', sa.Integer(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('error_detail', sa.JSON(), nullable=True),
    sa.Column('worker', sa.String(length=255), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('lease_expires_at', UTCDateTime(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('started_at', UTCDateTime(), nullable=True),
    sa.Column('finished_at', UTCDateTime(), nullable=True),
    sa.Column('updated_at', UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uuid')
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_claim', ['state', 'lease_expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_tasks_resource_uuid'), ['resource_uuid'], unique=False)

    op.create_table('clusters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=True),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('user_id', sa.String(length=255), nullable=False),
    sa.Column('cluster_template_id', sa.String(length=36), nullable=False),
    sa.Column('keypair', sa.String(length=255), nullable=True),
    sa.Column('docker_volume_size', sa.Integer(), nullable=True),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('master_flavor_id', sa.String(length=255), nullable=True),
    sa.Column('flavor_id', sa.String(length=255), nullable=True),
    sa.Column('create_timeout', sa.Integer(), nullable=True),
    sa.Column('discovery_url', sa.String(length=255), nullable=True),
    sa.Column('fixed_network', sa.String(length=255), nullable=True),
    sa.Column('fixed_subnet', sa.String(length=255), nullable=True),
    sa.Column('floating_ip_enabled', sa.Boolean(), nullable=False),
    sa.Column('master_lb_enabled', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('health_status', sa.String(length=20), nullable=True),
    sa.Column('health_status_reason', sa.JSON(), nullable=False),
    sa.Column('api_address', sa.String(length=255), nullable=True),
    sa.Column('coe_version', sa.String(length=255), nullable=True),
    sa.Column('container_version', sa.String(length=255), nullable=True),
    sa.Column('stack_id', sa.String(length=255), nullable=True),
    sa.Column('ca_cert_pem', sa.Text(), nullable=True),
    sa.Column('ca_key_pem', sa.Text(), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['cluster_template_id'], ['cluster_templates.uuid'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('uuid')
    )
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clusters_cluster_template_id'), ['cluster_template_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_clusters_name'), ['name'], unique=False)
        batch_op.create_index(batch_op.f('ix_clusters_project_id'), ['project_id'], unique=False)

    op.create_table('task_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('time', UTCDateTime(), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('step', sa.String(length=128), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('task_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_events_task_id'), ['task_id'], unique=False)

    op.create_table('task_steps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', UTCDateTime(), nullable=True),
    sa.Column('finished_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id', 'name')
    )
    with op.batch_alter_table('task_steps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_steps_task_id'), ['task_id'], unique=False)

    op.create_table('nodegroups',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('cluster_id', sa.String(length=36), nullable=False),
    sa.Column('project_id', sa.String(length=255), nullable=False),
    sa.Column('role', sa.String(length=255), nullable=False),
    sa.Column('node_count', sa.Integer(), nullable=False),
    sa.Column('min_node_count', sa.Integer(), nullable=False),
    sa.Column('max_node_count', sa.Integer(), nullable=True),
    sa.Column('flavor_id', sa.String(length=255), nullable=True),
    sa.Column('image_id', sa.String(length=255), nullable=True),
    sa.Column('docker_volume_size', sa.Integer(), nullable=True),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('node_labels', sa.JSON(), nullable=False),
    sa.Column('node_taints', sa.JSON(), nullable=False),
    sa.Column('node_addresses', sa.JSON(), nullable=False),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('stack_id', sa.String(length=255), nullable=True),
    sa.Column('version', sa.String(length=20), nullable=True),
    sa.Column('created_at', UTCDateTime(), nullable=False),
    sa.Column('updated_at', UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['cluster_id'], ['clusters.uuid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cluster_id', 'name'),
    sa.UniqueConstraint('uuid')
    )
    with op.batch_alter_table('nodegroups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_nodegroups_cluster_id'), ['cluster_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('nodegroups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nodegroups_cluster_id'))

    op.drop_table('nodegroups')
    with op.batch_alter_table('task_steps', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_steps_task_id'))

    op.drop_table('task_steps')
    with op.batch_alter_table('task_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_events_task_id'))

    op.drop_table('task_events')
    with op.batch_alter_table('clusters', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clusters_project_id'))
        batch_op.drop_index(batch_op.f('ix_clusters_name'))
        batch_op.drop_index(batch_op.f('ix_clusters_cluster_template_id'))

    op.drop_table('clusters')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tasks_resource_uuid'))
        batch_op.drop_index(batch_op.f('ix_tasks_project_id'))
        batch_op.drop_index('ix_tasks_claim')

    op.drop_table('tasks')
    op.drop_table('services')
    op.drop_table('quotas')
    with op.batch_alter_table('federations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_federations_project_id'))
        batch_op.drop_index(batch_op.f('ix_federations_name'))

    op.drop_table('federations')
    with op.batch_alter_table('cluster_templates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cluster_templates_project_id'))
        batch_op.drop_index(batch_op.f('ix_cluster_templates_name'))

    op.drop_table('cluster_templates')

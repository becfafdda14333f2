"""Tables of the service foundation: templates, clusters, nodegroups, tasks, workers, quotas.

Every API-visible object has an integer `id` (Magnum's default sort key and the
pagination tie-breaker) and a `uuid` that the API hands out.
"""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from jeroboam.db.base import Base, UTCDateTime, new_uuid, utcnow


def _created():
    return mapped_column(UTCDateTime, default=utcnow, nullable=False)


def _updated():
    return mapped_column(UTCDateTime, nullable=True, onupdate=utcnow)


class ClusterTemplate(Base):
    __tablename__ = "cluster_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(sa.String(36), unique=True, default=new_uuid)
    name: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    project_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    user_id: Mapped[str] = mapped_column(sa.String(255))
    coe: Mapped[str] = mapped_column(sa.String(255))
    image_id: Mapped[str] = mapped_column(sa.String(255))
    cluster_distro: Mapped[str | None] = mapped_column(sa.String(255))
    driver: Mapped[str | None] = mapped_column(sa.String(255))
    server_type: Mapped[str] = mapped_column(sa.String(255), default="vm")
    flavor_id: Mapped[str | None] = mapped_column(sa.String(255))
    master_flavor_id: Mapped[str | None] = mapped_column(sa.String(255))
    keypair_id: Mapped[str | None] = mapped_column(sa.String(255))
    external_network_id: Mapped[str | None] = mapped_column(sa.String(255))
    fixed_network: Mapped[str | None] = mapped_column(sa.String(255))
    fixed_subnet: Mapped[str | None] = mapped_column(sa.String(255))
    network_driver: Mapped[str | None] = mapped_column(sa.String(255))
    volume_driver: Mapped[str | None] = mapped_column(sa.String(255))
    dns_nameserver: Mapped[str | None] = mapped_column(sa.String(255))
    apiserver_port: Mapped[int | None]
    docker_volume_size: Mapped[int | None]
    docker_storage_driver: Mapped[str | None] = mapped_column(sa.String(255))
    http_proxy: Mapped[str | None] = mapped_column(sa.String(255))
    https_proxy: Mapped[str | None] = mapped_column(sa.String(255))
    no_proxy: Mapped[str | None] = mapped_column(sa.String(255))
    insecure_registry: Mapped[str | None] = mapped_column(sa.String(255))
    labels: Mapped[dict] = mapped_column(default=dict)
    tls_disabled: Mapped[bool] = mapped_column(default=False)
    public: Mapped[bool] = mapped_column(default=False)
    hidden: Mapped[bool] = mapped_column(default=False)
    registry_enabled: Mapped[bool] = mapped_column(default=False)
    master_lb_enabled: Mapped[bool] = mapped_column(default=False)
    floating_ip_enabled: Mapped[bool] = mapped_column(default=True)
    tags: Mapped[str | None] = mapped_column(sa.String(255))
    created_at: Mapped[datetime.datetime] = _created()
    updated_at: Mapped[datetime.datetime | None] = _updated()


class Cluster(Base):
    __tablename__ = "clusters"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(sa.String(36), unique=True, default=new_uuid)
    name: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    project_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    user_id: Mapped[str] = mapped_column(sa.String(255))
    cluster_template_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("cluster_templates.uuid"), index=True)
    keypair: Mapped[str | None] = mapped_column(sa.String(255))
    docker_volume_size: Mapped[int | None]
    labels: Mapped[dict] = mapped_column(default=dict)
    master_flavor_id: Mapped[str | None] = mapped_column(sa.String(255))
    flavor_id: Mapped[str | None] = mapped_column(sa.String(255))
    create_timeout: Mapped[int | None]
    discovery_url: Mapped[str | None] = mapped_column(sa.String(255))
    fixed_network: Mapped[str | None] = mapped_column(sa.String(255))
    fixed_subnet: Mapped[str | None] = mapped_column(sa.String(255))
    floating_ip_enabled: Mapped[bool] = mapped_column(default=True)
    master_lb_enabled: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(sa.String(20))
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    # The task whose end the status will show (see jeroboam.lifecycle); None when settled.
    task_id: Mapped[int | None]
    health_status: Mapped[str | None] = mapped_column(sa.String(20))
    health_status_reason: Mapped[dict] = mapped_column(default=dict)
    api_address: Mapped[str | None] = mapped_column(sa.String(255))
    coe_version: Mapped[str | None] = mapped_column(sa.String(255))
    container_version: Mapped[str | None] = mapped_column(sa.String(255))
    stack_id: Mapped[str | None] = mapped_column(sa.String(255))
    ca_cert_pem: Mapped[str | None] = mapped_column(sa.Text)
    ca_key_pem: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime.datetime] = _created()
    updated_at: Mapped[datetime.datetime | None] = _updated()


class NodeGroup(Base):
    __tablename__ = "nodegroups"
    __table_args__ = (sa.UniqueConstraint("cluster_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(sa.String(36), unique=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(255))
    cluster_id: Mapped[str] = mapped_column(
        sa.String(36), sa.ForeignKey("clusters.uuid", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(sa.String(255))
    role: Mapped[str] = mapped_column(sa.String(255), default="worker")
    node_count: Mapped[int] = mapped_column(default=1)
    min_node_count: Mapped[int] = mapped_column(default=0)
    max_node_count: Mapped[int | None]
    flavor_id: Mapped[str | None] = mapped_column(sa.String(255))
    image_id: Mapped[str | None] = mapped_column(sa.String(255))
    docker_volume_size: Mapped[int | None]
    labels: Mapped[dict] = mapped_column(default=dict)
    node_labels: Mapped[dict] = mapped_column(default=dict)
    node_taints: Mapped[list] = mapped_column(default=list)
    node_addresses: Mapped[list] = mapped_column(default=list)
    is_default: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(sa.String(20))
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    task_id: Mapped[int | None]
    stack_id: Mapped[str | None] = mapped_column(sa.String(255))
    version: Mapped[str | None] = mapped_column(sa.String(20))
    created_at: Mapped[datetime.datetime] = _created()
    updated_at: Mapped[datetime.datetime | None] = _updated()


class Task(Base):
    """One asynchronous action: the durable queue entry and its public record at once."""

    __tablename__ = "tasks"
    __table_args__ = (
        sa.Index("ix_tasks_claim", "state", "lease_expires_at"),
        # One running task per lock key, whatever the number of workers: the database says no
        # to a second claim.
        sa.Index("ux_tasks_running_lock_key", "lock_key", unique=True,
                 sqlite_where=sa.text("state = 'RUNNING'"), postgresql_where=sa.text("state = 'RUNNING'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(sa.String(36), unique=True, default=new_uuid)
    action: Mapped[str] = mapped_column(sa.String(64))
    resource_type: Mapped[str] = mapped_column(sa.String(32))
    resource_uuid: Mapped[str] = mapped_column(sa.String(36), index=True)
    # Tasks sharing a lock key run one at a time, in order: a cluster's uuid for its own tasks
    # and its nodegroups', the resource's uuid otherwise.
    lock_key: Mapped[str] = mapped_column(sa.String(36), index=True)
    project_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    user_id: Mapped[str] = mapped_column(sa.String(255))
    state: Mapped[str] = mapped_column(sa.String(16))
    progress: Mapped[int] = mapped_column(default=0)
    payload: Mapped[dict] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(sa.Text)
    error_detail: Mapped[dict | None] = mapped_column(sa.JSON)
    worker: Mapped[str | None] = mapped_column(sa.String(255))
    attempts: Mapped[int] = mapped_column(default=0)
    lease_expires_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime.datetime] = _created()
    started_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime.datetime | None] = _updated()


class TaskStep(Base):
    __tablename__ = "task_steps"
    __table_args__ = (sa.UniqueConstraint("task_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    position: Mapped[int]
    name: Mapped[str] = mapped_column(sa.String(128))
    state: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime)


class TaskEvent(Base):
    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    task_id: Mapped[int] = mapped_column(sa.ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    time: Mapped[datetime.datetime] = _created()
    level: Mapped[str] = mapped_column(sa.String(16), default="info")
    step: Mapped[str | None] = mapped_column(sa.String(128))
    message: Mapped[str] = mapped_column(sa.Text)


class Service(Base):
    """A worker process, as `mservices` shows it; its heartbeat says whether it is up."""

    __tablename__ = "services"
    __table_args__ = (sa.UniqueConstraint("host", "binary"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    binary: Mapped[str] = mapped_column(sa.String(255))
    report_count: Mapped[int] = mapped_column(default=0)
    disabled: Mapped[bool] = mapped_column(default=False)
    disabled_reason: Mapped[str | None] = mapped_column(sa.String(255))
    last_seen_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime.datetime] = _created()
    updated_at: Mapped[datetime.datetime | None] = _updated()


class Quota(Base):
    __tablename__ = "quotas"
    __table_args__ = (sa.UniqueConstraint("project_id", "resource"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[str] = mapped_column(sa.String(255))
    resource: Mapped[str] = mapped_column(sa.String(255))
    hard_limit: Mapped[int]
    created_at: Mapped[datetime.datetime] = _created()
    updated_at: Mapped[datetime.datetime | None] = _updated()


class Federation(Base):
    __tablename__ = "federations"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(sa.String(36), unique=True, default=new_uuid)
    name: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    project_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    hostcluster_id: Mapped[str] = mapped_column(sa.String(255))
    member_ids: Mapped[list] = mapped_column(default=list)
    properties: Mapped[dict] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(sa.String(20))
    status_reason: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime.datetime] = _created()
    updated_at: Mapped[datetime.datetime | None] = _updated()

"""Tables of the orchestration engine: stacks, their resources, their events.

A stack has an integer `id` (pagination tie-breaker, as every API object) and
the `uuid` the API and the engine use. Resource rows are keyed by the engine's
record id; events by an autoincrement id that gives their order.
"""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from jeroboam.db.base import Base, UTCDateTime, new_uuid, utcnow


class Stack(Base):
    __tablename__ = "stacks"
    __table_args__ = (
        # Names are unique per project among stacks not deleted; a deleted one's name is free again.
        sa.Index("ux_stacks_project_name_live", "project_id", "name", unique=True,
                 sqlite_where=sa.text("deleted_at IS NULL"), postgresql_where=sa.text("deleted_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(sa.String(36), unique=True, default=new_uuid)
    name: Mapped[str] = mapped_column(sa.String(255), index=True)
    project_id: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    action: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16))
    status_reason: Mapped[str] = mapped_column(sa.Text, default="")
    template: Mapped[dict] = mapped_column(sa.JSON)
    parameters: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    prev_template: Mapped[dict | None] = mapped_column(sa.JSON)
    prev_parameters: Mapped[dict | None] = mapped_column(sa.JSON)
    timeout_mins: Mapped[float | None] = mapped_column(sa.Float)
    disable_rollback: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime)
    action_started_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime)


class StackResource(Base):
    __tablename__ = "stack_resources"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    stack_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("stacks.uuid", ondelete="CASCADE"),
                                          index=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    type: Mapped[str] = mapped_column(sa.String(255))
    action: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16))
    status_reason: Mapped[str] = mapped_column(sa.Text, default="")
    physical_id: Mapped[str | None] = mapped_column(sa.String(255))
    properties: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    resource_metadata: Mapped[dict] = mapped_column("metadata", sa.JSON, default=dict)
    data: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    attributes: Mapped[dict | None] = mapped_column(sa.JSON)
    requires: Mapped[list] = mapped_column(sa.JSON, default=list)
    depends_on: Mapped[list] = mapped_column(sa.JSON, default=list)
    update_policy: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    deletion_policy: Mapped[str] = mapped_column(sa.String(16), default="Delete")
    replaces: Mapped[str | None] = mapped_column(sa.String(36))
    replaced_by: Mapped[str | None] = mapped_column(sa.String(36))
    created_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime.datetime | None] = mapped_column(UTCDateTime)


class StackEvent(Base):
    __tablename__ = "stack_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(sa.String(36), unique=True)
    stack_id: Mapped[str] = mapped_column(sa.String(36), sa.ForeignKey("stacks.uuid", ondelete="CASCADE"),
                                          index=True)
    resource_name: Mapped[str] = mapped_column(sa.String(255))
    physical_resource_id: Mapped[str | None] = mapped_column(sa.String(255))
    resource_type: Mapped[str] = mapped_column(sa.String(255))
    action: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16))
    reason: Mapped[str] = mapped_column(sa.Text, default="")
    time: Mapped[datetime.datetime] = mapped_column(UTCDateTime)

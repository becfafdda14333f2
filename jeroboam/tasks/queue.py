"""The durable work queue: tasks are rows, claimed with a lease that heartbeats extend.

Claiming is a compare-and-set UPDATE, correct on any database; where the database
has them (PostgreSQL, MySQL 8, MariaDB 10.6) the candidate SELECT adds FOR UPDATE SKIP LOCKED so that many workers claim at
once without waiting on each other. A task is only claimable when no earlier
unfinished task exists for the same resource: work on one cluster runs in order.
"""

from __future__ import annotations

import datetime
import threading

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from jeroboam import states
from jeroboam.db.base import utcnow
from jeroboam.db.models import Task, TaskEvent
from jeroboam.tasks import registry

# Set when a task is enqueued in this process, so local workers need not wait a poll.
work_available = threading.Event()


def enqueue(session: Session, action: str, resource_type: str, resource_uuid: str,
            project_id: str, user_id: str, payload: dict | None = None) -> Task:
    """Add a task in the caller's transaction (the one that changes the resource)."""
    task = Task(
        action=action, resource_type=resource_type, resource_uuid=resource_uuid,
        project_id=project_id, user_id=user_id, state=states.TASK.next(None, "enqueue"),
        payload=payload or {},
    )
    session.add(task)
    session.flush()
    session.add(TaskEvent(task_id=task.id, message=f"{action} accepted"))
    return task


def request_cancel(session: Session, task: Task) -> None:
    """Cancel a pending task now; ask a running one to stop at its next step."""
    if task.state == states.PENDING:
        finish(session, task, "cancel", "cancelled before it started")
    else:
        states.TASK.next(task.state, "cancel")  # raises if the task has already ended
        task.cancel_requested = True
        session.add(TaskEvent(task_id=task.id, message="cancel requested"))


def cancel_unfinished(session: Session, resource_uuid: str, reason: str) -> None:
    """Before a delete: stop the cancellable work still queued or running on the resource."""
    unfinished = session.scalars(
        sa.select(Task).where(Task.resource_uuid == resource_uuid,
                              Task.state.in_((states.PENDING, states.RUNNING)))
    ).all()
    for task in unfinished:
        if registry.get(task.action).cancellable and not task.cancel_requested:
            request_cancel(session, task)
            session.add(TaskEvent(task_id=task.id, message=reason))


def claim(session_factory, worker: str, lease_seconds: float, row_locks: bool, batch: int = 4) -> Task | None:
    now = utcnow()
    earlier = aliased(Task)
    blocked_by_earlier = (
        sa.select(earlier.id)
        .where(earlier.resource_uuid == Task.resource_uuid, earlier.id < Task.id,
               earlier.state.in_((states.PENDING, states.RUNNING)))
        .exists()
    )
    claimable = sa.or_(
        Task.state == states.PENDING,
        sa.and_(Task.state == states.RUNNING, Task.lease_expires_at < now),
    )
    candidates = sa.select(Task.id).where(claimable, ~blocked_by_earlier).order_by(Task.id).limit(batch)
    if row_locks:
        candidates = candidates.with_for_update(skip_locked=True, of=Task)
    with session_factory() as session, session.begin():
        for task_id in session.scalars(candidates).all():
            took = session.execute(
                sa.update(Task)
                .where(Task.id == task_id, claimable)
                .values(state=states.RUNNING, worker=worker, attempts=Task.attempts + 1,
                        lease_expires_at=now + datetime.timedelta(seconds=lease_seconds),
                        started_at=sa.func.coalesce(Task.started_at, now))
                .execution_options(synchronize_session=False)
            ).rowcount
            if took:
                task = session.get(Task, task_id, populate_existing=True)
                taken_over = task.attempts > 1
                message = f"taken over by {worker} (attempt {task.attempts})" if taken_over \
                    else f"started by {worker}"
                session.add(TaskEvent(task_id=task.id, message=message))
                return task
    return None


def heartbeat(session_factory, worker: str, lease_seconds: float) -> None:
    with session_factory() as session, session.begin():
        session.execute(
            sa.update(Task)
            .where(Task.worker == worker, Task.state == states.RUNNING)
            .values(lease_expires_at=utcnow() + datetime.timedelta(seconds=lease_seconds))
        )


def finish(session: Session, task: Task, event: str, reason: str | None = None,
           detail: dict | None = None) -> None:
    """End a task (succeed, fail or cancel) and move its resource, in one transaction."""
    task.state = states.TASK.next(task.state, event)
    task.finished_at = utcnow()
    task.lease_expires_at = None
    action = registry.get(task.action)
    if event == "succeed":
        task.progress = 100
        session.add(TaskEvent(task_id=task.id, message=f"{task.action} succeeded"))
        if action.on_success:
            action.on_success(session, task)
    else:
        task.error = reason
        task.error_detail = detail
        level = "warning" if event == "cancel" else "error"
        session.add(TaskEvent(task_id=task.id, level=level, message=f"{task.action} {task.state.lower()}: {reason}"))
        if action.on_failure:
            action.on_failure(session, task, reason)

"""The durable work queue: tasks are rows, claimed with a lease that heartbeats extend. A
running task is taken over when its worker died: on PostgreSQL, MariaDB and MySQL as soon as
the worker's session lock is free (jeroboam.tasks.liveness), on SQLite when its lease ran out.

Claiming is a compare-and-set UPDATE, correct on any database; where the database
has them (PostgreSQL, MySQL 8, MariaDB 10.6) the candidate SELECT adds FOR UPDATE SKIP
LOCKED so that many workers claim at once without waiting on each other. Tasks sharing a
lock key (every task on a cluster or one of its nodegroups carries the cluster's uuid) run
one at a time and in the order they were queued: a pending task waits while an earlier one
of its key is unfinished, and a unique index on the lock keys of running tasks (SQLite,
PostgreSQL; MySQL has no partial indexes) makes the database refuse a second one, however
many workers race for them. A task starts only while its claim holds its lock key's lock
(liveness.key_lock), which work outside tasks on what they act on holds meanwhile.
"""

from __future__ import annotations

import datetime
import threading

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from jeroboam import states
from jeroboam.db.base import utcnow
from jeroboam.db.models import Task, TaskEvent, TaskStep
from jeroboam.tasks import liveness, registry

# Set when a task is enqueued in this process, so local workers need not wait a poll.
work_available = threading.Event()


def enqueue(session: Session, action: str, resource_type: str, resource_uuid: str,
            project_id: str, user_id: str, payload: dict | None = None, lock_key: str | None = None) -> Task:
    """Add a task in the caller's transaction (the one that changes the resource). It runs
    after every earlier task of its lock key (by default its resource's uuid)."""
    task = Task(
        action=action, resource_type=resource_type, resource_uuid=resource_uuid,
        lock_key=lock_key or resource_uuid, project_id=project_id, user_id=user_id,
        state=states.TASK.next(None, "enqueue"), payload=payload or {},
    )
    session.add(task)
    session.flush()
    session.add(TaskEvent(task_id=task.id, message=f"{action} accepted"))
    return task


# payload key: why the task was asked to stop, the reason it ends with
CANCEL_REASON = "cancel_reason"


def request_cancel(session: Session, task: Task, reason: str) -> None:
    """Cancel a pending task now; ask a running one to stop at its next step. `reason`
    names who or what asked ("cluster delete requested by <user>")."""
    if task.state == states.PENDING:
        finish(session, task, "cancel", f"{reason}, before it started")
    else:
        states.TASK.next(task.state, "cancel")  # raises if the task has already ended
        task.cancel_requested = True
        task.payload = {**(task.payload or {}), CANCEL_REASON: reason}
        session.add(TaskEvent(task_id=task.id, message=f"cancel requested: {reason}"))


def cancel_unfinished(session: Session, lock_key: str, reason: str) -> None:
    """Before a delete: stop the cancellable work still queued or running under its lock key."""
    unfinished = session.scalars(
        sa.select(Task).where(Task.lock_key == lock_key, Task.state.in_((states.PENDING, states.RUNNING)))
        .order_by(Task.id)
    ).all()
    for task in unfinished:
        if registry.get(task.action).cancellable and not task.cancel_requested:
            request_cancel(session, task, reason)


def claim(session_factory, worker: str, lease_seconds: float, row_locks: bool, batch: int = 4,
          running_here: frozenset[int] = frozenset(), session_locks: bool = False) -> Task | None:
    """Take the first task that may run now: a pending one that no other task of its lock
    key comes before or runs beside, or a running one whose worker died. With
    `session_locks` (not SQLite: jeroboam.tasks.liveness) a worker died when its
    session lock is free, however recent its heartbeat, and lives while it holds it,
    however late; otherwise when it stopped heartbeating (its lease ran out). Never one
    of `running_here`, the tasks this worker is running: a lease that ran out under a long
    step is not a dead worker's."""
    now = utcnow()
    other = aliased(Task)
    waits = (
        sa.select(other.id)
        .where(other.lock_key == Task.lock_key, other.id != Task.id,
               sa.or_(other.state == states.RUNNING,
                      sa.and_(other.state == states.PENDING, other.id < Task.id)))
        .exists()
    )
    with session_factory() as session, session.begin():
        expired = Task.lease_expires_at < now
        if session_locks:
            others = session.scalars(sa.select(Task.worker).distinct()
                                     .where(Task.state == states.RUNNING, Task.worker != worker)).all()
            # this worker's own name: tasks a killed predecessor held (freed when it started)
            gone = sa.or_(Task.worker.in_(liveness.dead(session, others)),
                          sa.and_(Task.worker == worker, expired))
        else:
            gone = expired
        abandoned = sa.and_(Task.state == states.RUNNING, gone)
        startable = sa.or_(Task.state == states.PENDING, abandoned)
        candidates = (sa.select(Task.id, Task.lock_key)
                      .where(sa.or_(sa.and_(Task.state == states.PENDING, ~waits), abandoned),
                             Task.id.not_in(running_here))
                      .order_by(Task.id).limit(batch))
        if row_locks:
            candidates = candidates.with_for_update(skip_locked=True, of=Task)
        for task_id, lock_key in session.execute(candidates).all():
            if not liveness.hold(session, liveness.key_lock(lock_key)):
                continue  # a worker's clean-up pass acts on what the key's tasks act on
            # read after the candidates: a task starts after the end of the one it waited for
            started = utcnow()
            try:
                with session.begin_nested():
                    # the order was the candidates'; the unique index refuses a second running task
                    took = session.execute(
                        sa.update(Task)
                        .where(Task.id == task_id, startable)
                        .values(state=states.RUNNING, worker=worker, attempts=Task.attempts + 1,
                                lease_expires_at=started + datetime.timedelta(seconds=lease_seconds),
                                started_at=sa.func.coalesce(Task.started_at, started))
                        .execution_options(synchronize_session=False)
                    ).rowcount
            except IntegrityError:  # another worker has just started a task of this lock key
                continue
            if took:
                task = session.get(Task, task_id, populate_existing=True)
                taken_over = task.attempts > 1
                message = f"taken over by {worker} (attempt {task.attempts})" if taken_over \
                    else f"started by {worker}"
                session.add(TaskEvent(task_id=task.id, message=message))
                return task
    return None


def heartbeat(session_factory, worker: str, lease_seconds: float, task_ids: frozenset[int]) -> None:
    """Extend the leases of the tasks this worker is running (and of no task it has let go)."""
    if not task_ids:
        return
    with session_factory() as session, session.begin():
        session.execute(
            sa.update(Task)
            .where(Task.id.in_(task_ids), Task.worker == worker, Task.state == states.RUNNING)
            .values(lease_expires_at=utcnow() + datetime.timedelta(seconds=lease_seconds))
        )


def _end_steps(session: Session, task: Task, event: str, reason: str | None) -> None:
    """A task that stops ends its steps: the one running (perhaps left by a dead worker,
    the task cancelled right after its takeover) fails or is cancelled with the task's
    reason; a cancelled task's steps not yet begun are cancelled too."""
    ending = (states.RUNNING, states.PENDING) if event == "cancel" else (states.RUNNING,)
    now = utcnow()
    for step in session.scalars(sa.select(TaskStep).where(TaskStep.task_id == task.id,
                                                          TaskStep.state.in_(ending))):
        step.state = states.STEP.next(step.state, event)
        step.finished_at = now
        step.error = reason


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
        _end_steps(session, task, event, reason)
        level = "warning" if event == "cancel" else "error"
        session.add(TaskEvent(task_id=task.id, level=level, message=f"{task.action} {task.state.lower()}: {reason}"))
        if action.on_failure:
            action.on_failure(session, task, reason)

"""The one road for every status change of a cluster or nodegroup.

`begin` starts an operation: it moves each object it acts on through its state
machine (jeroboam.states; an event the table refuses raises InvalidTransition),
queues the operation's task and makes that task the objects' owner. `settle` ends
it: the status moves only on objects the ending task still owns; on the others the
task records nothing but its own end.

The owner is the newest operation begun on an object. A cluster's tasks run one at a
time in the order they were queued (one lock key, see jeroboam.tasks.queue), so the
newest runs last and its end is the one the status shows; an owner that ends while an
older operation on the object is still unfinished (a queued task cancelled before it
started) hands the object over to that one, leaving the status in progress.

Both read the rows they change only after locking them in the caller's transaction
(a write first, which on SQLite takes the database's write lock; the row lock on
PostgreSQL), so an API request and a worker ending a task never both act on what they
read.
"""

from __future__ import annotations

from typing import Callable, Iterable

import sqlalchemy as sa
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from jeroboam import states
from jeroboam.db.models import Cluster, NodeGroup, Task

MACHINES = {Cluster: states.CLUSTER, NodeGroup: states.NODEGROUP}
BEGUN = "begun"  # payload key: [table, uuid] of every object the task began on


def _lock(session: Session, obj) -> None:
    model = type(obj)
    session.execute(sa.update(model).where(model.id == obj.id).values(task_id=model.task_id)
                    .execution_options(synchronize_session=False))
    session.refresh(obj, ["status", "task_id"])


def begin(session: Session, moves: Iterable[tuple[object, str]], enqueue: Callable[[], Task],
          reason: str | None = None) -> Task:
    """Apply each (object, event) of `moves`, then queue the task (`enqueue`) that carries
    the operation out and make it the objects' owner. Objects not yet written (a cluster
    being created) start from no status."""
    moves = list(moves)
    with session.no_autoflush:  # new objects are written once they have their status
        for obj, event in moves:
            if inspect(obj).persistent:
                _lock(session, obj)
            obj.status = MACHINES[type(obj)].next(obj.status, event)
            obj.status_reason = reason
    task = enqueue()
    for obj, _ in moves:
        if obj.task_id is None or obj.task_id < task.id:
            obj.task_id = task.id
    if moves:
        task.payload = {**task.payload, BEGUN: [[type(obj).__tablename__, obj.uuid] for obj, _ in moves]}
    return task


def settle(session: Session, task: Task, event: str, reason: str | None = None) -> list:
    """End `task`'s operation (event succeed or fail) on the objects it owns, which it
    returns. An object whose delete completed goes (a deleted object answers 404, which
    clients take as DELETE_COMPLETE)."""
    cluster = session.scalars(sa.select(Cluster).where(Cluster.uuid == task.lock_key, Cluster.task_id == task.id)
                              .with_for_update()).first()
    groups = session.scalars(sa.select(NodeGroup).where(NodeGroup.cluster_id == task.lock_key,
                                                        NodeGroup.task_id == task.id)
                             .order_by(NodeGroup.id).with_for_update()).all()
    owned = ([cluster] if cluster is not None else []) + list(groups)
    if not owned:
        return owned
    older = session.scalars(sa.select(Task).where(
        Task.lock_key == task.lock_key, Task.id != task.id,
        Task.state.in_((states.PENDING, states.RUNNING))).order_by(Task.id.desc())).all()
    for obj in reversed(owned):  # nodegroups first: a cluster that goes takes them along
        key = [type(obj).__tablename__, obj.uuid]
        heir = next((t for t in older if key in (t.payload or {}).get(BEGUN, [])), None)
        if heir is not None:
            obj.task_id = heir.id
            continue
        obj.task_id = None
        obj.status = MACHINES[type(obj)].next(obj.status, event)
        obj.status_reason = reason or f"{task.action} completed"
        if obj.status == states.DELETE_COMPLETE:
            if isinstance(obj, Cluster):
                session.execute(sa.delete(NodeGroup).where(NodeGroup.cluster_id == obj.uuid)
                                .execution_options(synchronize_session=False))
            session.delete(obj)
    return owned

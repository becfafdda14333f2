"""What a running task's handler sees: its payload, its steps, events, progress and cancel flag.

Steps are the unit of resumption. A handler announces its plan, then runs each
step through `run_step`; a step that already succeeded (before a worker died)
is skipped when another worker takes the task over, and the one that was
running is run again, so every step must be idempotent.

Every write is fenced on this worker still owning the task: a worker whose
lease was taken over stops at its next write instead of racing the new owner.
"""

from __future__ import annotations

import datetime
import logging
from typing import Callable

import sqlalchemy as sa

from jeroboam import states
from jeroboam.db.base import retrying, utcnow
from jeroboam.db.models import Task, TaskEvent, TaskStep

LOG = logging.getLogger("jeroboam.tasks")
# What a person sees of a database error: its text holds SQL and values, the log has it.
DATABASE_ERROR = "a database error (the worker's log has the details)"


def describe(exc: BaseException) -> str:
    """An exception as a task error or status reason may show it."""
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return DATABASE_ERROR
    return str(exc) or type(exc).__name__


class TaskCancelled(Exception):
    pass


class LeaseLost(Exception):
    """Another worker owns the task now; this one must stop touching it."""


class StepFailed(Exception):
    def __init__(self, step: str, cause: BaseException):
        super().__init__(f"{step}: {describe(cause)}")
        self.step, self.cause = step, cause


class TaskContext:
    def __init__(self, session_factory, task: Task, worker: str, settings=None):
        self.session_factory = session_factory
        self.settings = settings
        self.task_id = task.id
        self.task_uuid = task.uuid
        self.action = task.action
        self.resource_uuid = task.resource_uuid
        self.lock_key = task.lock_key
        self.project_id = task.project_id
        self.payload = dict(task.payload or {})
        self.worker = worker
        self.deadline: datetime.datetime | None = None
        self.current_step: str | None = None
        with session_factory() as session:
            self._steps = {s.name: s.state for s in session.scalars(
                sa.select(TaskStep).where(TaskStep.task_id == task.id))}

    # -- fencing ---------------------------------------------------------------------
    def owned(self, session) -> Task:
        """The task row, when this worker still owns it; raises LeaseLost otherwise.
        Run it inside any transaction that writes on the task's behalf (a fence)."""
        task = session.scalars(
            sa.select(Task).where(Task.id == self.task_id, Task.worker == self.worker,
                                  Task.state == states.RUNNING)
        ).first()
        if task is None:
            raise LeaseLost(f"task {self.task_uuid} is no longer owned by {self.worker}")
        return task

    def write(self, fn: Callable):
        """fn(session, task) in a transaction fenced on this worker owning the task; run
        again when another transaction was in the way."""
        def attempt():
            with self.session_factory() as session, session.begin():
                return fn(session, self.owned(session))
        return retrying(attempt)

    # -- what a handler calls -----------------------------------------------------------
    def plan(self, step_names: list[str]) -> None:
        """Record the steps ahead, so a person watching sees what remains."""
        def add(session, _task):
            for position, name in enumerate(step_names):
                if name not in self._steps:
                    session.add(TaskStep(task_id=self.task_id, position=position, name=name,
                                         state=states.STEP.next(None, "plan")))
        self.write(add)
        for name in step_names:
            self._steps.setdefault(name, states.PENDING)

    def run_step(self, name: str, fn: Callable[[], object]):
        if self._steps.get(name) == states.SUCCEEDED:
            return None
        self.check_cancel()
        self._mark_step(name, "start")
        self.current_step = name
        try:
            result = fn()
        except (TaskCancelled, LeaseLost):
            raise
        except Exception as exc:
            if isinstance(exc, sa.exc.SQLAlchemyError):
                LOG.error("task %s, step %s: database error", self.task_uuid, name, exc_info=exc)
            self._mark_step(name, "fail", error=describe(exc))
            raise StepFailed(name, exc) from exc
        finally:
            self.current_step = None
        self._mark_step(name, "succeed")
        return result

    def event(self, message: str, level: str = "info") -> None:
        self.write(lambda session, _task: session.add(
            TaskEvent(task_id=self.task_id, level=level, step=self.current_step, message=message)))

    def check_cancel(self) -> None:
        with self.session_factory() as session:
            task = self.owned(session)
            if task.cancel_requested:
                raise TaskCancelled("cancelled on request")
        if self.deadline is not None and utcnow() > self.deadline:
            raise TaskCancelled(f"timed out (deadline {self.deadline.isoformat()})")

    def set_timeout(self, minutes: int | None) -> None:
        """Bound the whole task, counted from its first start."""
        if not minutes:
            return
        with self.session_factory() as session:
            started = session.get(Task, self.task_id).started_at or utcnow()
        self.deadline = started + datetime.timedelta(minutes=minutes)

    # -- internals -------------------------------------------------------------------
    def _mark_step(self, name: str, event: str, error: str | None = None) -> None:
        now = utcnow()

        def mark(session, task):
            step = session.scalars(
                sa.select(TaskStep).where(TaskStep.task_id == self.task_id, TaskStep.name == name)
            ).first()
            if step is None:
                step = TaskStep(task_id=self.task_id, position=len(self._steps), name=name,
                                state=states.STEP.next(None, "plan"))
                session.add(step)
            step.state = states.STEP.next(step.state, event)
            if event == "start":
                step.attempts += 1
                step.started_at = now
                step.finished_at = None
                step.error = None
                session.add(TaskEvent(task_id=self.task_id, step=name, message=f"step {name} started"))
            else:
                step.finished_at = now
                step.error = error
                level = "info" if event == "succeed" else "error"
                text = f"step {name} {step.state.lower()}" + (f": {error}" if error else "")
                session.add(TaskEvent(task_id=self.task_id, step=name, level=level, message=text))
            self._steps[name] = step.state
            if event == "succeed":
                done = sum(1 for s in self._steps.values() if s == states.SUCCEEDED)
                task.progress = min(99, int(100 * done / max(1, len(self._steps))))

        self.write(mark)

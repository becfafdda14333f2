"""/v1/tasks (beyond Magnum): every asynchronous action as a record a person can watch,
and /v1/mservices: the workers that run them."""

from __future__ import annotations

import datetime

import sqlalchemy as sa

from jeroboam import states
from jeroboam.api import schemas
from jeroboam.api.common import filter_equal, for_tenant, iso, listing, page
from jeroboam.api.errors import BadRequest, Conflict, NotFound
from jeroboam.api.routing import Endpoint, Reply, Resource
from jeroboam.db.base import utcnow
from jeroboam.db.models import Service, Task, TaskEvent, TaskStep
from jeroboam.tasks import queue, registry
from jeroboam.tasks.worker import BINARY

SUMMARY = ["uuid", "action", "resource_type", "resource_uuid", "lock_key", "project_id", "user_id", "state",
           "progress", "error", "worker", "attempts", "cancel_requested"]


def _seconds(start, end) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


def summary(call, task: Task) -> dict:
    body = {f: getattr(task, f) for f in SUMMARY}
    body["error"] = for_tenant(call.ctx, task.error)
    body.update(created_at=iso(task.created_at), started_at=iso(task.started_at),
                finished_at=iso(task.finished_at), updated_at=iso(task.updated_at),
                cancellable=registry.get(task.action).cancellable and task.state not in states.TASK_DONE,
                links=call.link("tasks", task.uuid))
    return body


def detail(call, task: Task) -> dict:
    body = summary(call, task)
    steps = call.session.scalars(sa.select(TaskStep).where(TaskStep.task_id == task.id)
                                 .order_by(TaskStep.position, TaskStep.id))
    events = call.session.scalars(sa.select(TaskEvent).where(TaskEvent.task_id == task.id).order_by(TaskEvent.id))
    detail = task.error_detail
    if detail and not call.ctx.is_admin:
        # A server-side traceback is the operator's business (the worker logs it).
        detail = for_tenant(call.ctx, {k: v for k, v in detail.items() if k != "traceback"})
    body["error_detail"] = detail
    body["steps"] = [{"name": s.name, "state": s.state, "attempts": s.attempts,
                      "error": for_tenant(call.ctx, s.error),
                      "started_at": iso(s.started_at), "finished_at": iso(s.finished_at),
                      "duration_seconds": _seconds(s.started_at, s.finished_at)} for s in steps]
    body["events"] = [{"time": iso(e.time), "level": e.level, "step": e.step,
                       "message": for_tenant(call.ctx, e.message)}
                      for e in events]
    return body


def visible(ctx):
    return sa.true() if ctx.is_admin else Task.project_id == ctx.project_id


def lookup(call) -> Task:
    task = call.session.scalars(sa.select(Task).where(Task.uuid == call.path["ident"], visible(call.ctx))).first()
    if task is None:
        raise NotFound(f"Task {call.path['ident']} could not be found.")
    return task


def list_tasks(call):
    call.state.policy.authorize("task:get_all", call.ctx)
    stmt = sa.select(Task).where(visible(call.ctx))
    stmt, filters = filter_equal(stmt, call.query, {
        "resource_uuid": Task.resource_uuid, "lock_key": Task.lock_key, "action": Task.action, "state": Task.state})
    rows, next_url = page(call, Task, stmt, "tasks", extra_query=filters)
    return listing("tasks", [summary(call, t) for t in rows], next_url)


def show(call):
    task = lookup(call)
    call.state.policy.authorize("task:get", call.ctx, task.project_id)
    return {"task": detail(call, task)}


def cancel(call):
    task = lookup(call)
    call.state.policy.authorize("task:cancel", call.ctx, task.project_id)
    if not registry.get(task.action).cancellable:
        raise BadRequest(f"Task {task.uuid} ({task.action}) cannot be cancelled.")
    if task.state in states.TASK_DONE:
        raise Conflict(f"Task {task.uuid} has already ended ({task.state}).")
    queue.request_cancel(call.session, task)
    call.session.flush()
    return Reply({"task": summary(call, task)}, 202)


def mservices(call):
    call.state.policy.authorize("magnum-service:get_all", call.ctx)
    down_after = datetime.timedelta(seconds=float(call.state.settings.get("worker", "service_down_seconds")))
    now = utcnow()
    services = call.session.scalars(sa.select(Service).where(Service.binary == BINARY).order_by(Service.id))
    return {"mservices": [{
        "id": s.id, "host": s.host, "binary": s.binary,
        "state": "up" if s.last_seen_at and now - s.last_seen_at < down_after else "down",
        "report_count": s.report_count, "disabled": s.disabled, "disabled_reason": s.disabled_reason,
        "created_at": iso(s.created_at), "updated_at": iso(s.updated_at or s.last_seen_at),
    } for s in services]}


TASK = {"$ref": "#/components/schemas/Task"}

RESOURCES = [
    Resource("/v1/tasks",
             get=Endpoint(list_tasks, "List tasks (filter by resource_uuid, lock_key, action, state)",
                          query=schemas.TASK_LIST_QUERY,
                          response={"type": "object", "properties": {"tasks": {"type": "array", "items": TASK},
                                                                     "next": {"type": "string"}}})),
    Resource("/v1/tasks/{ident}",
             get=Endpoint(show, "Show a task with its steps and events", query=schemas.NO_QUERY,
                          response={"type": "object", "properties": {"task": TASK}})),
    Resource("/v1/tasks/{ident}/cancel",
             post=Endpoint(cancel, "Cancel a task where its action allows it", 202)),
    Resource("/v1/mservices",
             get=Endpoint(mservices, "List the workers and whether each is up", query=schemas.NO_QUERY)),
]

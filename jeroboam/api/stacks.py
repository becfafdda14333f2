"""/v1/stacks (beyond Magnum): orchestration stacks, shaped after Heat's API.

POST, PATCH, PUT and DELETE validate, record the intent (the stack goes
ACTION_IN_PROGRESS) and queue a task in the same transaction; the task runs
the engine (jeroboam.orchestration.actions). Template errors are 400s that
name their place in the template.
"""

from __future__ import annotations

import sqlalchemy as sa

from jeroboam.api import schemas
from jeroboam.api.common import filter_equal, find_one, iso, listing, page
from jeroboam.api.errors import BadRequest, Conflict, NotFound
from jeroboam.api.routing import Endpoint, Reply, Resource
from jeroboam.api.validation import Body, Query
from jeroboam.db.stack_models import Stack, StackEvent
from jeroboam.orchestration import resources as registry
from jeroboam.orchestration.engine import Engine, StackView
from jeroboam.orchestration.errors import StackConflict, TemplateError
from jeroboam.orchestration.sql_store import SqlStore, event_record, stack_record
from jeroboam.orchestration.store import DELETE, IN_PROGRESS, STATUSES
from jeroboam.tasks import queue

CANCELLED_BY_DELETE = "cancelled: the stack is being deleted"

# -- request schemas -------------------------------------------------------------------------

_NAME = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[a-zA-Z][a-zA-Z0-9_.-]*$"}
# Heat clients send these, usually empty; Jeroboam has no environments or extra files.
_UNSUPPORTED = {"type": ["object", "null"], "maxProperties": 0,
                "x-error": {"maxProperties": "Environments and extra files are not supported."}}
_COMMON = {
    "template": {"type": ["object", "string"], "minLength": 1},
    "parameters": {"type": ["object", "null"]},
    "timeout_mins": {"type": ["integer", "null"], "minimum": 1},
    "disable_rollback": {"type": ["boolean", "null"]},
    "files": _UNSUPPORTED,
    "environment": _UNSUPPORTED,
}
STACK_CREATE = Body("stack", {"type": "object", "additionalProperties": False,
                              "required": ["stack_name", "template"],
                              "properties": {"stack_name": _NAME, **_COMMON}})
STACK_UPDATE = Body("stack", {"type": "object", "additionalProperties": False, "properties": _COMMON})
# Heat clients say sort_keys where Magnum's lists say sort_key.
STACK_LIST_QUERY = schemas.query(name={"type": "string"}, action={"type": "string"},
                                 status={"type": "string"}, sort_keys={"type": "string"})
RESOURCES_QUERY = Query({"type": "object", "properties": {
    "nested_depth": {"type": "string", "pattern": r"^\d+$"}}})
EVENTS_QUERY = schemas.query(resource_name={"type": "string"}, resource_action={"type": "string"},
                             resource_status={"type": "string"}, resource_type={"type": "string"},
                             sort_keys={"type": "string"})

# Heat's sort keys, as columns.
SORT_KEYS = {"stack_name": "name", "stack_status": "status", "creation_time": "created_at",
             "updated_time": "updated_at"}

# -- views ---------------------------------------------------------------------------------------


def _state(action: str, status: str) -> str:
    return f"{action}_{status}"


def _status_filter(value: str, action_col, status_col):
    """`COMPLETE` or `CREATE_COMPLETE`, as Heat's filters take either."""
    for status in STATUSES:
        if value == status:
            return status_col == status
        if value.endswith("_" + status):
            return sa.and_(action_col == value[: -len(status) - 1], status_col == status)
    return sa.false()


def summary(call, row: Stack) -> dict:
    return {
        "id": row.uuid, "stack_name": row.name,
        "description": (row.template or {}).get("description") or "No description",
        "stack_status": _state(row.action, row.status), "stack_status_reason": row.status_reason,
        "creation_time": iso(row.created_at), "updated_time": iso(row.updated_at),
        "deletion_time": iso(row.deleted_at), "project": row.project_id,
        "stack_owner": None, "parent": None, "tags": None, "stack_user_project_id": None,
        "links": call.link("stacks", row.uuid),
    }


def detail(call, row: Stack) -> dict:
    body = summary(call, row)
    stack = stack_record(row)
    store = SqlStore(session=call.session)
    try:
        bound = Engine.bound(stack)
    except TemplateError as exc:  # e.g. a plugin uninstalled since: show the stack anyway
        body.update(parameters=dict(stack.parameters), outputs=[], outputs_error=str(exc))
    else:
        body.update(parameters=bound.displayed_parameters(),
                    outputs=bound.outputs(StackView(_current(store.resources(stack.id)))))
    body.update(template_description=body["description"], timeout_mins=row.timeout_mins,
                disable_rollback=row.disable_rollback, capabilities=[], notification_topics=[])
    return body


def _current(records) -> dict:
    return {r.name: r for r in records if r.replaced_by is None}


def _resource(call, row: Stack, rec, required_by: list) -> dict:
    base = f"{call.base_url}/v1/stacks/{row.uuid}"
    return {
        "resource_name": rec.name, "logical_resource_id": rec.name, "physical_resource_id": rec.physical_id,
        "resource_type": rec.type, "resource_status": _state(rec.action, rec.status),
        "resource_status_reason": rec.status_reason, "creation_time": iso(rec.created_at),
        "updated_time": iso(rec.updated_at), "required_by": required_by,
        "links": [{"href": f"{base}/resources/{rec.name}", "rel": "self"}, {"href": base, "rel": "stack"}],
    }


def _event(call, row: Stack, event) -> dict:
    base = f"{call.base_url}/v1/stacks/{row.uuid}"
    return {
        "id": event.id, "event_time": iso(event.time), "resource_name": event.resource_name,
        "logical_resource_id": event.resource_name, "physical_resource_id": event.physical_resource_id,
        "resource_type": event.resource_type, "resource_status": _state(event.action, event.status),
        "resource_status_reason": event.reason,
        "links": [{"href": f"{base}/events/{event.id}", "rel": "self"}, {"href": base, "rel": "stack"}],
    }


# -- lookups ---------------------------------------------------------------------------------------

def visible(ctx):
    live = Stack.deleted_at.is_(None)
    return live if ctx.is_admin else sa.and_(live, Stack.project_id == ctx.project_id)


def lookup(call, rule: str) -> Stack:
    row = find_one(call.session, Stack, call.path["ident"], visible(call.ctx), "Stack", "stacks")
    call.state.policy.authorize(rule, call.ctx, row.project_id)
    return row


def _sort_key(call, names: dict) -> None:
    """Heat's sort_keys / field names, as the column names page() sorts by."""
    key = call.query.pop("sort_keys", None) or call.query.get("sort_key")
    if key is not None:
        call.query["sort_key"] = names.get(key, key)


def _engine(call) -> Engine:
    return Engine(SqlStore(session=call.session))


def _invalid(exc: TemplateError) -> BadRequest:
    # The first sentence is the error's title; the detail names the place.
    return BadRequest(f"The template or its parameters are invalid. {exc}")


def _accepted(call, stack_id: str, action: str, body=None, status: int = 202) -> Reply:
    return Reply(body, status, call.queue_task(action, "stack", stack_id))


# -- handlers --------------------------------------------------------------------------------------

def list_stacks(call):
    call.state.policy.authorize("stack:get_all", call.ctx)
    stmt = sa.select(Stack).where(visible(call.ctx))
    stmt, filters = filter_equal(stmt, call.query, {"name": Stack.name, "action": Stack.action})
    if "status" in call.query:
        filters["status"] = call.query["status"]
        stmt = stmt.where(_status_filter(filters["status"], Stack.action, Stack.status))
    _sort_key(call, SORT_KEYS)
    rows, next_url = page(call, Stack, stmt, "stacks", extra_query=filters)
    return listing("stacks", [summary(call, r) for r in rows], next_url)


def show(call):
    return {"stack": detail(call, lookup(call, "stack:get"))}


def create(call):
    call.state.policy.authorize("stack:create", call.ctx)
    body = call.body
    try:
        stack = _engine(call).create_stack(
            body["stack_name"], body["template"], body.get("parameters"), project_id=call.ctx.project_id,
            timeout_mins=body.get("timeout_mins"), disable_rollback=body.get("disable_rollback", True))
    except TemplateError as exc:
        raise _invalid(exc) from None
    except StackConflict:
        raise Conflict(f"The Stack ({body['stack_name']}) already exists.") from None
    return _accepted(call, stack.id, "stack.create", {"stack": {"id": stack.id,
                                                                "links": call.link("stacks", stack.id)}})


def _update(call, existing: bool):
    row = lookup(call, "stack:update")
    body = call.body
    try:
        _engine(call).update_stack(row.uuid, body.get("template"), body.get("parameters"), existing=existing,
                                   timeout_mins=body.get("timeout_mins"),
                                   disable_rollback=body.get("disable_rollback"))
    except TemplateError as exc:
        raise _invalid(exc) from None
    except StackConflict as exc:
        raise Conflict(f"Stack {row.name} is busy. {exc}") from None
    return _accepted(call, row.uuid, "stack.update")


def patch_stack(call):
    return _update(call, existing=True)


def put_stack(call):
    if "template" not in call.body:
        raise BadRequest("Invalid input for field/attribute template. Value: 'None'. Mandatory field missing.")
    return _update(call, existing=False)


def delete(call):
    row = lookup(call, "stack:delete")
    if row.status == IN_PROGRESS:
        if row.action == DELETE:
            return Reply(None, 204)
        # The running action is asked to stop; the delete task, queued behind it, begins once it has.
        queue.cancel_unfinished(call.session, row.uuid, CANCELLED_BY_DELETE)
    else:
        _engine(call).delete_stack(row.uuid)
    return _accepted(call, row.uuid, "stack.delete", status=204)


def list_resources(call):
    row = lookup(call, "stack:get")
    depth = int(call.query.get("nested_depth", 0))
    current = _current(SqlStore(session=call.session).resources(row.uuid))
    required_by: dict[str, list] = {name: [] for name in current}
    for rec in current.values():
        for name in rec.requires:
            if name in required_by:
                required_by[name].append(rec.name)
    return {"resources": [_resource(call, row, rec, required_by[rec.name])
                          for rec in current.values() if rec.name.count("/") <= depth]}


def show_resource(call):
    row = lookup(call, "stack:get")
    current = _current(SqlStore(session=call.session).resources(row.uuid))
    rec = current.get(call.path["name"])
    if rec is None:
        raise NotFound(f"The Resource ({call.path['name']}) could not be found in Stack {row.name}.")
    required_by = [r.name for r in current.values() if rec.name in r.requires]
    body = _resource(call, row, rec, required_by)
    cls = registry.get(rec.type)
    body["attributes"] = cls.all_attributes(StackView(current), rec) if cls and rec.attributes is not None else {}
    return {"resource": body}


def list_events(call):
    row = lookup(call, "stack:get")
    stmt = sa.select(StackEvent).where(StackEvent.stack_id == row.uuid)
    stmt, filters = filter_equal(stmt, call.query, {"resource_name": StackEvent.resource_name,
                                                    "resource_action": StackEvent.action,
                                                    "resource_type": StackEvent.resource_type})
    if "resource_status" in call.query:
        filters["resource_status"] = call.query["resource_status"]
        stmt = stmt.where(_status_filter(filters["resource_status"], StackEvent.action, StackEvent.status))
    _sort_key(call, {"event_time": "time"})
    if call.query.get("sort_key", "id") not in ("id", "time"):
        raise BadRequest(f'The sort_key value "{call.query["sort_key"]}" is an invalid field for sorting')
    rows, next_url = page(call, StackEvent, stmt, f"stacks/{row.uuid}/events", extra_query=filters)
    return listing("events", [_event(call, row, event_record(e)) for e in rows], next_url)


def show_outputs(call):
    return {"outputs": detail(call, lookup(call, "stack:get"))["outputs"]}


def show_template(call):
    return lookup(call, "stack:get").template


STACK_REF = {"type": "object", "properties": {"id": {"type": "string"}, "links": {"type": "array"}}}
STACK = {"type": "object", "properties": {name: {} for name in (
    "id", "stack_name", "description", "stack_status", "stack_status_reason", "parameters", "outputs",
    "creation_time", "updated_time", "deletion_time", "timeout_mins", "disable_rollback", "links")}}
RESOURCE = {"type": "object", "properties": {name: {} for name in (
    "resource_name", "logical_resource_id", "physical_resource_id", "resource_type", "resource_status",
    "resource_status_reason", "creation_time", "updated_time", "required_by", "links")}}
EVENT = {"type": "object", "properties": {name: {} for name in (
    "id", "event_time", "resource_name", "logical_resource_id", "physical_resource_id", "resource_type",
    "resource_status", "resource_status_reason", "links")}}
OUTPUT = {"type": "object", "properties": {name: {} for name in (
    "output_key", "output_value", "description", "output_error")}}


def _array(key: str, item: dict) -> dict:
    return {"type": "object", "properties": {key: {"type": "array", "items": item}, "next": {"type": "string"}}}


RESOURCES = [
    Resource("/v1/stacks",
             get=Endpoint(list_stacks, "List stacks (filter by name, action, status)", query=STACK_LIST_QUERY,
                          response=_array("stacks", STACK)),
             post=Endpoint(create, "Create a stack (asynchronous; a task does the work)", 202, body=STACK_CREATE,
                           response={"type": "object", "properties": {"stack": STACK_REF}},
                           body_limit="max_json_body_size")),
    Resource("/v1/stacks/{ident}",
             get=Endpoint(show, "Show a stack by id or name, with parameters and outputs", query=schemas.NO_QUERY,
                          response={"type": "object", "properties": {"stack": STACK}}),
             patch=Endpoint(patch_stack, "Update a stack; omitted template and parameters keep their values", 202,
                            body=STACK_UPDATE, body_limit="max_json_body_size"),
             put=Endpoint(put_stack, "Replace a stack's template; omitted parameters take their defaults", 202,
                          body=STACK_UPDATE, body_limit="max_json_body_size"),
             delete=Endpoint(delete, "Delete a stack (asynchronous)", 204)),
    Resource("/v1/stacks/{ident}/resources",
             get=Endpoint(list_resources, "List a stack's resources (nested_depth=1 adds group members)",
                          query=RESOURCES_QUERY, response=_array("resources", RESOURCE))),
    Resource("/v1/stacks/{ident}/resources/{name:path}",
             get=Endpoint(show_resource, "Show a stack resource with its attributes", query=schemas.NO_QUERY,
                          response={"type": "object", "properties": {"resource": RESOURCE}})),
    Resource("/v1/stacks/{ident}/events",
             get=Endpoint(list_events, "List a stack's events, oldest first", query=EVENTS_QUERY,
                          response=_array("events", EVENT))),
    Resource("/v1/stacks/{ident}/outputs",
             get=Endpoint(show_outputs, "A stack's outputs, resolved now", query=schemas.NO_QUERY,
                          response=_array("outputs", OUTPUT))),
    Resource("/v1/stacks/{ident}/template",
             get=Endpoint(show_template, "The stack's current template", query=schemas.NO_QUERY)),
]

"""/v1/stacks (beyond Magnum): orchestration stacks, shaped after Heat's API.

POST, PATCH, PUT and DELETE validate, record the intent (the stack goes
ACTION_IN_PROGRESS) and queue a task in the same transaction; the task runs
the engine (jeroboam.orchestration.actions). Template errors are 400s that
name their place in the template.

Isolation: a template may name only the resource types the caller's policy allows
(`resource_types:<TYPE>`, 403), and each resource's plugin checks what it would reach
(a container's cluster or endpoint, 400), all before anything is stored. A cluster driver's
stack (a cluster's stack_id) changes only through the cluster: its update and delete are
admin-only here.
"""

from __future__ import annotations

from urllib.parse import urlencode

import sqlalchemy as sa

from jeroboam.api import schemas
from jeroboam.api.common import filter_equal, find_one, for_tenant, iso, listing, page, page_limit
from jeroboam.api.errors import BadRequest, Conflict, Forbidden, NotFound
from jeroboam.api.routing import Endpoint, Reply, Resource
from jeroboam.api.validation import Body, Query
from jeroboam.db.models import Cluster
from jeroboam.db.stack_models import Stack, StackEvent
from jeroboam.orchestration import resources as registry
from jeroboam.orchestration.engine import Engine, StackView
from jeroboam.orchestration.errors import StackConflict, TemplateError
from jeroboam.orchestration.resources.base import Services
from jeroboam.orchestration.sql_store import SqlStore, event_record, stack_record
from jeroboam.orchestration.store import DELETE, IN_PROGRESS, STATUSES
from jeroboam.orchestration.template import BoundTemplate, Limits
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
    "nested_depth": {"type": "string", "pattern": r"^\d+$"},
    "limit": schemas.PAGINATION["limit"], "marker": {"type": "string", "description": "a resource name"}}})
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
        "stack_status": _state(row.action, row.status),
        "stack_status_reason": for_tenant(call.ctx, row.status_reason),
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
        "resource_status_reason": for_tenant(call.ctx, rec.status_reason), "creation_time": iso(rec.created_at),
        "updated_time": iso(rec.updated_at), "required_by": required_by,
        "links": [{"href": f"{base}/resources/{rec.name}", "rel": "self"}, {"href": base, "rel": "stack"}],
    }


def _event(call, row: Stack, event) -> dict:
    base = f"{call.base_url}/v1/stacks/{row.uuid}"
    return {
        "id": event.id, "event_time": iso(event.time), "resource_name": event.resource_name,
        "logical_resource_id": event.resource_name, "physical_resource_id": event.physical_resource_id,
        "resource_type": event.resource_type, "resource_status": _state(event.action, event.status),
        "resource_status_reason": for_tenant(call.ctx, event.reason),
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
    return Engine(SqlStore(session=call.session), limits=Limits.from_settings(call.state.settings))


def _type_allowed(call, type_name: str) -> bool:
    return call.state.policy.allows(f"resource_types:{type_name}", call.ctx)


def _authorizer(call, project_id: str):
    """What the engine runs on a validated template before storing it: every resource type
    (group members' too) allowed to the caller, then each plugin's own checks."""
    def authorize(bound: BoundTemplate) -> None:
        for path, type_name, _ in bound.definitions:
            if not _type_allowed(call, type_name):
                raise Forbidden(f"{path}: resource type {type_name} is not available to this project "
                                f"(policy resource_types:{type_name}).")
        services = Services(settings=call.state.settings)
        for path, type_name, props in bound.definitions:
            registry.get(type_name).check_access(props, f"{path}.properties", services, call.session, project_id)
    return authorize


def _guard_cluster_stack(call, row: Stack, op: str) -> None:
    """A cluster's stack changes through the cluster (its driver keeps both in step)."""
    cluster = call.session.scalar(sa.select(Cluster.uuid).where(Cluster.stack_id == row.uuid).limit(1))
    if cluster is not None and not call.state.policy.allows(f"stack:{op}_cluster_stack", call.ctx, row.project_id):
        raise Forbidden(f"Stack {row.name} belongs to cluster {cluster}: change it through the cluster "
                        f"(policy stack:{op}_cluster_stack).")


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
            timeout_mins=body.get("timeout_mins"), disable_rollback=body.get("disable_rollback", True),
            authorize=_authorizer(call, call.ctx.project_id))
    except TemplateError as exc:
        raise _invalid(exc) from None
    except StackConflict:
        raise Conflict(f"The Stack ({body['stack_name']}) already exists.") from None
    return _accepted(call, stack.id, "stack.create", {"stack": {"id": stack.id,
                                                                "links": call.link("stacks", stack.id)}})


def _update(call, existing: bool):
    row = lookup(call, "stack:update")
    _guard_cluster_stack(call, row, "update")
    body = call.body
    try:
        _engine(call).update_stack(row.uuid, body.get("template"), body.get("parameters"), existing=existing,
                                   timeout_mins=body.get("timeout_mins"),
                                   disable_rollback=body.get("disable_rollback"),
                                   authorize=_authorizer(call, row.project_id))
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
    _guard_cluster_stack(call, row, "delete")
    # Deleting acts on every resource: refused when one is of a type the caller may not use
    # (a stack an admin made in the project).
    types = {r.type for r in SqlStore(session=call.session).resources(row.uuid)}
    types |= {d["type"] for d in (row.template.get("resources") or {}).values()}  # validated when stored
    refused = sorted(t for t in types if not _type_allowed(call, t))
    if refused:
        raise Forbidden(f"Stack {row.name} has resources of type {refused[0]}, not available to this project "
                        f"(policy resource_types:{refused[0]}).")
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
    shown = sorted((rec for rec in current.values() if rec.name.count("/") <= depth), key=lambda r: r.name)
    if "marker" in call.query:
        names = [rec.name for rec in shown]
        if call.query["marker"] not in names:
            raise NotFound(f"Marker {call.query['marker']} could not be found.")
        shown = shown[names.index(call.query["marker"]) + 1:]
    limit = page_limit(call)
    next_url = None
    if len(shown) > limit:
        shown = shown[:limit]
        params = {"limit": limit, "marker": shown[-1].name, **({"nested_depth": depth} if depth else {})}
        next_url = f"{call.base_url}/v1/stacks/{row.uuid}/resources?{urlencode(params)}"
    return listing("resources", [_resource(call, row, rec, required_by[rec.name]) for rec in shown], next_url)


def list_resource_types(call):
    call.state.policy.authorize("stack:list_resource_types", call.ctx)
    return {"resource_types": [t for t in registry.types() if _type_allowed(call, t)]}


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
    # before /v1/stacks/{ident}, which would take "resource_types" for a stack's name
    Resource("/v1/stacks/resource_types",
             get=Endpoint(list_resource_types, "Resource types the caller may use in a template",
                          query=schemas.NO_QUERY, response={"type": "object", "properties": {
                              "resource_types": {"type": "array", "items": {"type": "string"}}}})),
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

"""/v1/federations: groups of clusters. Bookkeeping only: no driver acts on them (as in Magnum),
so each change is complete the moment it is accepted."""

from __future__ import annotations

import sqlalchemy as sa

from jeroboam import states
from jeroboam.api import patch, schemas
from jeroboam.api.clusters import lookup as lookup_cluster
from jeroboam.api.common import find_one, iso, listing, page
from jeroboam.api.errors import BadRequest, Conflict, NotFound, invalid_input
from jeroboam.api.routing import Endpoint, Reply, Resource
from jeroboam.db.models import Federation

SUMMARY = ["uuid", "name", "hostcluster_id", "member_ids", "status", "properties"]
CHANGEABLE = frozenset({"member_ids", "properties"})


def view(call, fed: Federation, full: bool = True) -> dict:
    body = {f: getattr(fed, f) for f in SUMMARY}
    if full:
        body.update(status_reason=fed.status_reason, project_id=fed.project_id,
                    created_at=iso(fed.created_at), updated_at=iso(fed.updated_at))
    body["links"] = call.link("federations", fed.uuid)
    return body


def visible(ctx):
    return sa.true() if ctx.is_admin else Federation.project_id == ctx.project_id


def lookup(call) -> Federation:
    return find_one(call.session, Federation, call.path["ident"], visible(call.ctx), "Federation", "federations")


def _list(call, full: bool):
    call.state.policy.authorize("federation:detail" if full else "federation:get_all", call.ctx)
    rows, next_url = page(call, Federation, sa.select(Federation).where(visible(call.ctx)),
                          "federations/detail" if full else "federations")
    return listing("federations", [view(call, f, full) for f in rows], next_url)


def list_federations(call):
    return _list(call, False)


def detail_federations(call):
    return _list(call, True)


def show(call):
    fed = lookup(call)
    call.state.policy.authorize("federation:get", call.ctx, fed.project_id)
    return view(call, fed)


def _check_members(call, member_ids) -> None:
    """New members must be clusters the caller may see: a federation is no way to learn that
    another project's cluster exists, nor to pull it in."""
    for ident in member_ids:
        if not isinstance(ident, str):
            raise invalid_input("member_ids", ident, "Wrong type. Expected 'str'")
        try:
            lookup_cluster(call, ident)
        except NotFound as exc:
            raise BadRequest(exc.message) from None


def create(call):
    values = dict(call.body)
    call.state.policy.authorize("federation:create", call.ctx)
    try:
        host = lookup_cluster(call, values["hostcluster_id"])
    except NotFound as exc:
        raise BadRequest(exc.message) from None
    _check_members(call, values.get("member_ids") or [])
    properties = values.get("properties") or {}
    if "dns-zone" not in properties:
        raise BadRequest("No DNS zone specified: the federation properties must include 'dns-zone'.")
    fed = Federation(project_id=call.ctx.project_id, hostcluster_id=host.uuid, name=values.get("name"),
                     member_ids=values.get("member_ids") or [], properties=properties,
                     status=states.CREATE_COMPLETE, status_reason="recorded")
    call.session.add(fed)
    call.session.flush()
    if not fed.name:
        fed.name = f"federation-{fed.uuid[:8]}"
    return Reply({"uuid": fed.uuid}, 202)


def update(call):
    fed = lookup(call)
    call.state.policy.authorize("federation:update", call.ctx, fed.project_id)
    members = list(fed.member_ids)
    ops = []
    for op in call.body:
        # Joining and leaving name one member; they become a replace of the whole list.
        if op["path"] == "/member_ids" and op["op"] in ("add", "remove") and "value" in op:
            if op["op"] == "add":
                if op["value"] in members:
                    raise Conflict(f"Cluster {op['value']} is already a member of federation {fed.uuid}.")
                members.append(op["value"])
            elif op["value"] in members:
                members.remove(op["value"])
            ops.append({"op": "replace", "path": "/member_ids", "value": list(members)})
        else:
            ops.append(op)
    before = {"member_ids": fed.member_ids, "properties": fed.properties, "name": fed.name,
              "hostcluster_id": fed.hostcluster_id, "status": fed.status}
    after = patch.apply(before, ops)
    changed = patch.changed_fields(before, after)
    if changed - CHANGEABLE:
        raise BadRequest(f"cannot change federation property(ies) {', '.join(sorted(changed - CHANGEABLE))}.")
    new_members = after.get("member_ids") or []
    if not isinstance(new_members, list):
        raise invalid_input("member_ids", new_members, "Value not a valid list")
    _check_members(call, [m for m in new_members if m not in fed.member_ids])
    fed.member_ids = after.get("member_ids") or []
    fed.properties = after.get("properties") or {}
    fed.status = states.UPDATE_COMPLETE
    return Reply({"uuid": fed.uuid}, 202)


def delete(call):
    fed = lookup(call)
    call.state.policy.authorize("federation:delete", call.ctx, fed.project_id)
    call.session.delete(fed)
    return Reply(None, 204)


RESOURCES = [
    Resource("/v1/federations",
             get=Endpoint(list_federations, "List federations", query=schemas.LIST_QUERY),
             post=Endpoint(create, "Create a federation", 202, body=schemas.FEDERATION_CREATE)),
    Resource("/v1/federations/detail",
             get=Endpoint(detail_federations, "List federations with details", query=schemas.LIST_QUERY)),
    Resource("/v1/federations/{ident}",
             get=Endpoint(show, "Show a federation", query=schemas.NO_QUERY),
             patch=Endpoint(update, "Change members or properties (JSON Patch)", 202, body=schemas.PATCH,
                            query=schemas.CLUSTER_PATCH_QUERY),
             delete=Endpoint(delete, "Delete a federation", 204)),
]

"""/v1/quotas (cluster and node quotas per project) and /v1/stats."""

from __future__ import annotations

import sqlalchemy as sa

from jeroboam.api import schemas
from jeroboam.api.common import iso, listing, page
from jeroboam.api.errors import BadRequest, Conflict, NotFound
from jeroboam.api.routing import Endpoint, Reply, Resource
from jeroboam.api.validation import TRUE_STRINGS
from jeroboam.db.models import Cluster, NodeGroup, Quota


# Each resource's default hard limit, for a project without a quota row (Magnum knows only
# Cluster; Node bounds the nodes of all a project's clusters).
DEFAULT_LIMITS = {"Cluster": "max_clusters_per_project", "Node": "max_nodes_per_project"}


def default_limit(call, resource: str) -> int:
    # Magnum answers the cluster default for any resource name it has no default for.
    return int(call.state.settings.get("quotas", DEFAULT_LIMITS.get(resource, DEFAULT_LIMITS["Cluster"])))


def hard_limit(call, project_id: str, resource: str) -> int:
    """The project's quota of `resource`: its row, else the configured default."""
    limit = call.session.scalar(sa.select(Quota.hard_limit).where(Quota.project_id == project_id,
                                                                  Quota.resource == resource))
    return default_limit(call, resource) if limit is None else limit


def view(quota: Quota) -> dict:
    return {"id": quota.id, "project_id": quota.project_id, "resource": quota.resource,
            "hard_limit": quota.hard_limit, "created_at": iso(quota.created_at), "updated_at": iso(quota.updated_at)}


def _find(call, project_id: str, resource: str) -> Quota | None:
    return call.session.scalars(sa.select(Quota).where(Quota.project_id == project_id,
                                                       Quota.resource == resource)).first()


def _existing(call) -> Quota:
    quota = _find(call, call.path["project_id"], call.path["resource"])
    if quota is None:
        raise NotFound(f"Quota could not be found for project {call.path['project_id']} "
                       f"and resource {call.path['resource']}.")
    return quota


def list_quotas(call):
    call.state.policy.authorize("quota:get_all", call.ctx)
    stmt = sa.select(Quota)
    all_tenants = call.query.get("all_tenants", "").lower() in TRUE_STRINGS
    if not (call.ctx.is_admin and all_tenants):
        stmt = stmt.where(Quota.project_id == call.ctx.project_id)
    extra = {"all_tenants": call.query["all_tenants"]} if "all_tenants" in call.query else None
    rows, next_url = page(call, Quota, stmt, "quotas", marker_column="id", extra_query=extra)
    return listing("quotas", [view(q) for q in rows], next_url)


def show(call):
    call.state.policy.authorize("quota:get", call.ctx, call.path["project_id"])
    project_id, resource = call.path["project_id"], call.path["resource"]
    quota = _find(call, project_id, resource)
    if quota is None:
        return {"project_id": project_id, "resource": resource, "hard_limit": default_limit(call, resource)}
    return view(quota)


def create(call):
    call.state.policy.authorize("quota:create", call.ctx)
    project_id, resource = call.body["project_id"], call.body.get("resource") or "Cluster"
    if _find(call, project_id, resource) is not None:
        raise Conflict(f"Quota for project {project_id} already exists for resource {resource}.")
    quota = Quota(project_id=project_id, resource=resource, hard_limit=call.body.get("hard_limit", 1))
    call.session.add(quota)
    call.session.flush()
    return Reply(view(quota), 201)


def update(call):
    call.state.policy.authorize("quota:update", call.ctx)
    quota = _existing(call)
    quota.hard_limit = call.body["hard_limit"]
    call.session.flush()
    return Reply(view(quota), 202)


def delete(call):
    call.state.policy.authorize("quota:delete", call.ctx)
    call.session.delete(_existing(call))
    return Reply(None, 204)


def stats(call):
    project_id = call.query.get("project_id")
    kind = call.query.get("type", "cluster")
    if kind != "cluster":
        raise BadRequest("Invalid stats type. Allowed values are 'cluster'")
    call.state.policy.authorize("stats:get_all", call.ctx, project_id or call.ctx.project_id)
    if project_id is None and not call.ctx.is_admin:
        project_id = call.ctx.project_id
    clusters = sa.select(sa.func.count()).select_from(Cluster)
    nodes = sa.select(sa.func.coalesce(sa.func.sum(NodeGroup.node_count), 0))
    if project_id is not None:
        clusters = clusters.where(Cluster.project_id == project_id)
        nodes = nodes.where(NodeGroup.project_id == project_id)
    return {"clusters": call.session.scalar(clusters), "nodes": int(call.session.scalar(nodes))}


QUOTA = {"type": "object", "properties": {"id": {"type": "integer"}, "project_id": {"type": "string"},
                                          "resource": {"type": "string"}, "hard_limit": {"type": "integer"}}}

RESOURCES = [
    Resource("/v1/quotas",
             get=Endpoint(list_quotas, "List quotas", query=schemas.QUOTA_LIST_QUERY),
             post=Endpoint(create, "Create a quota", 201, body=schemas.QUOTA_CREATE, response=QUOTA)),
    Resource("/v1/quotas/{project_id}/{resource}",
             get=Endpoint(show, "Show a project's quota (or the default)", query=schemas.NO_QUERY, response=QUOTA),
             patch=Endpoint(update, "Change a quota's hard limit", 202, body=schemas.QUOTA_UPDATE, response=QUOTA),
             delete=Endpoint(delete, "Delete a quota", 204)),
    Resource("/v1/stats",
             get=Endpoint(stats, "Count clusters and nodes", query=schemas.STATS_QUERY,
                          response={"type": "object", "properties": {"clusters": {"type": "integer"},
                                                                     "nodes": {"type": "integer"}}})),
]

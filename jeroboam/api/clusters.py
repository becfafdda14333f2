"""/v1/clusters: create (202 + task), list, detail, show, PATCH, delete, resize, upgrade.

The cluster row, its default nodegroups, its CA and its task are written in one
transaction, so the cluster exists (CREATE_IN_PROGRESS) the moment POST returns.
"""

from __future__ import annotations

import sqlalchemy as sa

from jeroboam import pki, states
from jeroboam.api import patch, schemas
from jeroboam.api.clustertemplates import check_provider, lookup as lookup_template
from jeroboam.api.common import find_one, for_tenant, int_id, is_uuid, iso, listing, page
from jeroboam.api.errors import BadRequest, Conflict, Forbidden, NotFound, invalid_input
from jeroboam.api.quotas import hard_limit
from jeroboam.api.routing import Endpoint, Reply, Resource
from jeroboam.db.base import new_uuid
from jeroboam.db.models import Cluster, ClusterTemplate, NodeGroup
from jeroboam.drivers import Driver, DriverNotFound
from jeroboam.tasks import queue

SUMMARY_FIELDS = ["uuid", "name", "cluster_template_id", "keypair", "docker_volume_size", "labels",
                  "status", "health_status", "master_flavor_id", "flavor_id", "create_timeout"]
DETAIL_FIELDS = SUMMARY_FIELDS + [
    "status_reason", "health_status_reason", "api_address", "coe_version", "container_version",
    "discovery_url", "fixed_network", "fixed_subnet", "floating_ip_enabled", "master_lb_enabled",
    "project_id", "user_id"]
INTERNAL = frozenset({"/api_address", "/node_addresses", "/master_addresses", "/stack_id", "/cluster_id",
                      "/ca_cert_ref", "/magnum_cert_ref", "/etcd_ca_cert_ref", "/front_proxy_ca_cert_ref"})
PATCHABLE = frozenset({"node_count", "health_status", "health_status_reason"})
CANCELLED_BY_DELETE = "cancelled: the cluster is being deleted"


# -- views ----------------------------------------------------------------------------------

def _label_diff(cluster_labels: dict, template_labels: dict) -> dict:
    return {
        "labels_overridden": {k: v for k, v in template_labels.items()
                              if k in cluster_labels and cluster_labels[k] != v},
        "labels_added": {k: v for k, v in cluster_labels.items() if k not in template_labels},
        "labels_skipped": {k: v for k, v in template_labels.items() if k not in cluster_labels},
    }


def _backend_id(call, cluster, body: dict) -> None:
    # 1.13 renamed stack_id to cluster_id.
    body["cluster_id" if call.version >= (1, 13) else "stack_id"] = cluster.stack_id


def summary(call, cluster, counts: tuple[int, int]) -> dict:
    body = {f: getattr(cluster, f) for f in SUMMARY_FIELDS}
    body["master_count"], body["node_count"] = counts
    body["merge_labels"] = False
    _backend_id(call, cluster, body)
    body["links"] = call.link("clusters", cluster.uuid)
    return body


def detail(call, cluster, groups: list[NodeGroup], template_labels: dict | None) -> dict:
    body = {f: getattr(cluster, f) for f in DETAIL_FIELDS}
    body["master_count"], body["node_count"] = _counts(groups)
    body["master_addresses"] = [a for g in groups if g.role == "master" for a in g.node_addresses]
    body["node_addresses"] = [a for g in groups if g.role != "master" for a in g.node_addresses]
    body["merge_labels"] = False
    body["status_reason"] = for_tenant(call.ctx, cluster.status_reason)
    body["health_status_reason"] = for_tenant(call.ctx, cluster.health_status_reason)
    body.update(_label_diff(cluster.labels, template_labels or {}))
    _backend_id(call, cluster, body)
    body["created_at"] = iso(cluster.created_at)
    body["updated_at"] = iso(cluster.updated_at)
    body["links"] = call.link("clusters", cluster.uuid)
    return body


def _counts(groups) -> tuple[int, int]:
    masters = sum(g.node_count for g in groups if g.role == "master")
    return masters, sum(g.node_count for g in groups if g.role != "master")


# -- lookups ------------------------------------------------------------------------------------

def visible(ctx):
    return sa.true() if ctx.is_admin else Cluster.project_id == ctx.project_id


def lookup(call, ident: str) -> Cluster:
    return find_one(call.session, Cluster, ident, visible(call.ctx), "Cluster", "clusters")


def groups_of(session, cluster) -> list[NodeGroup]:
    return list(session.scalars(sa.select(NodeGroup).where(NodeGroup.cluster_id == cluster.uuid)
                                .order_by(NodeGroup.id)))


def default_group(groups, role: str = "worker") -> NodeGroup:
    return next(g for g in groups if g.is_default and g.role == role)


def find_nodegroup(session, cluster, ident: str) -> NodeGroup:
    if ident.isdigit():
        match = NodeGroup.id == int_id(ident)  # None (no row) for an id no row can have
    else:
        match = (NodeGroup.uuid if is_uuid(ident) else NodeGroup.name) == ident
    group = session.scalars(sa.select(NodeGroup).where(NodeGroup.cluster_id == cluster.uuid, match)).first()
    if group is None:
        raise NotFound(f"Nodegroup {ident} could not be found.")
    return group


def driver_of(call, template) -> Driver:
    try:
        return call.state.drivers().by_name(template.driver)
    except DriverNotFound:
        raise BadRequest(f"Cluster type ({template.server_type}, {template.cluster_distro}, {template.coe}) "
                         "not supported.") from None


def accepted(call, cluster, action: str, begin: list, payload: dict | None = None) -> Reply:
    """Queue the task for `action`, beginning it on the (object, event) pairs of `begin`, and
    answer 202 {"uuid"} naming the task in Location."""
    return Reply({"uuid": cluster.uuid}, 202, call.queue_task(action, "cluster", cluster.uuid, payload, begin))


# -- handlers -------------------------------------------------------------------------------------

def _list(call, full: bool):
    call.state.policy.authorize("cluster:detail" if full else "cluster:get_all", call.ctx)
    stmt = sa.select(Cluster).where(visible(call.ctx))
    rows, next_url = page(call, Cluster, stmt, "clusters/detail" if full else "clusters")
    uuids = [c.uuid for c in rows]
    groups: dict[str, list] = {u: [] for u in uuids}
    if uuids:
        for group in call.session.scalars(sa.select(NodeGroup).where(NodeGroup.cluster_id.in_(uuids))):
            groups[group.cluster_id].append(group)
    if full:
        items = [detail(call, c, groups[c.uuid], None) for c in rows]
    else:
        items = [summary(call, c, _counts(groups[c.uuid])) for c in rows]
    return listing("clusters", items, next_url)


def list_clusters(call):
    return _list(call, full=False)


def detail_clusters(call):
    return _list(call, full=True)


def show(call):
    cluster = lookup(call, call.path["ident"])
    call.state.policy.authorize("cluster:get", call.ctx, cluster.project_id)
    groups = groups_of(call.session, cluster)
    labels = call.session.scalar(sa.select(ClusterTemplate.labels)
                                 .where(ClusterTemplate.uuid == cluster.cluster_template_id))
    body = detail(call, cluster, groups, labels)
    if cluster.status in states.FAILED_STATUSES:
        body["faults"] = {g.name: for_tenant(call.ctx, g.status_reason)
                          for g in groups if g.status in states.FAILED_STATUSES}
    return body


def _check_quota(call) -> None:
    limit = hard_limit(call, call.ctx.project_id, "Cluster")
    count = call.session.scalar(sa.select(sa.func.count()).select_from(Cluster)
                                .where(Cluster.project_id == call.ctx.project_id))
    if count >= limit:
        raise Forbidden(f"Resource limit exceeded: the Cluster quota of project {call.ctx.project_id} "
                        f"is {limit} and {count} clusters exist.")


def admit_nodes(call, cluster_project: str, server_type: str, cluster_total: int, added: int) -> None:
    """What every request that adds nodes must pass: the provider is one the caller may use,
    the cluster stays within [quotas] max_nodes_per_cluster and its project within its Node quota."""
    if added <= 0:
        return
    check_provider(call, server_type)
    bound = int(call.state.settings.get("quotas", "max_nodes_per_cluster"))
    if cluster_total > bound:
        raise BadRequest(f"A cluster may have at most {bound} nodes ([quotas] max_nodes_per_cluster); "
                         f"this request would give it {cluster_total}.")
    limit = hard_limit(call, cluster_project, "Node")
    used = call.session.scalar(sa.select(sa.func.coalesce(sa.func.sum(NodeGroup.node_count), 0))
                               .where(NodeGroup.project_id == cluster_project))
    if used + added > limit:
        raise Forbidden(f"Resource limit exceeded: the Node quota of project {cluster_project} is {limit}, "
                        f"{used} nodes exist and this request adds {added}.")


def server_type_of(call, cluster) -> str:
    return call.session.scalar(sa.select(ClusterTemplate.server_type)
                               .where(ClusterTemplate.uuid == cluster.cluster_template_id))


def _min_node_count(labels: dict) -> int:
    value = int_id(str(labels.get("min_node_count", 0)))
    if value is None:
        raise invalid_input("labels", labels.get("min_node_count"),
                            "The label min_node_count must be a non-negative integer.")
    return value


def create(call):
    values = dict(call.body)
    values.pop("uuid", None)  # Magnum ignores a client-supplied cluster uuid
    try:
        template = lookup_template(call, values.pop("cluster_template_id"))
    except NotFound as exc:
        if call.version < (1, 10):
            raise BadRequest(exc.message) from None
        raise
    driver = driver_of(call, template)
    master_count = values.pop("master_count", 1)
    node_count = values.pop("node_count", 1)
    problem = driver.validate_master_size(master_count)
    if problem:
        raise BadRequest(problem)
    call.state.policy.authorize("cluster:create", call.ctx)
    _check_quota(call)
    if template.hidden and not call.ctx.is_admin:
        raise Forbidden(f"Not authorized to use hidden cluster template {template.uuid}.")
    # Checked here too, not only on templates: public templates are shared with every project.
    admit_nodes(call, call.ctx.project_id, template.server_type, master_count + node_count,
                master_count + node_count)
    labels = values.pop("labels", None) or {}
    if values.pop("merge_labels", False):
        labels = {**template.labels, **labels}
    elif not labels:
        labels = dict(template.labels)
    min_node_count = _min_node_count(labels)
    inherited = {
        "keypair": template.keypair_id, "docker_volume_size": template.docker_volume_size,
        "flavor_id": template.flavor_id, "master_flavor_id": template.master_flavor_id,
        "fixed_network": template.fixed_network, "fixed_subnet": template.fixed_subnet,
        "floating_ip_enabled": template.floating_ip_enabled, "master_lb_enabled": template.master_lb_enabled,
    }
    for name, value in inherited.items():
        if not values.get(name) and values.get(name) is not False:
            values[name] = value
    values.setdefault("create_timeout", 60)
    ca = pki.new_ca("jeroboam cluster CA")
    uuid = new_uuid()
    values["name"] = values.get("name") or f"cluster-{uuid[:8]}"
    cluster = Cluster(uuid=uuid, project_id=call.ctx.project_id, user_id=call.ctx.user_id,
                      cluster_template_id=template.uuid, labels=labels, health_status=None,
                      health_status_reason={}, ca_cert_pem=ca.cert_pem, ca_key_pem=ca.key_pem, **values)
    common = dict(cluster_id=cluster.uuid, project_id=cluster.project_id, is_default=True,
                  image_id=template.image_id, labels=dict(labels), docker_volume_size=cluster.docker_volume_size)
    groups = [
        NodeGroup(name="default-master", role="master", node_count=master_count,
                  flavor_id=cluster.master_flavor_id, **common),
        NodeGroup(name="default-worker", role="worker", node_count=node_count,
                  min_node_count=min_node_count, flavor_id=cluster.flavor_id, **common),
    ]
    call.session.add_all([cluster, *groups])
    return accepted(call, cluster, "cluster.create", [(o, "create") for o in (cluster, *groups)])


def update(call):
    cluster = lookup(call, call.path["ident"])
    call.state.policy.authorize("cluster:update", call.ctx, cluster.project_id)
    call.state.policy.authorize("cluster:update_health_status", call.ctx)
    groups = groups_of(call.session, cluster)
    worker = default_group(groups)
    before = {f: getattr(cluster, f) for f in DETAIL_FIELDS}
    before["node_count"] = worker.node_count
    before["master_count"] = _counts(groups)[0]
    after = patch.apply(before, call.body, internal=INTERNAL, non_removable=frozenset({"/cluster_template_id"}))
    changed = patch.changed_fields(before, after)
    if changed - PATCHABLE:
        raise BadRequest(f"cannot change cluster property(ies) {', '.join(sorted(changed - PATCHABLE))}.")
    checked = schemas.pick(schemas.CLUSTER_PATCHED, call.version).check(
        {k: after.get(k) for k in PATCHABLE if k in after})
    for name in ("health_status", "health_status_reason"):
        if name in changed:
            setattr(cluster, name, checked.get(name) if name == "health_status" else checked.get(name) or {})
    if "node_count" not in changed:
        return Reply({"uuid": cluster.uuid}, 202)
    node_count = checked["node_count"]
    _check_bounds(worker, node_count)
    admit_nodes(call, cluster.project_id, server_type_of(call, cluster),
                sum(g.node_count for g in groups) - worker.node_count + node_count, node_count - worker.node_count)
    restore = {"nodegroup": worker.uuid, "node_count": worker.node_count}
    worker.node_count = node_count
    return accepted(call, cluster, "cluster.update", [(cluster, "update"), (worker, "update")],
                    {"restore_node_count": restore})


def _check_bounds(group: NodeGroup, node_count: int) -> None:
    if node_count < group.min_node_count or (group.max_node_count is not None and node_count > group.max_node_count):
        raise BadRequest(f"Resizing {group.name} outside the allowed range: min_node_count = "
                         f"{group.min_node_count}, max_node_count = {group.max_node_count}")


def delete(call):
    cluster = lookup(call, call.path["ident"])
    call.state.policy.authorize("cluster:delete", call.ctx, cluster.project_id)
    if cluster.status == states.DELETE_IN_PROGRESS:
        return Reply(None, 204)
    begin = [(cluster, "delete"), *((g, "delete") for g in groups_of(call.session, cluster))]
    headers = call.queue_task("cluster.delete", "cluster", cluster.uuid, begin=begin)
    queue.cancel_unfinished(call.session, cluster.uuid, CANCELLED_BY_DELETE)
    return Reply(None, 204, headers)


def resize(call):
    cluster = lookup(call, call.path["ident"])
    call.state.policy.authorize("cluster:resize", call.ctx, cluster.project_id)
    groups = groups_of(call.session, cluster)
    ident = call.body.get("nodegroup")
    group = find_nodegroup(call.session, cluster, ident) if ident else default_group(groups)
    if group.role == "master":
        raise BadRequest("Resizing the master nodegroup is not supported by this driver.")
    node_count = call.body["node_count"]
    _check_bounds(group, node_count)
    admit_nodes(call, cluster.project_id, server_type_of(call, cluster),
                sum(g.node_count for g in groups) - group.node_count + node_count, node_count - group.node_count)
    restore = {"nodegroup": group.uuid, "node_count": group.node_count}
    group.node_count = node_count
    return accepted(call, cluster, "cluster.resize", [(cluster, "resize"), (group, "update")], {
        "nodegroup": group.uuid, "node_count": node_count,
        "nodes_to_remove": call.body.get("nodes_to_remove") or [], "restore_node_count": restore})


def upgrade(call):
    cluster = lookup(call, call.path["ident"])
    call.state.policy.authorize("cluster:upgrade", call.ctx, cluster.project_id)
    template = lookup_template(call, call.body["cluster_template"])
    check_provider(call, template.server_type)
    groups = groups_of(call.session, cluster)
    ident = call.body.get("nodegroup")
    group = find_nodegroup(call.session, cluster, ident) if ident else default_group(groups)
    if not group.is_default and template.uuid != cluster.cluster_template_id:
        raise Conflict(f"Cluster template {template.uuid} is not valid for upgrading nodegroup {group.name}: "
                       "a non-default nodegroup may only be upgraded to the cluster's current template.")
    driver = driver_of(call, template)
    if type(driver).upgrade_cluster is Driver.upgrade_cluster:
        raise BadRequest(f"Upgrading a cluster is not supported by the {driver.name} driver.")
    return accepted(call, cluster, "cluster.upgrade", [(cluster, "update")], {
        "cluster_template": template.uuid, "max_batch_size": call.body.get("max_batch_size") or 1,
        "nodegroup": group.uuid})


UUID_REPLY = {"type": "object", "properties": {"uuid": {"type": "string", "format": "uuid"}}}
CLUSTER_RESPONSE = {"$ref": "#/components/schemas/Cluster"}

RESOURCES = [
    Resource("/v1/clusters",
             get=Endpoint(list_clusters, "List clusters", query=schemas.LIST_QUERY),
             post=Endpoint(create, "Create a cluster (asynchronous; a task does the work)", 202,
                           body=schemas.CLUSTER_CREATE, response=UUID_REPLY)),
    Resource("/v1/clusters/detail",
             get=Endpoint(detail_clusters, "List clusters with details", query=schemas.LIST_QUERY)),
    Resource("/v1/clusters/{ident}",
             get=Endpoint(show, "Show a cluster by uuid or name", query=schemas.NO_QUERY,
                          response=CLUSTER_RESPONSE),
             patch=Endpoint(update, "Update node_count or health (JSON Patch)", 202, body=schemas.PATCH,
                            query=schemas.CLUSTER_PATCH_QUERY, response=UUID_REPLY),
             delete=Endpoint(delete, "Delete a cluster (asynchronous)", 204)),
    Resource("/v1/clusters/{ident}/actions/resize",
             post=Endpoint(resize, "Resize a nodegroup of the cluster", 202, (1, 7), body=schemas.RESIZE,
                           response=UUID_REPLY)),
    Resource("/v1/clusters/{ident}/actions/upgrade",
             post=Endpoint(upgrade, "Upgrade the cluster to another template", 202, (1, 8), body=schemas.UPGRADE,
                           response=UUID_REPLY)),
]

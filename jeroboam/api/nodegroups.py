"""/v1/clusters/{cluster}/nodegroups (1.9+): list, show, create, PATCH, delete."""

from __future__ import annotations

import sqlalchemy as sa

from jeroboam.api import patch, schemas
from jeroboam.api.clusters import admit_nodes, find_nodegroup, groups_of, lookup as lookup_cluster, server_type_of
from jeroboam.api.common import for_tenant, iso, listing, page
from jeroboam.api.errors import BadRequest, Conflict
from jeroboam.api.routing import Endpoint, Reply, Resource
from jeroboam.api.validation import Body
from jeroboam.db.base import new_uuid
from jeroboam.db.models import ClusterTemplate, NodeGroup

LIST_FIELDS = ["uuid", "name", "flavor_id", "node_count", "role", "is_default", "image_id", "status", "stack_id"]
FIELDS = ["id", "uuid", "name", "cluster_id", "project_id", "role", "is_default", "node_count", "min_node_count",
          "max_node_count", "flavor_id", "image_id", "docker_volume_size", "labels", "node_labels", "node_taints",
          "node_addresses", "status", "status_reason", "stack_id", "version"]
INTERNAL = frozenset({"/name", "/cluster_id", "/docker_volume_size", "/labels", "/flavor_id", "/image_id",
                      "/node_addresses", "/node_count", "/role", "/is_default", "/stack_id", "/status",
                      "/status_reason", "/version"})
PATCH_RESULT = Body("nodegroup", {"type": "object", "properties": {
    k: schemas.NODEGROUP_PROPERTIES[k] for k in ("min_node_count", "max_node_count", "node_labels", "node_taints")}},
    patched=True)
# What a `remove` op leaves behind for each patchable attribute.
REMOVED_VALUE = {"min_node_count": 0, "max_node_count": None, "node_labels": {}, "node_taints": []}
# Kubelet refuses most labels in its own namespaces; these are the ones it lets a node set.
KUBELET_ALLOWED_PREFIXES = ("kubelet.kubernetes.io/", "node.kubernetes.io/")
KUBELET_ALLOWED_KEYS = {"kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
                        "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type",
                        "failure-domain.beta.kubernetes.io/region", "failure-domain.beta.kubernetes.io/zone",
                        "topology.kubernetes.io/region", "topology.kubernetes.io/zone"}


def view(call, cluster, group: NodeGroup) -> dict:
    body = {f: getattr(group, f) for f in FIELDS}
    body["status_reason"] = for_tenant(call.ctx, group.status_reason)
    cluster_labels = cluster.labels or {}
    body["labels_overridden"] = {k: v for k, v in cluster_labels.items()
                                 if k in group.labels and group.labels[k] != v}
    body["labels_added"] = {k: v for k, v in group.labels.items() if k not in cluster_labels}
    body["labels_skipped"] = {k: v for k, v in cluster_labels.items() if k not in group.labels}
    body["merge_labels"] = False
    body["created_at"] = iso(group.created_at)
    body["updated_at"] = iso(group.updated_at)
    body["links"] = call.link(f"clusters/{cluster.uuid}/nodegroups", group.uuid)
    return body


def list_view(group: NodeGroup) -> dict:
    body = {f: getattr(group, f) for f in LIST_FIELDS}
    # Magnum's list shows these defaults, not the stored values (clients accept either).
    body.update(min_node_count=0, max_node_count=None, merge_labels=False)
    return body


def _cluster(call, rule: str):
    cluster = lookup_cluster(call, call.path["cluster"])
    call.state.policy.authorize(rule, call.ctx, cluster.project_id)
    return cluster


def _check_node_settings(group_role: str, values: dict) -> None:
    if group_role == "master" and (values.get("node_labels") or values.get("node_taints")):
        raise Conflict("node_labels and node_taints are not allowed on master nodegroups.")
    for key in (values.get("node_labels") or {}):
        namespace = key.split("/", 1)[0] if "/" in key else ""
        restricted = namespace.endswith("kubernetes.io") or namespace.endswith("k8s.io")
        if restricted and key not in KUBELET_ALLOWED_KEYS and not key.startswith(KUBELET_ALLOWED_PREFIXES):
            raise Conflict(f"Node label {key} is in a namespace the kubelet may not set.")
    minimum = values.get("min_node_count", 0) or 0
    maximum = values.get("max_node_count")
    count = values.get("node_count", 1)
    if count < minimum or (maximum is not None and (maximum < minimum or count > maximum)):
        raise Conflict(f"Invalid nodegroup sizes: node_count={count}, min_node_count={minimum}, "
                       f"max_node_count={maximum}.")


def list_nodegroups(call):
    cluster = _cluster(call, "nodegroup:get_all")
    stmt = sa.select(NodeGroup).where(NodeGroup.cluster_id == cluster.uuid)
    role = call.query.get("role")
    if role:
        stmt = stmt.where(NodeGroup.role == role)
    extra = {"role": role} if role else None
    rows, next_url = page(call, NodeGroup, stmt, f"clusters/{cluster.uuid}/nodegroups", extra_query=extra)
    return listing("nodegroups", [list_view(g) for g in rows], next_url)


def show(call):
    cluster = _cluster(call, "nodegroup:get")
    return view(call, cluster, find_nodegroup(call.session, cluster, call.path["ident"]))


def create(call):
    values = dict(call.body)
    cluster = _cluster(call, "nodegroup:create")
    if values.get("role") == "master":
        raise BadRequest("Creating master nodegroups is currently not supported.")
    if not cluster.api_address:
        raise Conflict(f"Cluster {cluster.uuid} API address is not available yet.")
    values.setdefault("node_count", 1)
    values.setdefault("role", "worker")
    _check_node_settings(values["role"], values)
    existing = sum(g.node_count for g in groups_of(call.session, cluster))
    admit_nodes(call, cluster.project_id, server_type_of(call, cluster), existing + values["node_count"],
                values["node_count"])
    values.pop("uuid", None)
    name = values.pop("name", None) or f"nodegroup-{values['role']}"
    if call.session.scalar(sa.select(sa.exists().where(NodeGroup.cluster_id == cluster.uuid,
                                                       NodeGroup.name == name))):
        raise Conflict(f"A node group with name {name} already exists in the cluster {cluster.uuid}.")
    labels = values.pop("labels", None) or {}
    if values.pop("merge_labels", False):
        labels = {**cluster.labels, **labels}
    elif not labels:
        labels = dict(cluster.labels)
    values.setdefault("flavor_id", cluster.flavor_id)
    if not values.get("image_id"):
        values["image_id"] = call.session.scalar(
            sa.select(ClusterTemplate.image_id).where(ClusterTemplate.uuid == cluster.cluster_template_id))
    group = NodeGroup(uuid=new_uuid(), name=name, cluster_id=cluster.uuid, project_id=cluster.project_id,
                      labels=labels, is_default=False, **values)
    call.session.add(group)
    headers = _queue(call, cluster, group, "nodegroup.create", "create")
    return Reply(view(call, cluster, group), 202, headers)


def _queue(call, cluster, group, action: str, event: str) -> dict:
    """Queue a nodegroup's task behind every other operation on its cluster (its lock key);
    a nodegroup change may follow one in progress (Magnum accepts it)."""
    return call.queue_task(action, "nodegroup", group.uuid, {"cluster_uuid": cluster.uuid, "nodegroup": group.uuid},
                           [(cluster, "resize"), (group, event)], lock_key=cluster.uuid)


def update(call):
    cluster = _cluster(call, "nodegroup:update")
    group = find_nodegroup(call.session, cluster, call.path["ident"])
    before = {f: getattr(group, f) for f in FIELDS}
    after = patch.apply(before, call.body, internal=INTERNAL)
    changed = patch.changed_fields(before, after)
    checked = PATCH_RESULT.check({k: after.get(k) for k in changed})
    _check_node_settings(group.role, {**before, **checked, "node_count": group.node_count})
    for name in changed:
        setattr(group, name, checked.get(name, REMOVED_VALUE[name]))
    headers = _queue(call, cluster, group, "nodegroup.update", "update")
    return Reply(view(call, cluster, group), 202, headers)


def delete(call):
    cluster = _cluster(call, "nodegroup:delete")
    group = find_nodegroup(call.session, cluster, call.path["ident"])
    if group.is_default:
        raise BadRequest("Deleting a default nodegroup is not supported.")
    return Reply(None, 204, _queue(call, cluster, group, "nodegroup.delete", "delete"))


NODEGROUP_RESPONSE = {"$ref": "#/components/schemas/NodeGroup"}

RESOURCES = [
    Resource("/v1/clusters/{cluster}/nodegroups",
             get=Endpoint(list_nodegroups, "List a cluster's nodegroups", min_version=(1, 9),
                          query=schemas.NODEGROUP_LIST_QUERY),
             post=Endpoint(create, "Create a nodegroup (asynchronous)", 202, (1, 9), body=schemas.NODEGROUP_CREATE,
                           response=NODEGROUP_RESPONSE)),
    Resource("/v1/clusters/{cluster}/nodegroups/{ident}",
             get=Endpoint(show, "Show a nodegroup by id, uuid or name", min_version=(1, 9), query=schemas.NO_QUERY,
                          response=NODEGROUP_RESPONSE),
             patch=Endpoint(update, "Update a nodegroup's sizes, node labels or taints (JSON Patch)", 202, (1, 9),
                            body=schemas.PATCH, response=NODEGROUP_RESPONSE),
             delete=Endpoint(delete, "Delete a nodegroup (asynchronous)", 204, (1, 9))),
]

"""JSON Schemas of every request body and query, per microversion.

`versioned(...)` pairs each schema with the first microversion it applies to;
the router picks the newest one not above the request's version. The OpenAPI
document is generated from these same objects.
"""

from __future__ import annotations

from jeroboam import states
from jeroboam.api.common import INT_MAX
from jeroboam.api.validation import Body, Query

UUID_PATTERN = "^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
COES = ["kubernetes", "swarm", "swarm-mode", "mesos", "dcos"]
SERVER_TYPES = ["vm", "bm", "local"]
ZERO_NODES_MESSAGE = "Resizing a nodegroup to zero is not supported in the provided microversion."


def string(min_length: int = 1, max_length: int = 255, nullable: bool = True) -> dict:
    return {"type": ["string", "null"] if nullable else "string",
            "minLength": min_length, "maxLength": max_length}


# Columns are 32-bit integers: anything larger is refused here, not by the database.
def integer(minimum: int | None = None, maximum: int = INT_MAX, nullable: bool = True,
            below_minimum: str | None = None) -> dict:
    schema: dict = {"type": ["integer", "null"] if nullable else "integer", "maximum": maximum}
    if minimum is not None:
        schema["minimum"] = minimum
    if below_minimum:
        schema["x-error"] = {"minimum": below_minimum}
    return schema


BOOLEAN = {"type": ["boolean", "null"]}
LABELS = {"type": ["object", "null"], "x-stringify-values": True,
          "additionalProperties": {"type": ["string", "integer", "number", "boolean"]}}
STRING_MAP = {"type": ["object", "null"], "additionalProperties": {"type": "string"}}
STRING_LIST = {"type": ["array", "null"], "items": {"type": "string"}}
UUID = {"type": "string", "pattern": UUID_PATTERN}

COMMON_READ_ONLY = frozenset({"project_id", "user_id", "created_at", "updated_at", "links"})


def versioned(*pairs):
    """[(min_version, schema), ...] newest last."""
    return list(pairs)


# --- cluster templates ------------------------------------------------------------------

TEMPLATE_PROPERTIES = {
    "uuid": UUID,
    "name": string(),
    "coe": {"type": "string", "enum": COES},
    "image_id": string(nullable=False),
    "driver": string(),
    "server_type": {"type": ["string", "null"], "enum": SERVER_TYPES + [None]},
    "flavor_id": string(), "master_flavor_id": string(), "keypair_id": string(),
    "external_network_id": string(), "fixed_network": string(), "fixed_subnet": string(),
    "network_driver": string(), "volume_driver": string(), "cluster_distro": string(),
    "dns_nameserver": {"type": ["string", "null"],
                       "pattern": r"^[0-9a-fA-F.:]+( *, *[0-9a-fA-F.:]+)*$",
                       "x-error": {"pattern": "Value should be an IP address or a comma-separated list of them"}},
    "apiserver_port": integer(1024, 65535),
    "docker_volume_size": integer(1),
    "docker_storage_driver": string(),
    "http_proxy": string(), "https_proxy": string(), "no_proxy": string(), "insecure_registry": string(),
    "labels": LABELS,
    "tls_disabled": BOOLEAN, "public": BOOLEAN, "hidden": BOOLEAN, "registry_enabled": BOOLEAN,
    "master_lb_enabled": BOOLEAN, "floating_ip_enabled": BOOLEAN,
    "tags": string(0),
}
TEMPLATE = {"type": "object", "properties": TEMPLATE_PROPERTIES, "required": ["coe", "image_id"],
            "additionalProperties": False}
TEMPLATE_CREATE = versioned(((1, 1), Body("cluster_template", TEMPLATE, COMMON_READ_ONLY)))

# --- clusters ---------------------------------------------------------------------------------


def _cluster(min_nodes: int, message: str | None) -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["cluster_template_id"], "properties": {
        "uuid": UUID,
        "name": {"type": ["string", "null"], "minLength": 1, "maxLength": 242,
                 "pattern": "^[a-zA-Z][a-zA-Z0-9_.-]*$"},
        "cluster_template_id": string(nullable=False),
        "keypair": string(),
        "node_count": integer(min_nodes, below_minimum=message),
        "master_count": integer(1),
        "docker_volume_size": integer(1),
        "labels": LABELS,
        "merge_labels": BOOLEAN,
        "master_flavor_id": string(), "flavor_id": string(),
        "create_timeout": integer(0),
        "discovery_url": string(),
        "fixed_network": string(), "fixed_subnet": string(),
        "floating_ip_enabled": BOOLEAN, "master_lb_enabled": BOOLEAN,
    }}


CLUSTER_READ_ONLY = COMMON_READ_ONLY | {
    "status", "status_reason", "health_status", "health_status_reason", "api_address", "coe_version",
    "container_version", "master_addresses", "node_addresses", "stack_id", "cluster_id", "faults",
    "labels_overridden", "labels_added", "labels_skipped"}
CLUSTER_CREATE = versioned(
    ((1, 1), Body("cluster", _cluster(1, ZERO_NODES_MESSAGE), CLUSTER_READ_ONLY)),
    ((1, 10), Body("cluster", _cluster(0, None), CLUSTER_READ_ONLY)),
)
# What a cluster PATCH result must satisfy (after the patch has been applied).
CLUSTER_PATCHED = versioned(
    ((1, 1), Body("cluster", {"type": "object", "properties": {
        "node_count": integer(1, nullable=False, below_minimum=ZERO_NODES_MESSAGE),
        "health_status": {"type": ["string", "null"], "enum": list(states.HEALTH_STATUSES) + [None]},
        "health_status_reason": {"type": ["object", "null"], "x-stringify-values": True}}}, patched=True)),
    ((1, 10), Body("cluster", {"type": "object", "properties": {
        "node_count": integer(0, nullable=False),
        "health_status": {"type": ["string", "null"], "enum": list(states.HEALTH_STATUSES) + [None]},
        "health_status_reason": {"type": ["object", "null"], "x-stringify-values": True}}}, patched=True)),
)


def _resize(min_nodes: int, message: str | None) -> dict:
    return {"type": "object", "additionalProperties": False, "required": ["node_count"], "properties": {
        "node_count": integer(min_nodes, nullable=False, below_minimum=message),
        "nodes_to_remove": STRING_LIST,
        "nodegroup": string(),
    }}


RESIZE = versioned(
    ((1, 7), Body("cluster_resize", _resize(1, ZERO_NODES_MESSAGE))),
    ((1, 10), Body("cluster_resize", _resize(0, None))),
)
UPGRADE = versioned(((1, 8), Body("cluster_upgrade", {
    "type": "object", "additionalProperties": False, "required": ["cluster_template"], "properties": {
        "cluster_template": string(nullable=False),
        "max_batch_size": integer(1),
        "nodegroup": string(),
    }})))

# --- nodegroups -----------------------------------------------------------------------------

TAINT = {"type": "object", "additionalProperties": False, "required": ["key", "effect"], "properties": {
    "key": {"type": "string", "minLength": 1},
    "value": {"type": ["string", "null"]},
    "effect": {"type": "string", "enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
}}
NODEGROUP_PROPERTIES = {
    "uuid": UUID,
    "name": string(),
    "role": string(),
    "node_count": integer(0),
    "min_node_count": integer(0),
    "max_node_count": integer(0),
    "flavor_id": string(), "image_id": string(),
    "docker_volume_size": integer(1),
    "labels": LABELS,
    "merge_labels": BOOLEAN,
    "node_labels": STRING_MAP,
    "node_taints": {"type": ["array", "null"], "items": TAINT},
}
NODEGROUP_READ_ONLY = COMMON_READ_ONLY | {
    "id", "cluster_id", "is_default", "status", "status_reason", "stack_id", "version", "node_addresses",
    "labels_overridden", "labels_added", "labels_skipped"}
NODEGROUP_CREATE = versioned(((1, 9), Body("nodegroup", {
    "type": "object", "additionalProperties": False, "properties": NODEGROUP_PROPERTIES}, NODEGROUP_READ_ONLY)))

# --- JSON Patch -------------------------------------------------------------------------------

PATCH = Body("patch", {"type": "array", "items": {
    "type": "object", "additionalProperties": False, "required": ["op", "path"], "properties": {
        "op": {"type": "string", "enum": ["add", "replace", "remove"]},
        "path": {"type": "string", "pattern": r"^(/[\w-]+)+$"},
        "value": {},
    }}})

# --- certificates, quotas, federations --------------------------------------------------------

CA_CERT_TYPE = {"type": ["string", "null"], "enum": ["kubernetes", "etcd", "front_proxy", "front-proxy", None]}
CERTIFICATE_CREATE = versioned(((1, 1), Body("certificate", {
    "type": "object", "additionalProperties": False, "required": ["cluster_uuid", "csr"], "properties": {
        "cluster_uuid": string(nullable=False),
        "csr": {"type": "string", "minLength": 1},
        "ca_cert_type": CA_CERT_TYPE,
    }}, COMMON_READ_ONLY | {"pem"})))

QUOTA_PROPERTIES = {
    "project_id": string(nullable=False),
    "resource": {"type": ["string", "null"], "enum": ["Cluster", "Node", None]},
    "hard_limit": integer(0),
}
# A quota's project_id is its input, not the caller's.
QUOTA_READ_ONLY = frozenset({"id", "created_at", "updated_at", "links"})
QUOTA_CREATE = versioned(((1, 1), Body("quota", {
    "type": "object", "additionalProperties": False, "required": ["project_id"],
    "properties": QUOTA_PROPERTIES}, QUOTA_READ_ONLY)))
QUOTA_UPDATE = versioned(((1, 1), Body("quota", {
    "type": "object", "additionalProperties": False, "required": ["hard_limit"],
    "properties": {**QUOTA_PROPERTIES, "project_id": string()}}, QUOTA_READ_ONLY)))

FEDERATION_CREATE = versioned(((1, 1), Body("federation", {
    "type": "object", "additionalProperties": False, "required": ["hostcluster_id"], "properties": {
        "uuid": UUID,
        "name": {"type": ["string", "null"], "minLength": 1, "maxLength": 242,
                 "pattern": "^[a-zA-Z][a-zA-Z0-9_.-]*$"},
        "hostcluster_id": string(nullable=False),
        "member_ids": STRING_LIST,
        "properties": STRING_MAP,
    }}, COMMON_READ_ONLY | {"status", "status_reason"})))

# --- queries ----------------------------------------------------------------------------------

PAGINATION = {
    "limit": {"type": "string", "pattern": r"^[+-]?\d+$",
              "x-error": {"pattern": "unable to convert to int. Error: invalid literal for int() with base 10: "
                                     "'{value}'"}},
    "marker": {"type": "string", "pattern": UUID_PATTERN,
               "x-error": {"pattern": "unable to convert to uuid. Error: Expected a uuid but received {value}."}},
    "sort_key": {"type": "string"},
    "sort_dir": {"type": "string"},
}
INT_MARKER = {"type": "string", "pattern": r"^\d+$",
              "x-error": {"pattern": "unable to convert to int. Error: invalid literal for int() with base 10: "
                                     "'{value}'"}}


def query(**extra) -> Query:
    return Query({"type": "object", "properties": {**PAGINATION, **extra}})


NO_QUERY = Query({"type": "object", "properties": {}})
LIST_QUERY = query()
NODEGROUP_LIST_QUERY = query(role={"type": "string"})
QUOTA_LIST_QUERY = query(all_tenants={"type": "string"}, marker=INT_MARKER)
STATS_QUERY = Query({"type": "object", "properties": {"project_id": {"type": "string"}, "type": {"type": "string"}}})
CERTIFICATE_QUERY = Query({"type": "object", "properties": {"ca_cert_type": {
    "type": "string", "enum": ["kubernetes", "etcd", "front_proxy", "front-proxy"]}}})
CLUSTER_PATCH_QUERY = versioned(
    ((1, 1), NO_QUERY),
    ((1, 3), Query({"type": "object", "properties": {"rollback": {"type": "string"}}})),
)
TASK_LIST_QUERY = query(
    resource_uuid={"type": "string"},
    lock_key={"type": "string"},
    action={"type": "string"},
    state={"type": "string", "enum": list(states.TASK_STATES)},
)


def pick(schemas, version: tuple[int, int]):
    """The newest schema whose first version is not above `version`; None when none applies."""
    chosen = None
    for first, schema in schemas:
        if first <= version:
            chosen = schema
    return chosen

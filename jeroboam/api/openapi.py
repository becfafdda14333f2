"""The OpenAPI 3.1 document, generated from the route table and the very schemas that validate
requests, so that the document cannot disagree with what the service enforces."""

from __future__ import annotations

import copy
import re

from jeroboam.api import microversions
from jeroboam.api.validation import Body, Query

# Starlette path parameters may carry a converter ({name:path}); OpenAPI names them bare.
_PARAM = re.compile(r"{(\w+)(?::\w+)?}")


def _strip(schema):
    """Drop our private `x-` keywords (they only word error messages)."""
    if isinstance(schema, dict):
        return {k: _strip(v) for k, v in schema.items() if not k.startswith("x-")}
    if isinstance(schema, list):
        return [_strip(v) for v in schema]
    return schema


def _object(fields: list[str]) -> dict:
    return {"type": "object", "properties": {f: {} for f in fields}}


def _components() -> dict:
    from jeroboam.api import clusters, clustertemplates, nodegroups, tasks

    error = {"type": "object", "properties": {"errors": {"type": "array", "items": {
        "type": "object", "properties": {
            "request_id": {"type": "string"}, "code": {"type": "string"}, "status": {"type": "integer"},
            "title": {"type": "string"}, "detail": {"type": "string"}, "links": {"type": "array"}}}}}}
    return {"schemas": {
        "Error": error,
        "ClusterTemplate": _object(clustertemplates.FIELDS + ["links", "created_at", "updated_at"]),
        "Cluster": _object(clusters.DETAIL_FIELDS + [
            "master_count", "node_count", "master_addresses", "node_addresses", "cluster_id", "stack_id",
            "labels_overridden", "labels_added", "labels_skipped", "faults", "links", "created_at", "updated_at"]),
        "NodeGroup": _object(nodegroups.FIELDS + ["links", "created_at", "updated_at"]),
        "Task": _object(tasks.SUMMARY + ["steps", "events", "error_detail", "created_at", "started_at",
                                         "finished_at", "links"]),
    }}


def _versions(schemas) -> list:
    if isinstance(schemas, list):
        return schemas
    return [((1, 1), schemas)] if schemas is not None else []


def _operation(endpoint, path: str) -> dict:
    op: dict = {"summary": endpoint.summary,
                "x-min-microversion": microversions.fmt(endpoint.min_version)}
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
              for p in _PARAM.findall(path)]
    queries = _versions(endpoint.query)
    if queries:
        newest: Query = queries[-1][1]
        for name, schema in newest.schema.get("properties", {}).items():
            params.append({"name": name, "in": "query", "required": False, "schema": _strip(schema)})
    params.append({"name": "OpenStack-API-Version", "in": "header", "required": False,
                   "schema": {"type": "string", "examples": ["container-infra 1.14"]}})
    op["parameters"] = params
    bodies = _versions(endpoint.body)
    if bodies:
        newest_body: Body = bodies[-1][1]
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _strip(
            copy.deepcopy(newest_body.schema))}}}
        if len(bodies) > 1:
            op["x-body-schema-by-microversion"] = {
                microversions.fmt(first): _strip(copy.deepcopy(body.schema)) for first, body in bodies}
    ok: dict = {"description": "Success"}
    if endpoint.response:
        ok["content"] = {"application/json": {"schema": endpoint.response}}
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op["responses"] = {
        str(endpoint.status): ok,
        "400": {"description": "Invalid input", **error},
        "403": {"description": "Not allowed by policy", **error},
        "404": {"description": "Not found", **error},
        "406": {"description": "Microversion not acceptable", **error},
    }
    return op


def document(resources) -> dict:
    paths: dict = {}
    for resource in resources:
        item = paths.setdefault(_PARAM.sub(r"{\1}", resource.path), {})
        for method, endpoint in resource.methods.items():
            item[method.lower()] = _operation(endpoint, resource.path)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Jeroboam container-infra API", "version": microversions.fmt(microversions.MAX),
                 "description": "Magnum v1 compatible API (microversions 1.1-1.14) plus tasks and stacks."},
        "paths": paths,
        "components": _components(),
    }

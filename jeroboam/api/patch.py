"""JSON Patch (RFC 6902) updates with Magnum's rules on top.

Only add, replace and remove; internal attributes can never be patched;
mandatory ones cannot be removed; `add` at the root only fills an attribute
that is null; and some dict-valued attributes also accept a Python-literal
string, which magnumclient 4.x and Terraform send (e.g. "{'k': 'v'}").
"""

from __future__ import annotations

import ast

import jsonpatch

from jeroboam.api.errors import BadRequest

INTERNAL = frozenset({"/created_at", "/id", "/links", "/updated_at", "/uuid", "/project_id", "/user_id"})
LITERAL_PATHS = frozenset({"/labels", "/health_status_reason", "/node_labels", "/node_taints"})


def apply(document: dict, ops: list[dict], internal=frozenset(), non_removable=frozenset()) -> dict:
    internal = INTERNAL | internal
    prepared = []
    for op in ops:
        path = op["path"]
        root = "/" + path.split("/")[1]
        if root in internal:
            raise BadRequest(f"'{path}' is an internal attribute and can not be updated")
        if op["op"] in ("add", "replace") and "value" not in op:
            raise BadRequest("'add' and 'replace' operations needs value")
        if op["op"] == "remove" and path in non_removable:
            raise BadRequest(f"'{path}' is a mandatory attribute and can not be removed")
        if op["op"] == "add" and path == root:
            if root[1:] not in document:
                raise BadRequest(f"Adding a new attribute {path} to the root of the resource is not allowed.")
            if document[root[1:]] is not None:
                raise BadRequest(f"The attribute {path} has existed, please use 'replace' operation instead.")
            op = {**op, "op": "replace"}
        if op["op"] == "replace" and path in LITERAL_PATHS and isinstance(op["value"], str):
            op = {**op, "value": _literal(op["value"])}
        prepared.append(op)
    try:
        return jsonpatch.apply_patch(document, prepared)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise BadRequest(f"Couldn't apply patch '{ops}'. Reason: {exc}") from None


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def changed_fields(before: dict, after: dict) -> set[str]:
    # An attribute absent from `after` reads as null (removed, or a null dropped by validation).
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}

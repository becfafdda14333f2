"""The resource-plugin interface.

A plugin class declares a JSON Schema for its properties (custom keywords on a
property: `update_allowed`, `immutable`), its attributes, and the handlers the
engine calls: `create` / `update` / `delete`, each followed by its
`check_*_complete` until that returns True. Handlers must return quickly; any
waiting happens in the engine between checks (a check may set `poll_after` to
say when to look again). Handlers of `blocking` plugins run on worker threads.

Resumability: the engine stores `physical_id` and `data` after every handler
call, before it waits. A handler may be called again after a crash (create
after create, delete after delete), so it must find what an earlier call made,
e.g. by a deterministic name.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import jsonschema
from jsonschema.exceptions import best_match

from jeroboam.orchestration.coerce import to_bool, to_number
from jeroboam.orchestration.errors import TemplateError
from jeroboam.orchestration.functions import has_deferred, walk_path

if TYPE_CHECKING:
    from jeroboam.orchestration.store import ResourceRecord


@dataclass(frozen=True)
class Services:
    """What the service lends plugins: its settings and its database. Both None when the
    engine runs alone (tests on a MemoryStore); a plugin that needs them then refuses."""

    settings: object = None
    session_factory: object = None


@dataclass(frozen=True)
class StackInfo:
    id: str
    name: str
    project_id: str | None
    services: Services = Services()


class AttributeView:
    """Read access to the stack's current resources, for attribute resolution."""

    def record(self, name: str) -> "ResourceRecord | None":
        raise NotImplementedError

    def reference_id(self, name: str):
        raise NotImplementedError

    def attribute(self, name: str, attr: str, path: list):
        raise NotImplementedError


class Resource:
    type_name: ClassVar[str]
    # JSON Schema of the properties; None = accept anything and never resolve it.
    properties_schema: ClassVar[dict | None] = {"type": "object", "properties": {}, "additionalProperties": False}
    attributes_schema: ClassVar[dict[str, str]] = {}  # attribute name -> description
    # Handlers do I/O: run them on the engine's worker threads, not inline.
    blocking: ClassVar[bool] = True
    # Template changes are never acted on (OS::Heat::None).
    ignores_changes: ClassVar[bool] = False
    # Members are resources of their own that the engine creates, updates and
    # deletes (OS::Heat::ResourceGroup); see `members`.
    composite: ClassVar[bool] = False
    # Safe in any project's template. Other types (a provider's: root dockerds, host bridges)
    # are for cluster drivers, which run stacks without the API, and for admins: the default
    # `resource_types:<type>` policy rule of a type follows this flag.
    tenant_safe: ClassVar[bool] = False

    def __init__(self, name: str, record_id: str, properties: dict, data: dict,
                 physical_id: str | None, stack: StackInfo):
        self.name = name
        self.record_id = record_id
        self.properties = properties
        self.data = data
        self.physical_id = physical_id
        self.stack = stack
        self.poll_after: float | None = None

    # ---- handlers
    def create(self) -> str | None:
        """Start creating; return the physical id (also kept in self.physical_id)."""
        raise NotImplementedError

    def check_create_complete(self) -> bool:
        return True

    def update(self, old_properties: dict, changed: set[str]) -> None:
        """Update in place to self.properties; `changed` names the changed properties."""

    def check_update_complete(self) -> bool:
        return True

    def delete(self) -> None:
        """Start deleting; a resource that no longer exists counts as deleted."""

    def check_delete_complete(self) -> bool:
        return True

    def get_attributes(self) -> dict:
        """Attribute values, fetched once an action completes and cached with the resource."""
        return {}

    def physical_name(self) -> str:
        """A name unique to this record, stable across retries: stack-resource-recordid."""
        raw = f"{self.stack.name}-{self.name}-{self.record_id.replace('-', '')[:12]}"
        return re.sub(r"[^A-Za-z0-9_.-]", "-", raw).lstrip("-_.") or self.record_id

    def failure_text(self, exc: Exception) -> str:
        """A handler's failure as the resource's status reason, which the stack's project
        reads: a plugin leaves out here what must stay with the operator (host paths)."""
        return str(exc)

    # ---- class-level behaviour
    @classmethod
    def needs_replacement(cls, name: str, old: dict, new: dict, changed: set[str]) -> bool:
        """Whether a change of `changed` properties needs a new physical resource.

        A change to an `immutable` property is refused with a TemplateError.
        """
        schema = (cls.properties_schema or {}).get("properties", {})
        for prop in sorted(changed):
            if schema.get(prop, {}).get("immutable"):
                raise TemplateError(f"resources.{name}.properties.{prop}", "cannot be changed (immutable)")
        return any(not schema.get(prop, {}).get("update_allowed") for prop in changed)

    @classmethod
    def validate_properties(cls, props: dict, path: str, partial: bool = False) -> dict:
        """Coerce and validate; return the properties with defaults filled in.

        partial: skip properties whose value is not yet known (holds DEFERRED).
        """
        schema = cls.properties_schema
        if schema is None:
            return props
        props = _coerce(schema, props)
        skip = frozenset(k for k, v in props.items() if has_deferred(v)) if partial else frozenset()
        instance = {k: v for k, v in props.items() if k not in skip} if skip else props
        error = best_match(_validator(cls, skip).iter_errors(instance))
        if error is not None:
            raise _template_error(error, path)
        for key, sub in schema.get("properties", {}).items():
            if key not in props and "default" in sub:
                props[key] = _copy_json(sub["default"])
        return props

    @classmethod
    def has_attribute(cls, attr: str, properties) -> bool:
        return attr in cls.attributes_schema

    @classmethod
    def reference_id(cls, record: "ResourceRecord"):
        return record.physical_id

    @classmethod
    def attribute(cls, view: AttributeView, record: "ResourceRecord", attr: str, path: list):
        return walk_path((record.attributes or {}).get(attr), path, None)

    @classmethod
    def all_attributes(cls, view: AttributeView, record: "ResourceRecord") -> dict:
        return dict(record.attributes or {})

    @classmethod
    def check_access(cls, props: dict, path: str, services: Services, session, project_id: str | None) -> None:
        """Raise TemplateError when a stack of ``project_id`` may not have a resource with
        these (validated) properties: the API asks before it stores a tenant's stack."""

    @classmethod
    def nested(cls, props: dict) -> list[tuple[str, str, dict, int | None]]:
        """Definitions a composite makes from its properties, for policy and limits:
        (path suffix, type, member properties, how many; None when not yet known)."""
        return []

    @classmethod
    def members(cls, name: str, properties: dict, data: dict, updating: bool, ref_names: dict):
        """Composite types: ({member: (type, properties, metadata)}, new data)."""
        raise NotImplementedError


def _copy_json(value):
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


@functools.cache
def _validator(cls, skip: frozenset):
    schema = cls.properties_schema
    if skip and schema.get("required"):
        schema = {**schema, "required": [r for r in schema["required"] if r not in skip]}
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    return validator_cls(schema)


def _template_error(error, base: str) -> TemplateError:
    path = base + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = next(r for r in error.validator_value if r not in instance)
        return TemplateError(f"{path}.{missing}", "required property is missing")
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = error.schema.get("properties", {})
        extra = sorted(k for k in instance if k not in known)
        if extra:
            return TemplateError(f"{path}.{extra[0]}", "unknown property")
    return TemplateError(path, error.message)


def _coerce(schema: dict, value):
    """Coerce strings (e.g. from parameters) to the schema's scalar types, as Heat does."""
    kind = schema.get("type")
    if kind == "object" and isinstance(value, dict):
        props = schema.get("properties", {})
        return {k: _coerce(props[k], v) if k in props else v for k, v in value.items()}
    if kind == "array":
        if isinstance(value, str):
            value = value.split(",") if value else []
        items = schema.get("items")
        if isinstance(value, list) and isinstance(items, dict):
            return [_coerce(items, v) for v in value]
        return value
    try:
        if kind in ("integer", "number") and isinstance(value, str):
            number = to_number(value)
            return int(number) if kind == "integer" and number == int(number) else number
        if kind == "boolean" and not isinstance(value, bool):
            return to_bool(value)
    except (ValueError, OverflowError):
        return value  # left for the schema to report
    if kind == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value

"""HOT-subset templates: parsing, validation, parameters, and binding to values.

`Template(source)` parses and checks what can be checked without parameter
values; `Template.bind(values, ...)` checks the rest (parameters, conditions,
references, dependency cycles, resource properties) and gives a
`BoundTemplate`, which resolves properties and outputs against live data.
Every error is a TemplateError naming its place, e.g.
`resources.web.properties.image: required property is missing`.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass

import yaml

from jeroboam.orchestration import resources as registry
from jeroboam.orchestration.coerce import to_bool, to_number
from jeroboam.orchestration.errors import TemplateError
from jeroboam.orchestration.functions import (
    ABSENT, DEFERRED, V2016, V2017_02, V2018_03, Conditions, Context, references,
)
from jeroboam.orchestration.graph import Graph



@dataclass(frozen=True)
class Limits:
    """Bounds of one stack, Heat's defaults unless the operator sets [orchestration]."""

    max_resources: int = 1000  # a group counts as its members
    max_template_bytes: int = 512 * 1024
    max_depth: int = 5  # levels of members within members (a group of groups is 2)

    @classmethod
    def from_settings(cls, settings) -> "Limits":
        if settings is None:
            return cls()
        return cls(int(settings.get("orchestration", "max_resources_per_stack")),
                   int(settings.get("orchestration", "max_template_size")),
                   int(settings.get("orchestration", "max_nested_stack_depth")))


DEFAULT_LIMITS = Limits()

VERSIONS = {
    "2013-05-23": "2013-05-23",
    "2014-10-16": "2014-10-16",
    "2015-04-30": "2015-04-30",
    "2015-10-15": "2015-10-15",
    "2016-04-08": "2016-04-08",
    "2016-10-14": "2016-10-14", "newton": "2016-10-14",
    "2017-02-24": "2017-02-24", "ocata": "2017-02-24",
    "2017-09-01": "2017-09-01", "pike": "2017-09-01",
    "2018-03-02": "2018-03-02", "queens": "2018-03-02",
    "2018-08-31": "2018-08-31", "rocky": "2018-08-31",
    "2021-04-16": "2021-04-16", "wallaby": "2021-04-16",
}

PSEUDO_PARAMETERS = ("OS::stack_id", "OS::stack_name", "OS::project_id")
HIDDEN_VALUE = "******"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """Safe YAML where date-like scalars stay strings (`2018-08-31` is a version)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load(source, max_bytes: int = DEFAULT_LIMITS.max_template_bytes) -> dict:
    """A template document from YAML/JSON text or a map, as plain JSON data."""
    if isinstance(source, (str, bytes)):
        if len(source) > max_bytes:
            raise TemplateError("template", f"larger than {max_bytes} bytes")
        try:
            _refuse_aliases(source)
            source = yaml.load(source, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise TemplateError("template", f"not valid YAML: {exc}") from None
    if not isinstance(source, dict):
        raise TemplateError("template", "must be a map")
    try:
        # Normalises YAML-only types (integer map keys; dates, from a map a caller loaded with
        # a stock YAML loader) and refuses what JSON cannot hold.
        text = json.dumps(source, default=_date_text)
    except (TypeError, ValueError) as exc:
        raise TemplateError("template", f"holds a value JSON cannot represent: {exc}") from None
    if len(text) > max_bytes:
        raise TemplateError("template", f"larger than {max_bytes} bytes")
    return json.loads(text)


def _refuse_aliases(source) -> None:
    """Aliases let a few bytes expand to gigabytes ("billion laughs"); templates need none.
    Only a text with a `*` can hold one, so most templates are parsed once."""
    if ("*" if isinstance(source, str) else b"*") not in source:
        return
    for event in yaml.parse(source, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            raise TemplateError("template", "YAML aliases (*name) are not supported")


def _date_text(value) -> str:
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _type_name(value) -> str:
    return {dict: "map", list: "list", str: "string", bool: "boolean", int: "number",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _check_keys(mapping: dict, allowed, path: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise TemplateError(f"{path}.{key}", "unknown key")


def _map_section(raw: dict, key: str) -> dict:
    section = raw.get(key)
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise TemplateError(key, f"must be a map, not a {_type_name(section)}")
    return section


# --------------------------------------------------------------- parameters

_PARAM_KEYS = {"type", "description", "default", "constraints", "hidden", "label", "immutable", "tags"}
_PARAM_TYPES = ("string", "number", "boolean", "comma_delimited_list", "json")
_CONSTRAINT_TYPES = {
    "length": ("string", "comma_delimited_list", "json"),
    "range": ("number",),
    "modulo": ("number",),
    "allowed_values": ("string", "number", "boolean", "comma_delimited_list"),
    "allowed_pattern": ("string",),
    "custom_constraint": _PARAM_TYPES,  # accepted and not enforced: no plugin lookup here
}


class Parameter:
    def __init__(self, name: str, schema, version: str):
        path = f"parameters.{name}"
        if not isinstance(schema, dict):
            raise TemplateError(path, "must be a map")
        allowed = _PARAM_KEYS if version >= V2018_03 else _PARAM_KEYS - {"tags"}
        _check_keys(schema, allowed, path)
        self.name = name
        self.path = path
        self.type = schema.get("type")
        if self.type not in _PARAM_TYPES:
            raise TemplateError(f"{path}.type", "must be one of " + ", ".join(_PARAM_TYPES))
        for key in ("description", "label"):
            if not isinstance(schema.get(key, ""), str):
                raise TemplateError(f"{path}.{key}", "must be a string")
        for key in ("hidden", "immutable"):
            try:
                setattr(self, key, to_bool(schema.get(key, False)))
            except ValueError:
                raise TemplateError(f"{path}.{key}", "must be a boolean") from None
        tags = schema.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise TemplateError(f"{path}.tags", "must be a list of strings")
        self.description = schema.get("description", "")
        self.label = schema.get("label", name)
        self.constraints = self._parse_constraints(schema.get("constraints", []), version)
        self.has_default = "default" in schema
        if self.has_default:
            self.default = self.value(schema["default"], f"{path}.default")

    def _parse_constraints(self, constraints, version: str) -> list:
        path = f"{self.path}.constraints"
        if not isinstance(constraints, list):
            raise TemplateError(path, "must be a list")
        parsed = []
        for i, item in enumerate(constraints):
            where = f"{path}[{i}]"
            if not isinstance(item, dict):
                raise TemplateError(where, "must be a map")
            kinds = [k for k in item if k != "description"]
            if len(kinds) != 1 or kinds[0] not in _CONSTRAINT_TYPES or (
                    kinds[0] == "modulo" and version < V2017_02):
                raise TemplateError(where, "must hold exactly one constraint of "
                                    + ", ".join(k for k in _CONSTRAINT_TYPES if k != "modulo" or version >= V2017_02))
            kind = kinds[0]
            arg = item[kind]
            where = f"{where}.{kind}"
            if self.type not in _CONSTRAINT_TYPES[kind]:
                raise TemplateError(where, f"does not apply to a {self.type} parameter")
            description = item.get("description")
            if description is not None and not isinstance(description, str):
                raise TemplateError(f"{path}[{i}].description", "must be a string")
            parsed.append((kind, self._parse_constraint(kind, arg, where), description))
        return parsed

    def _parse_constraint(self, kind: str, arg, where: str):
        if kind in ("length", "range"):
            if not isinstance(arg, dict) or not arg or set(arg) - {"min", "max"}:
                raise TemplateError(where, "must be a map with min and/or max")
            for key, bound in arg.items():
                if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                    raise TemplateError(f"{where}.{key}", "must be a number")
            return arg.get("min"), arg.get("max")
        if kind == "modulo":
            if not isinstance(arg, dict) or set(arg) != {"step", "offset"}:
                raise TemplateError(where, "must be a map with step and offset")
            step, offset = arg["step"], arg["offset"]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (step, offset)) or step == 0:
                raise TemplateError(where, "step and offset must be integers, step not 0")
            return step, offset
        if kind == "allowed_values":
            if not isinstance(arg, list):
                raise TemplateError(where, "must be a list")
            item_type = "string" if self.type == "comma_delimited_list" else self.type
            try:
                return [_coerce_param(item_type, v) for v in arg]
            except ValueError as exc:
                raise TemplateError(where, str(exc)) from None
        if kind == "allowed_pattern":
            if not isinstance(arg, str):
                raise TemplateError(where, "must be a string")
            try:
                return re.compile(arg)
            except re.error as exc:
                raise TemplateError(where, f"invalid regular expression: {exc}") from None
        return arg  # custom_constraint

    def value(self, raw, path: str):
        """The coerced value of raw, checked against the constraints."""
        try:
            value = _coerce_param(self.type, raw)
        except ValueError as exc:
            raise TemplateError(path, str(exc)) from None
        for kind, arg, description in self.constraints:
            problem = _constraint_problem(kind, arg, value)
            if problem:
                raise TemplateError(path, description or problem)
        return value


def _coerce_param(kind: str, raw):
    if kind == "string":
        return raw if isinstance(raw, str) else str(raw)
    if kind == "number":
        return to_number(raw)
    if kind == "boolean":
        return to_bool(raw)
    if kind == "comma_delimited_list":
        if isinstance(raw, list):
            return [str(item) for item in raw]
        if isinstance(raw, str):
            return raw.split(",") if raw else []
        raise ValueError(f"{raw!r} is not a list or a comma-delimited string")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(raw, (dict, list)):
        raise ValueError("must be a JSON map or list")
    return raw


def _constraint_problem(kind: str, arg, value) -> str | None:
    if kind in ("length", "range"):
        low, high = arg
        measure = len(value) if kind == "length" else value
        what = "length" if kind == "length" else "value"
        if (low is not None and measure < low) or (high is not None and measure > high):
            bounds = " and ".join(
                f"{word} {b}" for word, b in (("at least", low), ("at most", high)) if b is not None)
            return f"{what} {measure} must be {bounds}"
    elif kind == "modulo":
        step, offset = arg
        if value % step != offset:
            return f"value {value} must be {offset} modulo {step}"
    elif kind == "allowed_values":
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item not in arg:
                return f"{item!r} is not one of the allowed values {arg!r}"
    elif kind == "allowed_pattern":
        match = arg.match(value)
        if match is None or match.end() != len(value):
            return f"{value!r} does not match pattern {arg.pattern!r}"
    return None


# ---------------------------------------------------------------- resources

_RESOURCE_KEYS = {"type", "properties", "metadata", "depends_on", "deletion_policy", "update_policy",
                  "description", "condition", "external_id"}
DELETION_POLICIES = ("Delete", "Retain", "Snapshot")


@dataclass
class ResourceDefinition:
    """One resource as the bound template defines it (properties unresolved)."""

    name: str
    type: str
    plugin: type[registry.Resource]
    properties: dict
    metadata: dict
    depends_on: list
    requires: frozenset  # explicit and implicit dependencies, all enabled resources
    deletion_policy: str = "Delete"
    update_policy: dict | None = None
    description: str = ""
    # Member definitions of a composite resource arrive resolved.
    resolved: bool = False


def _parse_resource(name, definition, version: str, names) -> dict:
    path = f"resources.{name}"
    if not isinstance(name, str) or not name or "/" in name:
        raise TemplateError(path, "resource names must be non-empty strings without '/'")
    if not isinstance(definition, dict):
        raise TemplateError(path, "must be a map")
    allowed = _RESOURCE_KEYS if version >= V2016 else _RESOURCE_KEYS - {"condition"}
    _check_keys(definition, allowed, path)
    if "external_id" in definition:
        raise TemplateError(f"{path}.external_id", "adopting existing resources is not supported")
    type_name = definition.get("type")
    if not isinstance(type_name, str):
        raise TemplateError(f"{path}.type", "is required and must be a string")
    if registry.get(type_name) is None:
        raise TemplateError(f"{path}.type", f'unknown resource type "{type_name}"')
    for key in ("properties", "metadata", "update_policy"):
        if not isinstance(definition.get(key) or {}, dict):
            raise TemplateError(f"{path}.{key}", "must be a map")
    if not isinstance(definition.get("description", ""), str):
        raise TemplateError(f"{path}.description", "must be a string")
    depends_on = definition.get("depends_on") or []
    if isinstance(depends_on, str):
        depends_on = [depends_on]
    if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
        raise TemplateError(f"{path}.depends_on", "must be a resource name or a list of them")
    for dep in depends_on:
        if dep not in names:
            raise TemplateError(f"{path}.depends_on", f'"{dep}" is not a resource of this template')
    policy = definition.get("deletion_policy", "Delete")
    accepted = {p: p for p in DELETION_POLICIES}
    if version >= V2016:
        accepted.update({p.lower(): p for p in DELETION_POLICIES})
    if policy not in accepted:
        raise TemplateError(f"{path}.deletion_policy", "must be one of " + ", ".join(accepted))
    return {"type": type_name, "depends_on": depends_on, "deletion_policy": accepted[policy]}


# ------------------------------------------------------------------ template

_TOP_KEYS = ("heat_template_version", "description", "parameter_groups", "parameters", "resources",
             "outputs", "conditions")


class Template:
    """A parsed template, checked as far as possible without parameter values."""

    def __init__(self, source, limits: Limits = DEFAULT_LIMITS):
        raw = load(source, limits.max_template_bytes)
        self.raw = raw
        self.limits = limits
        for key in raw:
            if key not in _TOP_KEYS:
                raise TemplateError(key, "unknown top-level key")
        version = raw.get("heat_template_version")
        if version is None:
            raise TemplateError("heat_template_version", "is required")
        if not isinstance(version, str) or version not in VERSIONS:
            raise TemplateError("heat_template_version", f"unknown version {version!r}")
        self.version = VERSIONS[version]
        self.description = raw.get("description") or "No description"
        if not isinstance(self.description, str):
            raise TemplateError("description", "must be a string")
        if not isinstance(raw.get("parameter_groups") or [], list):
            raise TemplateError("parameter_groups", "must be a list")
        self.parameters = {}
        for name, schema in _map_section(raw, "parameters").items():
            if name in PSEUDO_PARAMETERS:
                raise TemplateError(f"parameters.{name}", "is a reserved name")
            self.parameters[name] = Parameter(name, schema, self.version)
        if "conditions" in raw and self.version < V2016:
            raise TemplateError("conditions", "needs heat_template_version 2016-10-14 or later")
        self.conditions = _map_section(raw, "conditions")
        self.resources = _map_section(raw, "resources")
        self._parsed = {name: _parse_resource(name, definition, self.version, self.resources)
                        for name, definition in self.resources.items()}
        self.outputs = _map_section(raw, "outputs")
        output_keys = {"value", "description"} | ({"condition"} if self.version >= V2016 else set())
        for name, output in self.outputs.items():
            path = f"outputs.{name}"
            if not isinstance(output, dict):
                raise TemplateError(path, "must be a map")
            _check_keys(output, output_keys, path)
            if "value" not in output:
                raise TemplateError(f"{path}.value", "is required")
            if not isinstance(output.get("description", ""), str):
                raise TemplateError(f"{path}.description", "must be a string")

    def parameter_values(self, values: dict | None) -> dict:
        """Coerced values of every declared parameter (user value, else default)."""
        values = values or {}
        if not isinstance(values, dict):
            raise TemplateError("parameters", "must be a map")
        for name in values:
            if name not in self.parameters:
                raise TemplateError(f"parameters.{name}", "is not declared in the template")
        result = {}
        for name, param in self.parameters.items():
            if name in values:
                result[name] = param.value(values[name], f"parameters.{name}")
            elif param.has_default:
                result[name] = param.default
            else:
                raise TemplateError(f"parameters.{name}", "parameter missing: no value and no default")
        return result

    def bind(self, values: dict | None = None, *, stack_id: str = "", stack_name: str = "",
             project_id: str | None = None) -> "BoundTemplate":
        return BoundTemplate(self, values, stack_id, stack_name, project_id)


class _ValidationContext(Context):
    """Resolution before anything exists: references are checked, attributes deferred."""

    def __init__(self, bound: "BoundTemplate"):
        super().__init__(bound.template.version, bound.params, bound.conditions)
        self.bound = bound

    def resource_ref(self, name, path):
        self.bound.check_reference(name, path)
        return name

    def resource_attr(self, name, attr, attr_path, path):
        self.bound.check_attribute(name, attr, path)
        return DEFERRED

    def resource_attrs(self, name, path):
        self.bound.check_reference(name, path)
        return DEFERRED


class RuntimeContext(Context):
    """Resolution against the stack's current resources."""

    def __init__(self, bound: "BoundTemplate", view: registry.AttributeView):
        super().__init__(bound.template.version, bound.params, bound.conditions)
        self.bound = bound
        self.view = view

    def resource_ref(self, name, path):
        self.bound.check_reference(name, path)
        ref = self.view.reference_id(name)
        return name if ref is None else ref

    def resource_attr(self, name, attr, attr_path, path):
        self.bound.check_attribute(name, attr, path)
        return self.view.attribute(name, attr, attr_path)

    def resource_attrs(self, name, path):
        self.bound.check_reference(name, path)
        record = self.view.record(name)
        if record is None or record.attributes is None:
            return None
        return self.bound.resources[name].plugin.all_attributes(self.view, record)


class BoundTemplate:
    """A template with parameter values: fully validated, ready to run."""

    def __init__(self, template: Template, values, stack_id, stack_name, project_id):
        self.template = template
        version = template.version
        self.params = template.parameter_values(values)
        self.params.update({"OS::stack_id": stack_id, "OS::stack_name": stack_name,
                            "OS::project_id": project_id or ""})
        self.conditions = Conditions(template.conditions, version, self.params)
        for name in template.conditions:
            self.conditions.named(name, f"conditions.{name}")
        self.enabled = {}
        for name, definition in template.resources.items():
            condition = definition.get("condition")
            if condition is None or self.conditions.evaluate(condition, f"resources.{name}.condition"):
                self.enabled[name] = definition

        self.resources: dict[str, ResourceDefinition] = {}
        for name, definition in self.enabled.items():
            parsed = template._parsed[name]
            props = definition.get("properties") or {}
            metadata = definition.get("metadata") or {}
            depends_on = [d for d in parsed["depends_on"] if d in self.enabled]
            refs = references([props, metadata], version, self.conditions)
            self.resources[name] = ResourceDefinition(
                name=name, type=parsed["type"], plugin=registry.get(parsed["type"]),
                properties=props, metadata=metadata, depends_on=depends_on,
                requires=frozenset(depends_on) | frozenset(r for r in refs if r in self.enabled),
                deletion_policy=parsed["deletion_policy"], update_policy=definition.get("update_policy") or {},
                description=definition.get("description", ""))

        for name, output in template.outputs.items():
            if output.get("condition") is not None:
                self.conditions.evaluate(output["condition"], f"outputs.{name}.condition")

        self.graph = Graph({name: d.requires for name, d in self.resources.items()})
        cycles = self.graph.cycles()
        if cycles:
            raise TemplateError("resources", "circular dependency between resources: "
                                + "; ".join(", ".join(c) for c in cycles))

        ctx = _ValidationContext(self)
        # Every definition, group members' too, with its properties as validation resolved
        # them (DEFERRED where they depend on attributes): what policy and access checks see.
        self.definitions: list[tuple[str, str, dict]] = []
        total = 0
        for name, defn in self.resources.items():
            path = f"resources.{name}"
            props = {}
            if defn.plugin.properties_schema is not None:  # else never resolved (OS::Heat::None)
                props = ctx.resolve(defn.properties, f"{path}.properties")
                props = defn.plugin.validate_properties(props, f"{path}.properties", partial=True)
                if not isinstance(ctx.resolve(defn.metadata, f"{path}.metadata"), dict):
                    raise TemplateError(f"{path}.metadata", "must resolve to a map")
            total += self._walk(path, defn.type, defn.plugin, props, 0)
        if total > template.limits.max_resources:
            raise TemplateError("resources", f"{total} resources (group members included); "
                                f"a stack may have at most {template.limits.max_resources}")

    def _walk(self, path: str, type_name: str, plugin, props: dict, depth: int) -> int:
        """Record the definition and its members'; how many resources they make."""
        if plugin is None:
            raise TemplateError(f"{path}.type", f'unknown resource type "{type_name}"')
        if depth > self.template.limits.max_depth:
            raise TemplateError(path, f"members nested more than {self.template.limits.max_depth} levels deep")
        self.definitions.append((path, type_name, props))
        total = 0 if plugin.composite else 1  # a group counts as its members (1000 fit, as in Heat)
        for suffix, member_type, member_props, count in plugin.nested(props):
            # a count not known yet is checked when the group makes its members
            each = self._walk(f"{path}.properties{suffix}", member_type, registry.get(member_type),
                              member_props, depth + 1)
            total += each * (1 if count is None else count)
        return total

    # -- reference checks shared by validation and runtime resolution
    def check_reference(self, name: str, path: str) -> None:
        if name not in self.template.resources:
            raise TemplateError(path, f'resource "{name}" is not defined')
        if name not in self.enabled:
            raise TemplateError(path, f'resource "{name}" is disabled by its condition')

    def check_attribute(self, name: str, attr: str, path: str) -> None:
        self.check_reference(name, path)
        defn = self.resources[name]
        if not defn.plugin.has_attribute(attr, defn.properties):
            raise TemplateError(path, f'invalid attribute "{attr}" for resource "{name}" ({defn.type})')

    def resolve(self, defn: ResourceDefinition, view: registry.AttributeView) -> tuple[dict, dict]:
        """Properties (validated, defaults filled in) and metadata, resolved against live data."""
        path = f"resources.{defn.name}"
        if defn.plugin.properties_schema is None:
            return defn.properties, defn.metadata
        if defn.resolved:
            props, metadata = defn.properties, defn.metadata
        else:
            ctx = RuntimeContext(self, view)
            props = ctx.resolve(defn.properties, f"{path}.properties")
            metadata = ctx.resolve(defn.metadata, f"{path}.metadata")
        return defn.plugin.validate_properties(props, f"{path}.properties"), metadata

    def outputs(self, view: registry.AttributeView) -> list[dict]:
        """Outputs as the API shows them; a failing one carries output_error."""
        ctx = RuntimeContext(self, view)
        result = []
        for name, output in self.template.outputs.items():
            item = {"output_key": name, "description": output.get("description", "No description given"),
                    "output_value": None}
            path = f"outputs.{name}"
            try:
                condition = output.get("condition")
                if condition is None or self.conditions.evaluate(condition, f"{path}.condition"):
                    value = ctx.resolve(output["value"], f"{path}.value")
                    item["output_value"] = None if value is ABSENT else value
            except TemplateError as exc:
                item["output_error"] = str(exc)
            result.append(item)
        return result

    def displayed_parameters(self) -> dict:
        """Parameter values for the API, hidden ones masked."""
        shown = dict(self.params)
        for name, param in self.template.parameters.items():
            if param.hidden:
                shown[name] = HIDDEN_VALUE
        return shown


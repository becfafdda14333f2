"""Built-in OS::Heat::* resource types."""

from __future__ import annotations

import secrets
import string
import time
import uuid

from jeroboam.orchestration import resources as registry
from jeroboam.orchestration.errors import TemplateError
from jeroboam.orchestration.functions import has_deferred, walk_path
from jeroboam.orchestration.resources.base import Resource


class NoneResource(Resource):
    """Does nothing; accepts any properties and never resolves them."""

    type_name = "OS::Heat::None"
    tenant_safe = True
    properties_schema = None
    blocking = False
    ignores_changes = True

    def create(self):
        return str(uuid.uuid4())


_CLASSES = {
    "lettersdigits": string.ascii_letters + string.digits,
    "letters": string.ascii_letters,
    "lowercase": string.ascii_lowercase,
    "uppercase": string.ascii_uppercase,
    "digits": string.digits,
    "hexdigits": string.digits + "abcdef",
    "octdigits": string.octdigits,
}
_MIN = {"type": "integer", "minimum": 1, "maximum": 512, "default": 1}


class RandomString(Resource):
    """A random string; its reference id and `value` attribute. Any change replaces it."""

    type_name = "OS::Heat::RandomString"
    tenant_safe = True
    blocking = False
    properties_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "length": {"type": "integer", "minimum": 1, "maximum": 512, "default": 32},
            "character_classes": {
                "type": "array",
                "items": {"type": "object", "additionalProperties": False, "properties": {
                    "class": {"enum": sorted(_CLASSES), "default": "lettersdigits"}, "min": _MIN}},
            },
            "character_sequences": {
                "type": "array",
                "items": {"type": "object", "additionalProperties": False, "required": ["sequence"],
                          "properties": {"sequence": {"type": "string", "minLength": 1}, "min": _MIN}},
            },
            "salt": {"type": "string"},
        },
    }
    attributes_schema = {"value": "The random string."}

    def create(self):
        props = self.properties
        pools = [(_CLASSES[c.get("class", "lettersdigits")], c.get("min", 1))
                 for c in props.get("character_classes") or []]
        pools += [(s["sequence"], s.get("min", 1)) for s in props.get("character_sequences") or []]
        if not pools:
            pools = [(_CLASSES["lettersdigits"], 1)]
        length = props["length"]
        if sum(m for _, m in pools) > length:
            raise ValueError("length is less than the combined minimum counts of its character classes")
        rng = secrets.SystemRandom()
        chars = [rng.choice(pool) for pool, minimum in pools for _ in range(minimum)]
        everything = "".join(pool for pool, _ in pools)
        chars += [rng.choice(everything) for _ in range(length - len(chars))]
        rng.shuffle(chars)
        self.data["value"] = "".join(chars)
        return self.physical_name()

    def get_attributes(self):
        return {"value": self.data["value"]}

    @classmethod
    def reference_id(cls, record):
        return record.data.get("value")


class TestResource(Resource):
    """For tests and benchmarks: waits, fails or forces replacement on demand.

    `wait_secs` / `action_wait_secs` delay completion without blocking anything;
    `fail` fails create and update after the wait (as Heat's does); `fail_delete`
    (ours) fails delete.
    """

    type_name = "OS::Heat::TestResource"
    tenant_safe = True
    blocking = False
    _SECS = {"type": "number", "minimum": 0}
    properties_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "value": {"type": "string", "default": "test_string", "update_allowed": True},
            "update_replace": {"type": "boolean", "default": False, "update_allowed": True},
            "fail": {"type": "boolean", "default": False, "update_allowed": True},
            "fail_delete": {"type": "boolean", "default": False, "update_allowed": True},
            "wait_secs": {**_SECS, "default": 0, "update_allowed": True},
            "action_wait_secs": {
                "type": "object", "additionalProperties": False, "update_allowed": True,
                "properties": {"create": _SECS, "update": _SECS, "delete": _SECS},
            },
        },
    }
    attributes_schema = {"output": "The value property."}

    def _begin(self, action: str) -> None:
        waits = self.properties.get("action_wait_secs") or {}
        wait = waits.get(action, self.properties.get("wait_secs", 0))
        # Wall-clock deadline in `data`: it survives a worker restart.
        self.data["until"] = time.time() + wait

    def _check(self, fail: bool) -> bool:
        remaining = self.data.get("until", 0) - time.time()
        if remaining > 0:
            self.poll_after = remaining
            return False
        if fail:
            raise ValueError(f"Test Resource failed {self.name}")
        return True

    def create(self):
        self._begin("create")
        return self.physical_name()

    def check_create_complete(self):
        return self._check(self.properties.get("fail", False))

    def update(self, old_properties, changed):
        self._begin("update")

    def check_update_complete(self):
        return self._check(self.properties.get("fail", False))

    def delete(self):
        self._begin("delete")

    def check_delete_complete(self):
        return self._check(self.properties.get("fail_delete", False))

    def get_attributes(self):
        return {"output": self.properties.get("value", "test_string")}

    @classmethod
    def needs_replacement(cls, name, old, new, changed):
        return bool(new.get("update_replace")) or super().needs_replacement(name, old, new, changed)


_GROUP_ATTRIBUTES = ("refs", "refs_map", "attributes", "removed_rsrc_list")


class ResourceGroup(Resource):
    """`count` identical members named "0", "1", ...; the engine runs the members.

    Member records are named "<group>/<index>". `data` keeps the member names
    in order ("members") and the skip-list of removed names ("removed").
    """

    type_name = "OS::Heat::ResourceGroup"
    tenant_safe = True
    blocking = False
    composite = True
    properties_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["resource_def"],
        "properties": {
            "count": {"type": "integer", "minimum": 0, "default": 1, "update_allowed": True},
            "resource_def": {
                "type": "object", "additionalProperties": False, "required": ["type"], "update_allowed": True,
                "properties": {"type": {"type": "string"}, "properties": {"type": "object"},
                               "metadata": {"type": "object"}},
            },
            "index_var": {"type": "string", "minLength": 3, "default": "%index%"},
            "removal_policies": {
                "type": "array", "default": [], "update_allowed": True,
                "items": {"type": "object", "additionalProperties": False,
                          "properties": {"resource_list": {"type": "array"}}},
            },
            "removal_policies_mode": {"enum": ["append", "update"], "default": "append", "update_allowed": True},
        },
    }
    attributes_schema = {
        "refs": "Reference ids of the members, in name order.",
        "refs_map": "Member name -> reference id.",
        "attributes": "With a path: member name -> that member attribute.",
        "removed_rsrc_list": "Names removed by removal policies; never reused.",
    }

    def create(self):
        return self.physical_name()

    @classmethod
    def validate_properties(cls, props, path, partial=False):
        props = super().validate_properties(props, path, partial)
        definition = props.get("resource_def")
        if isinstance(definition, dict) and has_deferred(definition.get("type")):
            # the member type decides what the caller may do: known before anything is stored
            raise TemplateError(f"{path}.resource_def.type", "cannot depend on another resource's attributes")
        if not isinstance(definition, dict) or has_deferred(definition):
            return props
        member_type = registry.get(definition["type"])
        if member_type is None:
            raise TemplateError(f"{path}.resource_def.type", f'unknown resource type "{definition["type"]}"')
        if member_type.properties_schema is not None:
            member_props = _substitute(definition.get("properties") or {}, props["index_var"], "0")
            member_type.validate_properties(member_props, f"{path}.resource_def.properties", partial)
        return props

    @classmethod
    def nested(cls, props):
        definition = props.get("resource_def")
        if not isinstance(definition, dict) or not isinstance(definition.get("type"), str):
            return []
        count = props.get("count")
        member_props = _substitute(definition.get("properties") or {}, props["index_var"], "0")
        member = registry.get(definition["type"])
        if member is not None:  # with its defaults (validation found no error in it)
            member_props = member.validate_properties(member_props, "resource_def.properties", partial=True)
        return [(".resource_def", definition["type"], member_props, count if isinstance(count, int) else None)]

    @classmethod
    def has_attribute(cls, attr, properties):
        if attr in _GROUP_ATTRIBUTES or attr.startswith("resource."):
            return True
        member_type = walk_path(properties, ["resource_def", "type"], None)
        if not isinstance(member_type, str):
            return True  # not known before resolution; checked when resolved
        member = registry.get(member_type)
        return member is not None and member.has_attribute(attr, walk_path(
            properties, ["resource_def", "properties"], {}))

    @classmethod
    def members(cls, name, properties, data, updating, ref_names):
        removed = list(data.get("removed", []))
        if updating:
            listed = []
            for policy in properties.get("removal_policies") or []:
                for item in policy.get("resource_list") or []:
                    item = ref_names.get(item, str(item))
                    if item not in listed:
                        listed.append(item)
            if properties.get("removal_policies_mode") == "update":
                removed = listed
            else:
                removed += [n for n in listed if n not in removed]
        names, index = [], 0
        while len(names) < properties["count"]:
            if str(index) not in removed:
                names.append(str(index))
            index += 1
        definition = properties["resource_def"]
        members = {
            n: (definition["type"], _substitute(definition.get("properties") or {}, properties["index_var"], n),
                definition.get("metadata") or {})
            for n in names
        }
        return members, {"members": names, "removed": removed}

    @classmethod
    def attribute(cls, view, record, attr, path):
        names = record.data.get("members", [])
        full = {n: f"{record.name}/{n}" for n in names}
        if attr == "refs":
            value = [view.reference_id(full[n]) for n in names]
        elif attr == "refs_map":
            value = {n: view.reference_id(full[n]) for n in names}
        elif attr == "removed_rsrc_list":
            value = list(record.data.get("removed", []))
        elif attr == "attributes":
            if not path:
                return None
            return {n: view.attribute(full[n], path[0], path[1:]) for n in names}
        elif attr.startswith("resource."):
            index, _, member_attr = attr[len("resource."):].partition(".")
            member = f"{record.name}/{index}"
            if member_attr:
                return view.attribute(member, member_attr, path)
            if path:
                return view.attribute(member, path[0], path[1:])
            return view.reference_id(member)
        else:
            return [view.attribute(full[n], attr, path) for n in names]
        return walk_path(value, path, None)

    @classmethod
    def all_attributes(cls, view, record):
        return {attr: cls.attribute(view, record, attr, []) for attr in ("refs", "refs_map", "removed_rsrc_list")}


def _substitute(value, var: str, index: str):
    """index_var replaced by the member name in every string (not in map keys)."""
    if isinstance(value, str):
        return value.replace(var, index)
    if isinstance(value, dict):
        return {k: _substitute(v, var, index) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, var, index) for v in value]
    return value

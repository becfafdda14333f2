"""Intrinsic functions and conditions of the HOT subset.

A function is a one-key map whose key names a function of the template's
version; any other map is plain data. Functions receive their arguments
unresolved, so that `if` resolves only the branch it takes.
"""

from __future__ import annotations

import functools
import json

from jeroboam.orchestration.errors import TemplateError

V2013 = "2013-05-23"
V2014 = "2014-10-16"
V2015 = "2015-10-15"
V2016 = "2016-10-14"
V2017_02 = "2017-02-24"
V2017_09 = "2017-09-01"
V2018_03 = "2018-03-02"
V2021 = "2021-04-16"


class _Marker:
    def __init__(self, name: str):
        self._name = name

    def __repr__(self) -> str:
        return self._name


# An `if` without a false branch whose condition is false: the enclosing map
# entry or list item disappears.
ABSENT = _Marker("ABSENT")
# An attribute not known before the stack runs; only seen while validating.
DEFERRED = _Marker("DEFERRED")


def has_deferred(value) -> bool:
    if value is DEFERRED:
        return True
    if isinstance(value, dict):
        return any(has_deferred(v) for v in value.values())
    if isinstance(value, list):
        return any(has_deferred(v) for v in value)
    return False


def walk_path(value, keys, missing):
    """Follow map keys / list indexes into value; `missing` when a step does not exist."""
    for key in keys:
        if value is DEFERRED:
            return DEFERRED
        if isinstance(value, dict):
            if not isinstance(key, str) or key not in value:
                return missing
            value = value[key]
        elif isinstance(value, list):
            try:
                index = int(key)
            except (TypeError, ValueError):
                return missing
            if not 0 <= index < len(value):
                return missing
            value = value[index]
        else:
            return missing
    return value


class Context:
    """Resolution state: version, parameter values, conditions, resource lookups.

    Subclasses answer the resource lookups (validation placeholders or live data).
    """

    forbidden: frozenset[str] = frozenset()

    def __init__(self, version: str, params: dict, conditions: "Conditions | None"):
        self.version = version
        self.params = params
        self.conditions = conditions
        self.functions = functions_for(version)

    def resolve(self, value, path: str):
        if isinstance(value, dict):
            if len(value) == 1:
                ((key, arg),) = value.items()
                fn = self.functions.get(key)
                if fn is not None:
                    return fn(self, arg, f"{path}.{key}")
                if key in self.forbidden:
                    raise TemplateError(f"{path}.{key}", f"{key} is not allowed here")
            out = {}
            for key, item in value.items():
                item = self.resolve(item, f"{path}.{key}")
                if item is not ABSENT:
                    out[key] = item
            return out
        if isinstance(value, list):
            out = []
            for i, item in enumerate(value):
                item = self.resolve(item, f"{path}[{i}]")
                if item is not ABSENT:
                    out.append(item)
            return out
        return value

    def resource_ref(self, name: str, path: str):
        raise TemplateError(path, "resources cannot be referenced here")

    def resource_attr(self, name: str, attr: str, attr_path: list, path: str):
        raise TemplateError(path, "resources cannot be referenced here")

    def resource_attrs(self, name: str, path: str):
        raise TemplateError(path, "resources cannot be referenced here")


# ---------------------------------------------------------------- functions

def _get_param(ctx: Context, args, path):
    if isinstance(args, list) and args:
        args = ctx.resolve(args, path)
        name, keys = args[0], args[1:]
    else:
        name, keys = args, []
    if not isinstance(name, str):
        raise TemplateError(path, "argument must be a parameter name or [name, key, ...]")
    if name not in ctx.params:
        raise TemplateError(path, f'parameter "{name}" is not declared')
    return walk_path(ctx.params[name], keys, "")


def _get_resource(ctx: Context, args, path):
    if not isinstance(args, str):
        raise TemplateError(path, "argument must be a resource name")
    return ctx.resource_ref(args, path)


def _get_attr(ctx: Context, args, path):
    if not isinstance(args, list) or not args or not isinstance(args[0], str):
        raise TemplateError(path, "arguments must be [resource name, attribute, ...]")
    name = args[0]
    if len(args) == 1:
        if ctx.version < V2015:
            raise TemplateError(path, "an attribute name is required")
        return ctx.resource_attrs(name, path)
    if len(args) > 2 and ctx.version < V2014:
        raise TemplateError(path, "takes exactly a resource name and an attribute")
    rest = [ctx.resolve(item, f"{path}[{i}]") for i, item in enumerate(args[1:], 1)]
    if has_deferred(rest):
        return DEFERRED
    attr, attr_path = rest[0], rest[1:]
    if not isinstance(attr, str):
        raise TemplateError(f"{path}[1]", "attribute name must be a string")
    for i, key in enumerate(attr_path, 2):
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            raise TemplateError(f"{path}[{i}]", "path items must be strings or integers")
    return ctx.resource_attr(name, attr, attr_path, path)


def _as_text(ctx: Context, value, path: str, allow_scalars: bool) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        if ctx.version < V2015:
            raise TemplateError(path, "maps and lists cannot be inserted into a string")
        return json.dumps(value, sort_keys=True)
    if allow_scalars and isinstance(value, (int, float)):
        return str(value)
    raise TemplateError(path, f"{type(value).__name__} values cannot be joined; only strings, maps and lists")


def _replace(text: str, items: list) -> str:
    # Split on the longest key, recurse into the pieces with the remaining keys:
    # text inserted for one key is never scanned for another.
    if not items:
        return text
    (key, value), rest = items[0], items[1:]
    return value.join(_replace(part, rest) for part in text.split(key))


def _str_replace(ctx: Context, args, path, strictness: int = 0):
    if not isinstance(args, dict) or set(args) != {"template", "params"}:
        raise TemplateError(path, 'arguments must be a map with "template" and "params"')
    template = ctx.resolve(args["template"], f"{path}.template")
    params = ctx.resolve(args["params"], f"{path}.params")
    if has_deferred(template) or has_deferred(params):
        return DEFERRED
    if not isinstance(template, str):
        raise TemplateError(f"{path}.template", "must be a string")
    if not isinstance(params, dict):
        raise TemplateError(f"{path}.params", "must be a map")
    items = []
    for key, value in params.items():
        where = f"{path}.params.{key}"
        if not isinstance(key, str) or not key:
            raise TemplateError(where, "keys must be non-empty strings")
        if strictness >= 1 and key not in template:
            raise TemplateError(where, f'"{key}" does not occur in the template')
        if strictness >= 2 and value in (None, ""):
            raise TemplateError(where, "value is empty")
        items.append((key, _as_text(ctx, value, where, allow_scalars=True)))
    items.sort(key=lambda kv: (-len(kv[0]), kv[0]))
    return _replace(template, items)


def _list_join(ctx: Context, args, path):
    multi = ctx.version >= V2015
    if not isinstance(args, list) or len(args) < 2 or (not multi and len(args) != 2):
        shape = "[delimiter, list, ...]" if multi else "[delimiter, list]"
        raise TemplateError(path, f"arguments must be {shape}")
    args = [ctx.resolve(item, f"{path}[{i}]") for i, item in enumerate(args)]
    if has_deferred(args):
        return DEFERRED
    delim = args[0]
    if not isinstance(delim, str):
        raise TemplateError(f"{path}[0]", "delimiter must be a string")
    items = []
    for i, seq in enumerate(args[1:], 1):
        if seq is None:
            continue
        if not isinstance(seq, list):
            raise TemplateError(f"{path}[{i}]", "must be a list")
        items.extend(_as_text(ctx, item, f"{path}[{i}][{j}]", allow_scalars=False) for j, item in enumerate(seq))
    return delim.join(items)


def _if(ctx: Context, args, path):
    if not isinstance(args, list) or len(args) not in ((2, 3) if ctx.version >= V2021 else (3,)):
        raise TemplateError(path, "arguments must be [condition, value if true, value if false]")
    if ctx.conditions.evaluate(args[0], f"{path}[0]"):
        return ctx.resolve(args[1], f"{path}[1]")
    if len(args) == 2:
        return ABSENT
    return ctx.resolve(args[2], f"{path}[2]")


def _contains(ctx: Context, args, path):
    if not isinstance(args, list) or len(args) != 2:
        raise TemplateError(path, "arguments must be [value, list]")
    value, seq = (ctx.resolve(item, f"{path}[{i}]") for i, item in enumerate(args))
    if has_deferred(value) or has_deferred(seq):
        return DEFERRED
    if not isinstance(seq, list):
        raise TemplateError(f"{path}[1]", "must be a list")
    return value in seq


_FUNCTIONS = (
    ("get_param", V2013, _get_param),
    ("get_resource", V2013, _get_resource),
    ("get_attr", V2013, _get_attr),
    ("str_replace", V2013, _str_replace),
    ("list_join", V2013, _list_join),
    ("if", V2016, _if),
    ("str_replace_strict", V2017_02, functools.partial(_str_replace, strictness=1)),
    ("str_replace_vstrict", V2017_09, functools.partial(_str_replace, strictness=2)),
    ("contains", V2017_09, _contains),
)


@functools.cache
def functions_for(version: str) -> dict:
    return {name: fn for name, since, fn in _FUNCTIONS if version >= since}


# --------------------------------------------------------------- conditions

class _ConditionContext(Context):
    """Inside conditions only get_param resolves; other functions are refused."""

    def __init__(self, version, params, conditions):
        super().__init__(version, params, conditions)
        self.forbidden = frozenset(self.functions) - {"get_param"}
        self.functions = {"get_param": _get_param}


class Conditions:
    """The `conditions` section, each named condition evaluated at most once."""

    def __init__(self, definitions: dict, version: str, params: dict):
        self._definitions = definitions
        self._version = version
        self._values: dict[str, bool] = {}
        self._evaluating: set[str] = set()
        self._ctx = _ConditionContext(version, params, self)
        self._functions = {
            "equals": self._equals, "not": self._not, "and": self._and, "or": self._or,
        }
        if version >= V2017_09:
            self._functions["contains"] = self._contains

    def named(self, name: str, path: str) -> bool:
        if name in self._values:
            return self._values[name]
        if name not in self._definitions:
            raise TemplateError(path, f'condition "{name}" is not defined')
        if name in self._evaluating:
            raise TemplateError(f"conditions.{name}", "circular definition")
        self._evaluating.add(name)
        try:
            definition = self._definitions[name]
            where = f"conditions.{name}"
            if isinstance(definition, str):
                raise TemplateError(where, "a condition must be a boolean or a condition function")
            value = self.evaluate(definition, where)
        finally:
            self._evaluating.discard(name)
        self._values[name] = value
        return value

    def evaluate(self, expr, path: str) -> bool:
        """A boolean, a condition name or a condition function."""
        if isinstance(expr, bool):
            return expr
        if isinstance(expr, str):
            return self.named(expr, path)
        if isinstance(expr, dict) and len(expr) == 1:
            ((key, args),) = expr.items()
            fn = self._functions.get(key)
            if fn is not None:
                return fn(args, f"{path}.{key}")
        raise TemplateError(path, "invalid condition: expected a boolean, a condition name or one of "
                            + ", ".join(sorted(self._functions)))

    def _args(self, args, path, count=None, at_least=None) -> list:
        if not isinstance(args, list) or (count is not None and len(args) != count) or (
                at_least is not None and len(args) < at_least):
            need = f"exactly {count}" if count is not None else f"at least {at_least}"
            raise TemplateError(path, f"arguments must be a list of {need} items")
        return args

    def _equals(self, args, path):
        a, b = self._args(args, path, count=2)
        return self._ctx.resolve(a, f"{path}[0]") == self._ctx.resolve(b, f"{path}[1]")

    def _not(self, args, path):
        return not self.evaluate(args, path)

    def _and(self, args, path):
        args = self._args(args, path, at_least=2)
        return all([self.evaluate(c, f"{path}[{i}]") for i, c in enumerate(args)])

    def _or(self, args, path):
        args = self._args(args, path, at_least=2)
        return any([self.evaluate(c, f"{path}[{i}]") for i, c in enumerate(args)])

    def _contains(self, args, path):
        value, seq = self._args(args, path, count=2)
        value = self._ctx.resolve(value, f"{path}[0]")
        seq = self._ctx.resolve(seq, f"{path}[1]")
        if not isinstance(seq, list):
            raise TemplateError(f"{path}[1]", "must be a list")
        return value in seq


def references(value, version: str, conditions: Conditions) -> set[str]:
    """Names of resources that value refers to through get_resource / get_attr.

    Untaken `if` branches are skipped; an `if` whose condition cannot be
    evaluated counts both branches (the error surfaces during validation).
    """
    found: set[str] = set()
    has_if = version >= V2016

    def visit(v):
        if isinstance(v, dict):
            if len(v) == 1:
                ((key, arg),) = v.items()
                if key == "get_resource" and isinstance(arg, str):
                    found.add(arg)
                    return
                if key == "get_attr" and isinstance(arg, list) and arg and isinstance(arg[0], str):
                    found.add(arg[0])
                    visit(arg[1:])
                    return
                if key == "if" and has_if and isinstance(arg, list) and len(arg) in (2, 3):
                    try:
                        taken = conditions.evaluate(arg[0], "")
                    except TemplateError:
                        visit(arg[1:])
                        return
                    if taken:
                        visit(arg[1])
                    elif len(arg) == 3:
                        visit(arg[2])
                    return
            for item in v.values():
                visit(item)
        elif isinstance(v, list):
            for item in v:
                visit(item)

    visit(value)
    return found

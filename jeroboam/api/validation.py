"""Checking bodies and queries against JSON Schemas, with Magnum's messages for what fails.

Magnum's leniencies are applied before the schema runs: integers sent as
strings ("3") and booleans sent as strings ("True", "no") are converted, label
values become strings, and nulls of optional fields count as unset. A schema
may carry `x-error: {keyword: message}` to word a failure the way Magnum does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson
from jsonschema import Draft202012Validator

from jeroboam.api.errors import BadRequest, invalid_input

TRUE_STRINGS = {"1", "t", "true", "on", "y", "yes"}
FALSE_STRINGS = {"0", "f", "false", "off", "n", "no"}
INT_RE = re.compile(r"^[+-]?\d+$")


def _types(schema: dict) -> set[str]:
    declared = schema.get("type", ())
    return {declared} if isinstance(declared, str) else set(declared)


def coerce(schema: dict, value):
    """Magnum's lenient conversions for one value, driven by the field's schema."""
    if isinstance(value, str):
        types = _types(schema)
        if "integer" in types and INT_RE.match(value.strip()):
            return int(value)
        if "boolean" in types and value.strip().lower() in TRUE_STRINGS | FALSE_STRINGS:
            return value.strip().lower() in TRUE_STRINGS
    if isinstance(value, dict) and schema.get("x-stringify-values"):
        return {k: _stringify(v) for k, v in value.items()}
    return value


def _stringify(value):
    return str(value) if isinstance(value, (bool, int, float)) else value


def _message(error) -> str:
    custom = error.schema.get("x-error", {}).get(error.validator)
    if custom:
        return custom.format(value=error.instance)
    v = error.validator_value
    if error.validator == "enum":
        return "Value should be one of: " + ", ".join(str(x) for x in v if x is not None)
    if error.validator == "type":
        expected = v if isinstance(v, str) else "/".join(t for t in v if t != "null")
        return f"Wrong type. Expected '{expected}', got '{type(error.instance).__name__}'"
    if error.validator == "minimum":
        return f"Value should be greater or equal to {v}"
    if error.validator == "maximum":
        return f"Value should be lower or equal to {v}"
    if error.validator == "minLength":
        return f"Value should have a minimum character requirement of {v}"
    if error.validator == "maxLength":
        return f"Value should have a maximum character requirement of {v}"
    if error.validator == "pattern":
        return f"Value should match the pattern {v}"
    if error.validator == "additionalProperties":
        return error.message
    return error.message


class _Compiled:
    """The schema's validator, built on first use."""

    schema: dict
    _validator: Draft202012Validator | None = None

    @property
    def validator(self) -> Draft202012Validator:
        if self._validator is None:
            self._validator = Draft202012Validator(self.schema)
        return self._validator


@dataclass
class Body(_Compiled):
    """A request body: the schema, Magnum's name for it, and fields it reports as read-only."""

    argument: str
    schema: dict
    read_only: frozenset[str] = frozenset()
    # A PATCHed document: Magnum builds its object from the patched values without parsing
    # them again, so an integer field holding a string is refused, not converted.
    patched: bool = False

    def check(self, data):
        """Coerce and validate `data`; returns the cleaned value or raises BadRequest."""
        if self.schema.get("type") == "object":
            if not isinstance(data, dict):
                raise invalid_input(self.argument, data, "Value not a valid dict")
            properties = self.schema.get("properties", {})
            for name, value in data.items():
                if name in self.read_only:
                    raise invalid_input(name, value, "Cannot set read only field.")
                if name not in properties and not self.schema.get("additionalProperties", False):
                    raise BadRequest(f"Unknown attribute for argument {self.argument}: {name}")
                if self.patched and isinstance(value, str) and "integer" in _types(properties.get(name, {})):
                    # What Magnum's integer type says when it compares such a string with its minimum.
                    raise invalid_input(name, value, "'<' not supported between instances of 'str' and 'int'")
            data = {k: coerce(properties[k], v) if k in properties else v for k, v in data.items()}
            # A null optional field is simply unset; a null required one is missing.
            for name in self.schema.get("required", ()):
                if name in data and data[name] is None:
                    raise invalid_input(name, None, "Mandatory field missing.")
            data = {k: v for k, v in data.items() if v is not None}
        elif self.schema.get("type") == "array" and not isinstance(data, list):
            raise invalid_input(self.argument, data, "Value not a valid list")
        error = next(iter(sorted(self.validator.iter_errors(data), key=lambda e: list(e.path))), None)
        if error is not None:
            raise _as_bad_request(self.argument, data, error)
        return data


def _as_bad_request(argument: str, data, error) -> BadRequest:
    if error.validator == "required" and not error.path:
        missing = next(n for n in error.validator_value if n not in error.instance)
        return invalid_input(missing, None, "Mandatory field missing.")
    path = list(error.path)
    if not path:
        return invalid_input(argument, data, _message(error))
    top = path[0]
    if isinstance(data, list) and isinstance(top, int):
        field = "/".join(str(p) for p in path)
        return invalid_input(field, error.instance, _message(error))
    value = data[top] if isinstance(data, dict) else error.instance
    return invalid_input(str(top), value, _message(error))


@dataclass
class Query(_Compiled):
    """Query parameters: all strings on the wire; unknown names are refused as Magnum does."""

    schema: dict

    def check(self, params) -> dict:
        data = dict(params)
        properties = self.schema.get("properties", {})
        for name in data:
            if name not in properties:
                raise BadRequest(f'Unknown argument: "{name}"')
        error = next(iter(self.validator.iter_errors(data)), None)
        if error is not None:
            name = str(error.path[0]) if error.path else "query"
            raise invalid_input(name, error.instance, _message(error))
        return data


def parse_json(raw: bytes):
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BadRequest("Request is not in valid JSON format") from None

"""Resource plugins: the registry of resource types.

Types come from the entry-point group `jeroboam.orchestration.resources`
(`name = module:Class`, the class carrying its `type_name`), with the built-in
table as a fallback so a source checkout works before it is reinstalled.
"""

from __future__ import annotations

import importlib
import logging
import threading
from importlib.metadata import entry_points

from jeroboam.orchestration.resources.base import AttributeView, Resource, StackInfo

__all__ = ["AttributeView", "Resource", "StackInfo", "get", "register", "types"]

ENTRY_POINT_GROUP = "jeroboam.orchestration.resources"

_BUILTIN = {
    "OS::Heat::None": "jeroboam.orchestration.resources.heat:NoneResource",
    "OS::Heat::RandomString": "jeroboam.orchestration.resources.heat:RandomString",
    "OS::Heat::TestResource": "jeroboam.orchestration.resources.heat:TestResource",
    "OS::Heat::ResourceGroup": "jeroboam.orchestration.resources.heat:ResourceGroup",
    "DockerInc::Docker::Container": "jeroboam.orchestration.resources.docker:DockerContainer",
}

log = logging.getLogger(__name__)
_lock = threading.Lock()
_sources: dict[str, object] | None = None  # type name -> "module:Class" or an EntryPoint
_loaded: dict[str, type[Resource] | None] = {}


def _sources_table() -> dict[str, object]:
    # Entry points are named after the type they provide; classes load on first
    # use, so the docker SDK is imported only by stacks that use containers.
    global _sources
    if _sources is None:
        with _lock:
            if _sources is None:
                table: dict[str, object] = dict(_BUILTIN)
                table.update({ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)})
                _sources = table
    return _sources


def _load(source) -> type[Resource] | None:
    try:
        if isinstance(source, str):
            module, _, attr = source.partition(":")
            return getattr(importlib.import_module(module), attr)
        return source.load()
    except Exception:  # a broken third-party plugin must not take the engine down
        log.exception("cannot load resource plugin %s", source)
        return None


def get(type_name: str) -> type[Resource] | None:
    if type_name not in _loaded:
        source = _sources_table().get(type_name)
        _loaded[type_name] = None if source is None else _load(source)
    return _loaded[type_name]


def register(cls: type[Resource]) -> type[Resource]:
    """Add a plugin class (usable as a decorator), e.g. for tests."""
    _sources_table()[cls.type_name] = cls
    _loaded[cls.type_name] = cls
    return cls


def types() -> list[str]:
    return sorted(_sources_table())

"""Infrastructure providers: networks and nodes, no COE knowledge.

Drivers use only what this package exports: the provider of a template's ``server_type``
(:func:`provider_for`, from the ``jeroboam.infra.providers`` entry points) and the
provider-neutral :class:`Node` it hands out.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

from .base import InfraError, InfraTimeout, Mount, Node, ProcessSpec, Provider, wait_until

GROUP = "jeroboam.infra.providers"

__all__ = ["GROUP", "InfraError", "InfraTimeout", "Mount", "Node", "ProcessSpec", "Provider",
           "ProviderNotFound", "provider_class", "provider_for", "server_types", "wait_until"]


class ProviderNotFound(InfraError):
    pass


@functools.lru_cache(maxsize=None)
def server_types() -> tuple[str, ...]:
    """The server_types the installed providers serve."""
    return tuple(sorted({ep.name for ep in entry_points(group=GROUP)}))


@functools.lru_cache(maxsize=None)
def provider_class(server_type: str) -> type[Provider]:
    found = [ep for ep in entry_points(group=GROUP) if ep.name == server_type]
    if not found:
        raise ProviderNotFound("choose a provider", f"no infrastructure provider serves "
                               f"server_type {server_type!r}")
    return found[0].load()


def provider_for(server_type: str, settings) -> Provider:
    """The provider serving ``server_type``, set up from the service settings."""
    return provider_class(server_type).from_settings(settings)

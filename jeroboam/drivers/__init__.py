"""COE drivers: the interface, and loading them from the `jeroboam.drivers` entry points.

A driver is chosen the way Magnum chooses one: by explicit name (the template's
`driver`), else by the (server_type, os_distro, coe) tuple it declares in
`provides`. Entry points are read in name order and a later one wins a tuple.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable

LOG = logging.getLogger("jeroboam.drivers")
GROUP = "jeroboam.drivers"


class Driver:
    """Base class. Each method runs inside a task, with a ClusterContext (see conductor).

    Methods do their work through `ctx.run_step(name, fn)` so that a task taken
    over by another worker resumes at the step that was interrupted; every step
    must therefore be idempotent. Nodes come from the provider of the template's
    server_type (`jeroboam.infra.provider_for`), never from a provider module.
    """

    name = "base"
    provides: list[dict] = []

    def create_cluster(self, ctx) -> None:
        raise NotImplementedError

    def delete_cluster(self, ctx) -> None:
        raise NotImplementedError

    def update_cluster(self, ctx) -> None:
        """Bring the nodes in line with the nodegroups' node_count."""
        raise NotImplementedError

    def resize_cluster(self, ctx, nodegroup: str, node_count: int, nodes_to_remove: list[str]) -> None:
        raise NotImplementedError

    def upgrade_cluster(self, ctx, template_uuid: str, max_batch_size: int, nodegroup: str) -> None:
        raise NotImplementedError

    def create_nodegroup(self, ctx, nodegroup: str) -> None:
        raise NotImplementedError

    def update_nodegroup(self, ctx, nodegroup: str) -> None:
        raise NotImplementedError

    def delete_nodegroup(self, ctx, nodegroup: str) -> None:
        raise NotImplementedError

    def rotate_ca_certificate(self, ctx) -> None:
        """Re-issue what the new CA signs (the CA itself is already replaced)."""
        raise NotImplementedError

    def periodic_tasks(self, settings) -> list[tuple[float, Callable]]:
        """(interval seconds, fn(session_factory)) pairs every worker runs in the background,
        e.g. a health monitor."""
        return []

    def on_worker_start(self, session_factory, settings) -> None:
        """Reconcile the host with the database when a worker starts (adopt, clean up)."""

    def validate_master_size(self, master_count: int) -> str | None:
        """An error message when the driver cannot run this many masters."""
        if master_count < 1 or master_count % 2 == 0:
            return f"Master node count {master_count} is not supported: it must be odd and at least 1."
        return None


class DriverNotFound(Exception):
    pass


@dataclass(frozen=True)
class CoeDrivers:
    """The network and volume drivers a template of one COE may name, as Magnum's API checks them."""

    network: tuple[str, ...]
    default_network: str
    volume: tuple[str, ...]
    # Network drivers Magnum's default configuration allows; None: all the supported ones.
    allowed_network: tuple[str, ...] | None = None

    def check(self, network_driver: str | None, volume_driver: str | None) -> str:
        """The template's network driver (the COE's default when it names none), or ValueError
        worded as Magnum words it."""
        network_driver = network_driver or self.default_network
        if network_driver not in self.network:
            raise ValueError(f"Network driver type {network_driver} is not supported, expecting a "
                             f"{'/'.join(self.network + ('unspecified',))} network driver.")
        if self.allowed_network is not None and network_driver not in self.allowed_network:
            raise ValueError(f"Network driver type {network_driver} is not allowed, expecting a "
                             f"{'/'.join(self.allowed_network + ('unspecified',))} network driver. ")
        if volume_driver and volume_driver not in self.volume:
            raise ValueError(f"Volume driver type {volume_driver} is not supported, expecting a "
                             f"{'/'.join(self.volume + ('unspecified',))} volume driver.")
        return network_driver


_SWARM = CoeDrivers(network=("docker", "flannel"), default_network="docker", volume=("rexray",))
# Per COE, from Magnum's API validators (magnum/api/validation.py); a COE not listed is not checked.
COE_DRIVERS = {
    "kubernetes": CoeDrivers(network=("flannel", "calico", "cilium"), default_network="flannel",
                             volume=("cinder",), allowed_network=("flannel", "calico")),
    "swarm": _SWARM,
    "swarm-mode": _SWARM,
    "mesos": CoeDrivers(network=("docker",), default_network="docker", volume=("rexray",)),
}


@functools.lru_cache(maxsize=None)
def _load(disabled: frozenset[str]) -> dict[str, Driver]:
    loaded: dict[str, Driver] = {}
    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        if ep.name in disabled:
            continue
        try:
            driver = ep.load()()
        except Exception:
            LOG.exception("cluster driver %s failed to load; skipped", ep.name)
            continue
        driver.name = ep.name
        loaded[ep.name] = driver
    return loaded


class Registry:
    def __init__(self, disabled=()):
        self.drivers = _load(frozenset(disabled))

    def by_name(self, name: str) -> Driver:
        try:
            return self.drivers[name]
        except KeyError:
            raise DriverNotFound(f"Cluster driver ({name}) not supported.") from None

    def for_tuple(self, server_type: str, os_distro: str, coe: str) -> Driver:
        chosen = None
        for driver in self.drivers.values():
            if {"server_type": server_type, "os": os_distro, "coe": coe} in driver.provides:
                chosen = driver
        if chosen is None:
            raise DriverNotFound(
                f"Cluster type ({server_type}, {os_distro}, {coe}) is not supported by any loaded "
                f"cluster driver. Loaded drivers support: {self.describe()}.")
        return chosen

    def describe(self) -> str:
        tuples = [f"({p['server_type']}, {p['os']}, {p['coe']})"
                  for d in self.drivers.values() for p in d.provides]
        return ", ".join(tuples) if tuples else "none (no cluster drivers are loaded)"

"""Orchestration resources of the local provider: ``Jeroboam::Local::Network`` and
``Jeroboam::Local::Node``.

Both act through the process's :class:`LocalProvider`, set up from the service settings by
:func:`configure` (the swarm driver calls it when a worker starts): where the provider keeps
its state is an operator's choice, never a template's. Physical ids are the provider's names,
derived from ``network_id`` / ``node_id`` within the owning stack's id (:func:`scoped`), so a
create retried after a crash finds what the first attempt made, and no stack names, adopts or
deletes another's network or node. Addresses come from the provider's pools only.

Both types are for cluster drivers and admins (not ``tenant_safe``): a node is a root dockerd
on the host.
"""

from __future__ import annotations

import hashlib
import threading
import time
from contextlib import closing
from pathlib import Path

from jeroboam.orchestration.resources.base import Resource
from jeroboam.pki import KeyPair

from .host import InfraError, InfraTimeout
from .images import ImageTarball, ensure_images
from .provider import NETWORK_TYPE, NODE_TYPE, LocalProvider, NodeSpec, scoped

# Bounds of a node's start (or restart) and delete, counted across retries (wall clock, kept
# in the resource's data): the provider's checks alone would wait forever on a hung dockerd.
START_TIMEOUT = 90
DELETE_TIMEOUT = 60
POLL = 0.05  # seconds between checks; a node starts in about 0.3 s

class ProcessProviders:
    """A provider's one instance per state directory in this process, and the one its
    orchestration resources act through (the one :meth:`configure` gave last). ``make(state,
    settings)`` builds one on ``<state_path>/<subdir>``."""

    def __init__(self, subdir: str, make):
        self.subdir, self.make = subdir, make
        self._lock = threading.Lock()
        self._providers: dict = {}
        self._current = None

    def configure(self, settings):
        """The provider of these settings (one per process), also the one the resources use."""
        state = str(Path(settings.get("DEFAULT", "state_path")) / self.subdir)
        with self._lock:
            if state not in self._providers:
                try:
                    self._providers[state] = self.make(state, settings)
                except ValueError as exc:  # e.g. a state_path too long for unix socket paths
                    raise InfraError(f"set up the {self.subdir} provider", str(exc)) from None
            self._current = self._providers[state]
            return self._current

    def current(self):
        if self._current is None:
            raise InfraError(f"{self.subdir} provider", "not set up in this process (a driver "
                             "sets it up when a worker starts; is it disabled?)")
        return self._current


def prefix_for(state: str) -> str:
    """Name prefix of a state directory: installations sharing a host (a service, its tests,
    a benchmark) each own their names, and one's clean-up never touches another's nodes."""
    digest = int(hashlib.sha256(str(Path(state).resolve()).encode()).hexdigest(), 16)
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "j" + "".join(alphabet[(digest >> (6 * i)) % 36] for i in range(3))


_local = ProcessProviders("local", lambda state, _: LocalProvider(state, prefix=prefix_for(state)))
configure = _local.configure
current = _local.current


def image_path(provider: LocalProvider, path: str) -> str:
    """A tarball's path: relative to the provider's images directory, and never outside it
    (templates are users' input; the provider reads as root)."""
    images = (provider.state_dir / "images").resolve()
    resolved = (images / path).resolve()
    if not resolved.is_relative_to(images):
        raise InfraError("import images", f"{path}: image tarballs must be in {images}")
    return str(resolved)


def _deadline(data: dict, key: str, timeout: float, step: str, what: str) -> None:
    started = data.setdefault(key, time.time())
    if time.time() - started > timeout:
        raise InfraTimeout(step, f"{what}: not done after {timeout:g} s")


class _LocalResource(Resource):
    # the provider acting for these resources, and how its state directory is shown
    # (subclasses for other providers override both)
    provider = staticmethod(current)
    state_label = "<state_path>/local"

    def failure_text(self, exc):
        # where the provider keeps its state is the operator's business, not the stack's project's
        return str(exc).replace(str(self.provider().state_dir), self.state_label)


class Network(_LocalResource):
    """A bridge with its own /24 (the host holds .1); nodes attach to it."""

    type_name = NETWORK_TYPE
    properties_schema = {
        "type": "object", "additionalProperties": False, "required": ["network_id"],
        "properties": {
            "network_id": {"type": "string", "minLength": 1, "description": "unique within the stack"},
        },
    }
    attributes_schema = {
        "name": "The bridge's name.", "network_id": "The network id.",
        "subnet": "The network's subnet.", "gateway": "The host's address on it.",
    }

    def _id(self) -> str:
        return scoped(self.stack.id, self.properties["network_id"])

    def create(self):
        return self.provider().create_network(self._id()).name

    def delete(self):
        provider = self.provider()
        if provider.get_network(self._id()) is not None:
            provider.delete_network(self._id())

    def check_delete_complete(self):
        return self.provider().network_deleted(self._id())

    def get_attributes(self):
        info = self.provider().get_network(self._id())
        # network_id as the template knows it: nodes of the same stack name it so
        return {"name": info.name, "network_id": self.properties["network_id"], "subnet": info.subnet,
                "gateway": info.gateway}


class Node(_LocalResource):
    """A node: network namespace plus its own dockerd serving TLS with a certificate from
    ``ca_cert``/``ca_key``. A CA change restarts dockerd with a certificate from the new CA;
    an ``images`` change imports the new tarballs; other changes replace the node."""

    type_name = NODE_TYPE
    start_timeout = START_TIMEOUT
    delete_timeout = DELETE_TIMEOUT
    poll = POLL
    properties_schema = {
        "type": "object", "additionalProperties": False,
        "required": ["node_id", "network", "ca_cert", "ca_key"],
        "properties": {
            "node_id": {"type": "string", "minLength": 1, "description": "unique within the stack"},
            "network": {"type": "string", "minLength": 1, "description": "a network_id of the stack"},
            "hostname": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9-]{0,62}$"},
            "ca_cert": {"type": "string", "update_allowed": True},
            "ca_key": {"type": "string", "update_allowed": True},
            "images": {
                "type": "array", "default": [], "update_allowed": True,
                "items": {"type": "object", "additionalProperties": False, "required": ["path"],
                          "properties": {"path": {"type": "string"}, "name": {"type": "string"}}},
            },
        },
    }
    attributes_schema = {
        "name": "The node's name (netns, cgroup parent).", "hostname": "The node's hostname.",
        "address": "The node's IP address.", "api_address": "tcp://address:2376 (TLS).",
        "mac": "The MAC address of its eth0.",
    }

    def _name(self) -> str:
        return self.physical_id or \
            self.provider().node_name(scoped(self.stack.id, self.properties["node_id"]))

    def _ca(self) -> KeyPair:
        return KeyPair(self.properties["ca_cert"], self.properties["ca_key"])

    def _images(self) -> tuple[ImageTarball, ...]:
        return tuple(ImageTarball(image_path(self.provider(), i["path"]), i.get("name"))
                     for i in self.properties["images"])

    def create(self):
        props = self.properties
        self.data.pop("started", None)
        spec = NodeSpec(scoped(self.stack.id, props["node_id"]), scoped(self.stack.id, props["network"]),
                        props.get("hostname"), self._images())
        return self.provider().create_node(spec, self._ca()).name

    def _started(self, key: str) -> bool:
        if self.provider().check_node_create(self._name()):
            self.data.pop(key, None)
            return True
        _deadline(self.data, key, self.start_timeout, "start node", self._name())
        self.poll_after = self.poll
        return False

    def check_create_complete(self):
        return self._started("started")

    def update(self, old_properties, changed):
        self.data.pop("restarted", None)
        if {"ca_cert", "ca_key"} & changed:
            self.provider().restart_with_ca(self._name(), self._ca())

    def check_update_complete(self):
        if not self._started("restarted"):
            return False
        with closing(self.provider().get_node(self._name()).client()) as client:
            ensure_images(client, list(self._images()))
        return True

    def delete(self):
        self.data.pop("deleting", None)
        self.provider().delete_node(self._name())

    def check_delete_complete(self):
        if self.provider().check_node_delete(self._name()):
            return True
        _deadline(self.data, "deleting", self.delete_timeout, "delete node", self._name())
        self.poll_after = self.poll
        return False

    def get_attributes(self):
        info = self.provider().get_node(self._name())
        return info.attributes() if info else {}

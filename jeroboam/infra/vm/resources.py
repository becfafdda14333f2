"""Orchestration resources of the vm provider: ``Jeroboam::VM::Network`` and
``Jeroboam::VM::Node``, the local provider's resources acting through the process's
:class:`VmProvider` (same properties; nodes take longer: they boot a kernel).

Like the local ones, both types are for cluster drivers and admins (not ``tenant_safe``): they
make namespaces, taps and QEMU processes on the host as root."""

from __future__ import annotations

from jeroboam.infra.local import resources as local

from .provider import NETWORK_TYPE, NODE_TYPE, VmProvider

_vm = local.ProcessProviders("vm", lambda state, settings: VmProvider(
    state, prefix=local.prefix_for(state), images_dir=str(settings.get("vm", "images_dir")),
    memory_mb=int(settings.get("vm", "memory_mb")), cpus=int(settings.get("vm", "cpus"))))
configure = _vm.configure
current = _vm.current


class Network(local.Network):
    """A network namespace of the cluster's own with a bridge and its own /24 (.1 is the
    gateway, inside the namespace); the host routes the /24 into it."""

    type_name = NETWORK_TYPE
    provider = staticmethod(current)
    state_label = "<state_path>/vm"
    attributes_schema = {**local.Network.attributes_schema,
                         "name": "The network namespace's name."}


class Node(local.Node):
    """A QEMU virtual machine whose dockerd serves TLS with a certificate from
    ``ca_cert``/``ca_key``. A CA change reboots it with a certificate from the new CA; an
    ``images`` change imports the new tarballs; other changes replace the node."""

    type_name = NODE_TYPE
    provider = staticmethod(current)
    state_label = "<state_path>/vm"
    # a boot under TCG on a busy host; counted across retries
    start_timeout = 300
    delete_timeout = 60
    poll = 1.0
    attributes_schema = {k: v for k, v in local.Node.attributes_schema.items() if k != "socket"}
    attributes_schema["name"] = "The node's name (its VM's name)."
    attributes_schema["acceleration"] = "kvm or tcg: how its VM runs (chosen by a trial boot)."

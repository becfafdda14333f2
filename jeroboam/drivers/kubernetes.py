"""Kubernetes: coe ``kubernetes`` on every provider that makes nodes.

A cluster is one orchestration stack of the provider's network and nodes, as for Swarm. On
those nodes the driver runs Kubernetes v1.20-style components from ``[kubernetes] bin_dir``:
masters run etcd (one member each), kube-apiserver on :6443, controller-manager (node podCIDRs)
and scheduler; every node, masters included (tainted NoSchedule, as Magnum registers them),
runs kubelet on its own dockerd (dockershim) with kubenet, and kube-proxy in iptables mode.
The driver routes every node's podCIDR to it from every other node.

Labels: Magnum's ``kube_tag`` is ignored (one version: the binaries'), ``service_cluster_ip_range``
and ``calico_ipv4pool``/``flannel_network_cidr`` (pod network), ``kubelet_options``,
``kubeapi_options``, ``kubecontroller_options``, ``kubescheduler_options``,
``kubeproxy_options`` (extra flags), ``image_tarballs`` (as Swarm), ``auto_heal_enabled``.
See the README for the ones that mean cloud things and are ignored.
"""

from __future__ import annotations

import ipaddress
import logging
import shlex
import subprocess
import time

from jeroboam.drivers import Driver
from jeroboam.infra import InfraError, wait_until

from . import kubernetes_conf as conf
from . import kubernetes_nodes as knodes
from .kubernetes_api import APIError, KubeAPI, ready_condition

LOG = logging.getLogger("jeroboam.drivers.kubernetes")

API_TIMEOUT = 60
NODES_TIMEOUT = 90
OPTION_LABELS = {"kubelet_options": "kubelet", "kubeapi_options": "kube-apiserver",
                 "kubecontroller_options": "kube-controller-manager",
                 "kubescheduler_options": "kube-scheduler", "kubeproxy_options": "kube-proxy"}


def version(bin_dir: str) -> str:
    """What the binaries report (``Kubernetes v1.20.2`` -> ``v1.20.2``)."""
    out = subprocess.run([f"{bin_dir}/kube-apiserver", "--version"], capture_output=True,
                         text=True, timeout=20)
    if out.returncode != 0:
        raise InfraError("find Kubernetes", f"{bin_dir}/kube-apiserver --version failed: "
                         f"{out.stderr.strip() or out.returncode}; run scripts/build-kubernetes.sh")
    return out.stdout.split()[-1]


def cluster_spec(cluster_uuid: str, labels: dict, masters: list, bin_dir: str) -> conf.Spec:
    def cidr(*keys, default):
        for key in keys:
            if labels.get(key):
                return str(ipaddress.ip_network(labels[key]))
        return default
    options = {component: shlex.split(str(labels[label]))
               for label, component in OPTION_LABELS.items() if labels.get(label)}
    return conf.Spec(cluster_uuid, tuple(masters), bin_dir,
                     pod_cidr=cidr("calico_ipv4pool", "flannel_network_cidr",
                                   default=conf.DEFAULT_POD_CIDR),
                     service_cidr=cidr("service_cluster_ip_range",
                                       default=conf.DEFAULT_SERVICE_CIDR),
                     options=options)


def wait_api(api: KubeAPI, timeout: float = API_TIMEOUT) -> None:
    wait_until(api.ready, timeout, "wait for the Kubernetes API", interval=0.1)


def wait_nodes(api: KubeAPI, hostnames: set[str], timeout: float = NODES_TIMEOUT) -> dict:
    """Wait until every node is registered with a podCIDR; returns hostname -> Node object."""
    def registered():
        try:
            nodes = {n["metadata"]["name"]: n for n in api.nodes()}
        except APIError:
            return None
        if all(h in nodes and nodes[h]["spec"].get("podCIDR") for h in hostnames):
            return nodes
        return None
    return wait_until(registered, timeout, "wait for the nodes to register", interval=0.1)


def wait_ready(api: KubeAPI, hostnames: set[str], timeout: float = NODES_TIMEOUT) -> None:
    def ready():
        try:
            nodes = {n["metadata"]["name"]: n for n in api.nodes()}
        except APIError:
            return False
        return all(h in nodes and ready_condition(nodes[h]) for h in hostnames)

    def detail():
        try:
            return ", ".join(f"{n['metadata']['name']}: {ready_condition(n)}" for n in api.nodes())
        except APIError as exc:
            return str(exc)
    wait_until(ready, timeout, "wait for the nodes to be Ready", interval=0.1, detail=detail)


class KubernetesDriver(Driver):
    provides = [{"server_type": "local", "os": "debian", "coe": "kubernetes"}]

    def validate_master_size(self, master_count: int) -> str | None:
        return super().validate_master_size(master_count)


def _now() -> float:
    return time.monotonic()

"""Kubernetes on provider-neutral nodes: what the driver puts on each node and runs there.

Every process runs through the node's supervisor, in the node's network namespace and its own
mount namespace, where the node's directory is bind-mounted over the few host paths a kubelet
insists on (``/var/log`` for pod logs, ``/var/lib/cni`` for kubenet's address leases) and files
holding the kubelet's expected values cover the host-wide sysctls it would otherwise rewrite.
"""

from __future__ import annotations

import io
import tarfile
from contextlib import closing

from jeroboam.infra import InfraError, Mount, Node, ProcessSpec

from . import kubernetes_conf as conf

ROOT = "k8s"  # the node's Kubernetes directory, inside its file area
API = ("etcd", "kube-apiserver")
CONTROL_PLANE = API + ("kube-controller-manager", "kube-scheduler")
NODE_AGENTS = ("kubelet", "kube-proxy")
# What a cluster starts before its API answers: the controller-manager (it waits for the API
# itself; nodes are schedulable once it has seen them Ready) and kubelets (they register as
# soon as the API answers). The scheduler and kube-proxy start once it does: their informers
# would back off for up to 30 s while it does not.
BEFORE_API = API + ("kube-controller-manager", "kubelet")
AFTER_API = ("kube-scheduler", "kube-proxy")


def root(node: Node) -> str:
    return node.path(ROOT)


def put_files(node: Node, spec: conf.Spec, member: conf.Member, ca, previous_ca=None) -> None:
    base = root(node)
    for rel, text in conf.node_files(spec, member, ca, base, previous_ca).items():
        private = rel.endswith(("key.pem", ".kubeconfig"))
        node.put_file(f"{ROOT}/{rel}", text, 0o600 if private else 0o644)
    for mount_source in ("log", "cni"):
        node.put_file(f"{ROOT}/{mount_source}/.keep", "", 0o644)


def import_pause(node: Node, pause_binary: str) -> None:
    """The pod sandbox image, made here: nothing can be pulled."""
    with closing(node.client()) as client:
        try:
            client.api.inspect_image(conf.PAUSE_IMAGE)
            return
        except Exception:  # docker.errors.ImageNotFound; the SDK is the provider's business
            pass
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(pause_binary, "pause")
        repo, tag = conf.PAUSE_IMAGE.rsplit(":", 1)
        client.api.import_image_from_data(buf.getvalue(), repository=repo, tag=tag,
                                          changes=['ENTRYPOINT ["/pause"]'])


def _mounts(node: Node) -> tuple[Mount, ...]:
    base = root(node)
    mounts = [Mount("/var/log", f"{base}/log"), Mount("/var/lib/cni", f"{base}/cni")]
    mounts += [Mount(f"/proc/sys/{path}", f"{base}/sysctl/{path.replace('/', '.')}")
               for path in conf.KUBELET_SYSCTLS]
    return tuple(mounts)


def processes(node: Node, spec: conf.Spec, member: conf.Member,
              etcd_state: str = "new") -> list[ProcessSpec]:
    """What runs on the node: the control plane on a master, kubelet and kube-proxy on all.
    The control plane comes back when it exits; a kubelet does not: a dead kubelet is a
    dead node, which the health monitor reports and auto-heal replaces."""
    base = root(node)
    procs = []
    if member.master:
        for name, argv in (("etcd", conf.etcd_argv(spec, member, base, etcd_state)),
                           ("kube-apiserver", conf.apiserver_argv(spec, member, base)),
                           ("kube-controller-manager", conf.controller_manager_argv(spec, member, base)),
                           ("kube-scheduler", conf.scheduler_argv(spec, member, base))):
            procs.append(ProcessSpec(name, tuple(argv), restart=True))
    kubelet = conf.kubelet_argv(spec, member, base, cgroup_root(node), node.api_address)
    procs.append(ProcessSpec("kubelet", tuple(kubelet), conf.kubelet_env(base, node.api_address),
                             mounts=_mounts(node)))
    procs.append(ProcessSpec("kube-proxy", tuple(conf.kube_proxy_argv(spec, member, base)),
                             restart=True))
    return procs


def cgroup_root(node: Node) -> str:
    """The kubelet's --cgroup-root: under the node's cgroup, so it goes with the node."""
    return f"{node.cgroup_parent}/kubelet"


def start(node: Node, specs: list[ProcessSpec], names) -> None:
    specs = [s for s in specs if s.name in names]
    if any(s.name == "kubelet" for s in specs):
        # /var/lib/cni: a mount point in every node's mount namespace (empty on the host);
        # the cgroup root: a kubelet refuses to start unless it exists in every hierarchy
        node.run(["sh", "-c", 'mkdir -p /var/lib/cni && for h in /sys/fs/cgroup/*/; do '
                  f'mkdir -p "${{h}}{cgroup_root(node).lstrip("/")}"; done'])
    for spec in specs:
        node.start_process(spec)


def stop(node: Node, names=CONTROL_PLANE + NODE_AGENTS) -> None:
    for name in reversed(names):
        node.stop_process(name, timeout=5)


def route_pods(node: Node, routes: dict[str, str], pod_cidr: str) -> None:
    """Routes from this node to every other node's podCIDR (all nodes share one L2 network),
    and forwarding of pod traffic (a dockerd's FORWARD policy drops it)."""
    batch = "".join(f"route replace {cidr} via {via}\n" for cidr, via in sorted(routes.items()))
    if batch:
        node.run(["ip", "-batch", "-"], input=batch)
    for rule in (["-s", pod_cidr], ["-d", pod_cidr]):
        try:
            node.run(["iptables", "-w", "-C", "FORWARD", *rule, "-j", "ACCEPT"])
        except InfraError:
            node.run(["iptables", "-w", "-I", "FORWARD", "1", *rule, "-j", "ACCEPT"])


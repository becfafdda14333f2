"""Kubernetes: coe ``kubernetes`` on every provider that makes nodes.

A cluster is one orchestration stack of the provider's network and nodes, as for Swarm. On
those nodes the driver runs the Kubernetes binaries of ``[kubernetes] bin_dir`` (v1.20):
masters run etcd (one member each), kube-apiserver on :6443, controller-manager and scheduler;
every node, masters included (tainted NoSchedule, as Magnum registers them), runs kubelet on its
own dockerd (dockershim) with kubenet, and kube-proxy in iptables mode. The driver gives each
node its podCIDR (a function of its address, see kubernetes_conf.node_pod_cidr) and routes it
to the node from every other node.

A create overlaps what it can: the masters' etcd and API server start while the stack still
starts the nodes' dockerds, kubelets while the API comes up; the rest once it answers.

Labels: Magnum's ``kube_tag`` is ignored (one version: the binaries'), ``service_cluster_ip_range``
and ``calico_ipv4pool``/``flannel_network_cidr`` (pod network), ``kubelet_options``,
``kubeapi_options``, ``kubecontroller_options``, ``kubescheduler_options``,
``kubeproxy_options`` (extra flags), ``image_tarballs`` (as Swarm), ``auto_healing_enabled``.
See the README for the ones that mean cloud things and are ignored.
"""

from __future__ import annotations

import functools
import ipaddress
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

from jeroboam.drivers.nodes import dead_nodes, node_key
from jeroboam.drivers.stack import ClusterStack, StackDriver, counts, live, parallel
from jeroboam.drivers.swarm_health import HEALTHY, UNHEALTHY
from jeroboam.infra import InfraError, Node, server_types, wait_until
from jeroboam.pki import KeyPair

from . import kubernetes_conf as conf
from . import kubernetes_nodes as knodes
from .kubernetes_api import APIError, KubeAPI, ready_condition, schedulable

API_TIMEOUT = 60
NODES_TIMEOUT = 90
OPTION_LABELS = {"kubelet_options": "kubelet", "kubeapi_options": "kube-apiserver",
                 "kubecontroller_options": "kube-controller-manager",
                 "kubescheduler_options": "kube-scheduler", "kubeproxy_options": "kube-proxy"}


@functools.lru_cache(maxsize=8)
def version(bin_dir: str) -> str:
    """What the binaries report (``Kubernetes v1.20.2`` -> ``v1.20.2``)."""
    out = subprocess.run([f"{bin_dir}/kube-apiserver", "--version"], capture_output=True,
                         text=True, timeout=20)
    if out.returncode != 0:
        raise InfraError("find Kubernetes", f"{bin_dir}/kube-apiserver --version failed: "
                         f"{out.stderr.strip() or out.returncode}; run scripts/build-kubernetes.sh")
    return out.stdout.split()[-1]


def _cidr(labels: dict, *keys: str, default: str) -> str:
    for key in keys:
        if labels.get(key):
            return str(ipaddress.ip_network(labels[key]))
    return default


def pod_range(labels: dict) -> str:
    return _cidr(labels, "calico_ipv4pool", "flannel_network_cidr", default=conf.DEFAULT_POD_CIDR)


def cluster_spec(cluster_uuid: str, labels: dict, masters: list, bin_dir: str,
                 time_scale: float) -> conf.Spec:
    options = {component: shlex.split(str(labels[label]))
               for label, component in OPTION_LABELS.items() if labels.get(label)}
    return conf.Spec(cluster_uuid, tuple(masters), bin_dir, pod_cidr=pod_range(labels),
                     service_cidr=_cidr(labels, "service_cluster_ip_range",
                                        default=conf.DEFAULT_SERVICE_CIDR),
                     options=options, time_scale=time_scale)


def wait_api(api: KubeAPI, timeout: float = API_TIMEOUT) -> None:
    wait_until(api.ready, timeout, "wait for the Kubernetes API", interval=0.1)


def wait_ready(api: KubeAPI, cidrs: dict[str, str], timeout: float = NODES_TIMEOUT) -> None:
    """Wait until every node (hostname -> its podCIDR) is registered, Ready and schedulable.
    A registered node's spec gets the podCIDR its kubelet has used from the start."""
    def check() -> bool:
        try:
            nodes = {n["metadata"]["name"]: n for n in api.nodes()}
            for name, node in nodes.items():
                if name in cidrs and not node["spec"].get("podCIDR"):
                    api.patch_node(name, {"spec": {"podCIDR": cidrs[name],
                                                   "podCIDRs": [cidrs[name]]}})
        except APIError:
            return False
        return all(h in nodes and schedulable(nodes[h]) for h in cidrs)

    def detail() -> str:
        try:
            return ", ".join(f"{n['metadata']['name']}: Ready {ready_condition(n)}, "
                             f"schedulable {schedulable(n)}" for n in api.nodes()) \
                or "none registered"
        except APIError as exc:
            return str(exc)
    wait_until(check, timeout, "wait for the nodes to be Ready", interval=0.1, detail=detail)


class _KubeStack(ClusterStack):
    """The cluster's stack and nodes, and the Kubernetes they run."""

    kind = "Kubernetes"

    def __init__(self, ctx):
        super().__init__(ctx)
        settings = ctx.task.settings
        self.bin_dir = settings.get("kubernetes", "bin_dir")
        self.pause = settings.get("kubernetes", "pause_binary")
        self.labels = {**ctx.template.labels, **self.cluster.labels}
        self.groups = live(ctx.nodegroups())
        self.ca = ctx.ca()  # what certificates come from (a CA rotation sets the new one)

    def layout(self, members: dict[str, list[Node]] | None = None
               ) -> tuple[conf.Spec, list[tuple[Node, conf.Member]]]:
        """The cluster's Kubernetes spec and (node, member) pairs, masters first, of the
        stack's nodes or of ``members`` (nodegroup uuid -> nodes)."""
        members = members if members is not None else self.members(self.groups)
        pods = pod_range(self.labels)
        try:
            pairs = [(node, conf.Member(node.hostname, node.address, group.role == "master",
                                        group.name, conf.node_pod_cidr(pods, node.address)))
                     for group in sorted(self.groups, key=lambda g: g.role != "master")
                     for node in members.get(group.uuid, [])]
        except ValueError as exc:
            raise InfraError("lay out the cluster", str(exc)) from None
        cidrs = [m.pod_cidr for _, m in pairs]
        if len(set(cidrs)) != len(cidrs):
            raise InfraError("lay out the cluster", f"node addresses "
                             f"{', '.join(m.address for _, m in pairs)} give some nodes the "
                             f"same podCIDR in {pods}")
        masters = [m for _, m in pairs if m.master]
        if not masters:
            raise InfraError("lay out the cluster", "no master node is up")
        return cluster_spec(self.cluster.uuid, self.labels, masters, self.bin_dir,
                            self.provider.time_scale), pairs

    def api(self, spec: conf.Spec | None = None) -> KubeAPI:
        spec = spec or self.layout()[0]
        return KubeAPI(conf.api_address(spec.masters), self.ca,
                       timeout=KubeAPI.TIMEOUT * self.provider.time_scale)

    # --- steps ------------------------------------------------------------------------

    def start_nodes(self) -> None:
        """Run the stack; meanwhile, as soon as every master runs, their etcd and API server
        start (they need no dockerd): the API comes up while the nodes' dockerds start and take
        their images, and while the other nodes are configured."""
        wanted = {(self.cluster.uuid, g.uuid, i): g for g in self.groups if g.role == "master"
                  for i in range(g.node_count)}

        def masters() -> dict[str, list[Node]] | None:
            found = {key: n for n in self.provider.nodes() if (key := node_key(n)) in wanted}
            if len(found) < len(wanted) or not all(self.provider.node_running(n.name)
                                                   for n in found.values()):
                return None
            members = {}
            for key in sorted(found):
                members.setdefault(wanted[key].uuid, []).append(found[key])
            return members

        with ThreadPoolExecutor(max_workers=1) as pool:
            stack = pool.submit(self.run, "CREATE")
            members = wait_until(lambda: stack.done() or masters(), NODES_TIMEOUT,
                                 "wait for the masters to run", interval=0.05)
            if members is not True:
                spec, pairs = self.layout(members)
                parallel(lambda p: self._start_control_plane(spec, *p), pairs)
            stack.result()

    def _start_control_plane(self, spec: conf.Spec, node: Node, member: conf.Member) -> None:
        if not _configured(node):
            knodes.put_files(node, spec, member, self.ca)
        knodes.start(node, knodes.processes(node, spec, member), knodes.API)

    def configure(self, previous_ca: KeyPair | None = None) -> None:
        """Certificates and kubeconfigs on every node that runs nothing of Kubernetes yet (a
        master whose control plane started early has them), the pause image on all."""
        version(self.bin_dir)  # fail early, and clearly, without binaries
        spec, pairs = self.layout()

        def prepare(pair):
            node, member = pair
            if not _configured(node):
                knodes.put_files(node, spec, member, self.ca, previous_ca)
            knodes.import_pause(node, self.pause)
        parallel(prepare, pairs)

    def start(self, names) -> None:
        """Start the processes ``names`` on every node that runs them (those running stay)."""
        spec, pairs = self.layout()
        parallel(lambda p: knodes.start(p[0], knodes.processes(p[0], spec, p[1]), names), pairs)

    def wait_api(self) -> None:
        wait_api(self.api(), API_TIMEOUT * self.provider.time_scale)

    def route_pods(self) -> None:
        """A route from every node to each other node's podCIDR."""
        spec, pairs = self.layout()
        parallel(lambda p: knodes.route_pods(
            p[0], {m.pod_cidr: m.address for _, m in pairs if m != p[1]}, spec.pod_cidr), pairs)

    def wait_ready(self) -> None:
        spec, pairs = self.layout()
        wait_ready(self.api(spec), {m.hostname: m.pod_cidr for _, m in pairs},
                   NODES_TIMEOUT * self.provider.time_scale)

    def drain(self, names: list[str]) -> None:
        """Cordon, drain and delete the Node objects of nodes about to go."""
        leaving = [n for name in names if (n := self.provider.get_node(name))]
        if not leaving:
            return
        api = self.api()
        if not api.ready():
            self.ctx.event("the Kubernetes API does not answer: nodes go without draining")
            return
        parallel(lambda n: api.drain(n.hostname), leaving)

    def dead(self, group, nodes: list[Node]) -> list[Node]:
        """Workers whose dockerd is gone or whose kubelet is not running (it is never
        restarted); masters are etcd members, which a converge does not replace."""
        return [] if group.role == "master" else dead(self.provider, nodes)

    def report(self) -> None:
        spec, pairs = self.layout()
        members = self.members(self.groups)
        api = self.api(spec)
        health, reason = assess(api)
        coe_version = version(self.bin_dir)
        self.ctx.update_cluster(api_address=conf.api_address(spec.masters),
                                coe_version=coe_version, container_version=_docker_version(pairs),
                                stack_id=self.id, health_status=health,
                                health_status_reason=reason)
        for group in self.groups:
            self.ctx.update_nodegroup(group.uuid, stack_id=self.id,
                                      node_addresses=[n.address for n in members[group.uuid]])


def _started(node: Node) -> bool:
    return node.process_pid("kubelet") is not None


def _configured(node: Node) -> bool:
    """Whether the node has its files: its kubelet or (a master) its etcd runs."""
    return _started(node) or node.process_pid("etcd") is not None


def dead(provider, nodes: list[Node]) -> list[Node]:
    """Nodes whose dockerd is gone or whose kubelet is not running."""
    down = dead_nodes(provider, nodes)
    return down + [n for n in nodes if n not in down and not _started(n)]


def _docker_version(pairs) -> str:
    with closing(pairs[0][0].client(timeout=5)) as client:
        return client.version()["Version"]


def assess(api: KubeAPI) -> tuple[str, dict]:
    """As Magnum's Kubernetes monitor: ``{"api": <healthz>, "<node>.Ready": "True"|"False",
    ...}``; HEALTHY when the API says ok and every node is Ready."""
    reason = {}
    try:
        reason["api"] = api.healthz()
        for node in api.nodes():
            reason[f"{node['metadata']['name']}.Ready"] = str(ready_condition(node))
    except APIError as exc:
        reason["api"] = str(exc)
        return UNHEALTHY, reason
    healthy = reason["api"] == "ok" and all(v == "True" for k, v in reason.items() if k != "api")
    return (HEALTHY if healthy else UNHEALTHY), reason


CREATE_STEPS = ["create stack", "start nodes", "configure nodes", "route pods", "start kubelets",
                "wait for the API", "start controllers", "wait for nodes", "report addresses"]
CONVERGE_STEPS = ["choose nodes", "drain nodes", "update nodes", "configure nodes",
                  "route pods", "start kubelets", "wait for nodes", "report addresses"]


class KubernetesDriver(StackDriver):
    stack_class = _KubeStack

    @property
    def provides(self) -> list[dict]:
        # any provider's nodes will do: a dockerd, files, supervised processes
        return [{"server_type": t, "os": "debian", "coe": "kubernetes"} for t in server_types()]

    def create_cluster(self, ctx) -> None:
        s = _KubeStack(ctx)
        ctx.plan(CREATE_STEPS)
        ctx.run_step("create stack", lambda: s.create(s.groups))
        ctx.run_step("start nodes", s.start_nodes)
        ctx.run_step("configure nodes", s.configure)
        ctx.run_step("route pods", s.route_pods)
        ctx.run_step("start kubelets", lambda: s.start(knodes.BEFORE_API))
        ctx.run_step("wait for the API", s.wait_api)
        ctx.run_step("start controllers", lambda: s.start(knodes.AFTER_API))
        ctx.run_step("wait for nodes", s.wait_ready)
        ctx.run_step("report addresses", s.report)

    def rotate_ca_certificate(self, ctx, new_ca: KeyPair) -> None:
        """Every node restarts (its dockerd's certificate comes from the new CA) and gets every
        Kubernetes certificate anew; etcd keeps its data. Kubeconfigs from the old CA stop
        working."""
        s = _KubeStack(ctx)
        old_ca, s.ca = s.ca, new_ca  # the cluster's CA is the old one until the task's end
        s.update(s.groups, {"ca_cert": new_ca.cert_pem, "ca_key": new_ca.key_pem})
        s.configure(previous_ca=old_ca)
        s.route_pods()  # restarted nodes keep their network namespace; routes are checked
        s.start(knodes.BEFORE_API)
        s.wait_api()
        s.start(knodes.AFTER_API)
        s.wait_ready()

    def periodic_tasks(self, settings):
        from .kubernetes_health import MONITOR_INTERVAL, Monitor
        return [(MONITOR_INTERVAL, Monitor(self.name, settings))]

    def converge(self, ctx, remove: dict[str, list[str]] | None = None,
                 images: list[dict] | None = None) -> None:
        s = _KubeStack(ctx)
        ctx.plan(CONVERGE_STEPS)
        ctx.run_step("choose nodes", lambda: s.choose(remove))
        ctx.run_step("drain nodes", lambda: s.drain(ctx.payload["drain"]))
        params = counts(s.groups, ctx.payload["removals"])
        if images is not None:
            params["images"] = images
        ctx.run_step("update nodes", lambda: s.update(s.groups, params))
        ctx.run_step("configure nodes", s.configure)
        ctx.run_step("route pods", s.route_pods)
        ctx.run_step("start kubelets", lambda: s.start(knodes.NODE_AGENTS))
        ctx.run_step("wait for nodes", s.wait_ready)
        ctx.run_step("report addresses", s.report)

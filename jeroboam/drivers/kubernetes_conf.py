"""What a Kubernetes node runs, as data: certificates, kubeconfigs, config files and command
lines of etcd, the control plane, kubelet and kube-proxy. No I/O here: the driver puts the
files on the nodes and starts the commands through the provider's node interface.

Every path is under the node's Kubernetes directory (``root``), so nodes sharing one host
never share a file, and deleting the node deletes everything its processes wrote.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass, field

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from jeroboam.pki import KeyPair, issue_client_cert, issue_server_cert

API_PORT = 6443
ETCD_CLIENT_PORT, ETCD_PEER_PORT = 2379, 2380
KUBELET_PORT, KUBELET_HEALTHZ_PORT = 10250, 10248
PAUSE_IMAGE = "jeroboam/pause:3.2"
CNI_BIN_DIR = "/usr/lib/cni"
CLUSTER_DOMAIN = "cluster.local"
# Magnum's defaults for these labels
DEFAULT_POD_CIDR = "10.100.0.0/16"
DEFAULT_SERVICE_CIDR = "10.254.0.0/16"
# Each node's share of the pod range: a /24, or 1/256 of a range smaller than a /16, which must
# then be at least a /20 (16 addresses a node).
NODE_CIDR_PREFIX, MIN_POD_RANGE_PREFIX = 24, 20
# Values a v1.20 kubelet insists on for host-wide sysctls (setupKernelTunables). Each kubelet
# reads them from files bind-mounted over /proc/sys in its node's mount namespace, finds them
# as it wants them and leaves the host's own untouched.
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0", "kernel/panic": "10",
                   "kernel/panic_on_oops": "1", "kernel/keys/root_maxkeys": "1000000",
                   "kernel/keys/root_maxbytes": "25000000"}
# How fast a dead kubelet shows: leases renewed every second (a quarter of their duration),
# the node controller declares a node NotReady after NODE_GRACE seconds of silence (upstream:
# 40 s). Both are stretched by the provider's time_scale: the kubelet of a TCG guest on a busy
# host may be silent for longer while it lives, and its node must not flap NotReady.
NODE_GRACE = 8
NODE_LEASE_SECONDS = 4
MASTER_TAINT = "node-role.kubernetes.io/master=:NoSchedule"
ROLE_LABEL = "magnum.openstack.org/role"
NODEGROUP_LABEL = "magnum.openstack.org/nodegroup"


@dataclass(frozen=True)
class Member:
    """A node as Kubernetes sees it."""
    hostname: str  # the Node object's name
    address: str
    master: bool
    nodegroup: str = ""
    pod_cidr: str = ""  # its podCIDR (see node_pod_cidr)


def node_pod_cidr(pod_range: str, address: str) -> str:
    """The node's podCIDR, a function of its address: the subnet of the pod range numbered by
    the address's last bits (8 of them for a /16 range). The driver sets it itself, before the
    kubelet starts: the controller-manager's allocator waits 10 s before it looks at any node,
    and the controllers it starts after that wait with it. A node that later gets a dead node's
    address gets its podCIDR too, as the routes to it already say."""
    network = ipaddress.ip_network(pod_range)
    if network.prefixlen > MIN_POD_RANGE_PREFIX:
        raise ValueError(f"pod network {pod_range} is too small: a /{MIN_POD_RANGE_PREFIX} "
                         "or larger is needed")
    prefix = max(NODE_CIDR_PREFIX, network.prefixlen + 8)
    index = int(ipaddress.ip_address(address)) % 2 ** (prefix - network.prefixlen)
    start = int(network.network_address) + (index << (network.max_prefixlen - prefix))
    return str(ipaddress.ip_network((start, prefix)))


@dataclass(frozen=True)
class Spec:
    """The cluster-wide choices every node's configuration derives from."""
    cluster_id: str
    masters: tuple[Member, ...]
    bin_dir: str
    pod_cidr: str = DEFAULT_POD_CIDR
    service_cidr: str = DEFAULT_SERVICE_CIDR
    # extra command-line options per component, from Magnum's *_options labels
    options: dict = field(default_factory=dict)
    # the provider's: how many times slower than a namespace node its nodes answer
    time_scale: float = 1.0

    @property
    def service_ip(self) -> str:
        """The `kubernetes` Service's ClusterIP: the service range's first address."""
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    def api_server(self, member: Member) -> str:
        """The API a node's components talk to: its own on a master; a worker's spread over
        the masters (there is no load balancer)."""
        if member.master:
            return f"https://{member.address}:{API_PORT}"
        index = sum(member.hostname.encode()) % len(self.masters)
        return f"https://{self.masters[index].address}:{API_PORT}"

    def etcd_servers(self) -> str:
        return ",".join(f"https://{m.address}:{ETCD_CLIENT_PORT}" for m in self.masters)


def api_address(masters) -> str:
    return f"https://{masters[0].address}:{API_PORT}"


def kubeconfig(server: str, ca_pem: str, cert: KeyPair, user: str) -> str:
    """A kubeconfig with the credentials inline (kubectl, components and the Python client all
    read it as it is)."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "default", "preferences": {},
        "clusters": [{"name": "kubernetes", "cluster": {
            "server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert.cert_pem),
                                          "client-key-data": b64(cert.key_pem)}}],
        "contexts": [{"name": "default", "context": {"cluster": "kubernetes", "user": user}}],
    }, sort_keys=False)


def _public_key_pem(key_pem: str) -> str:
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def ca_fingerprint(ca_pem: str) -> str:
    cert = x509.load_pem_x509_certificate(ca_pem.encode())
    return cert.fingerprint(cert.signature_hash_algorithm).hex()


def node_files(spec: Spec, member: Member, ca: KeyPair, root: str,
               previous_ca: KeyPair | None = None) -> dict[str, str]:
    """Relative path (under ``root``) -> content of every file the node needs; private keys
    end in ``key.pem``. Certificates are fresh on every call. ``previous_ca``: the CA a
    rotation replaces, whose service account tokens stay valid (pods hold them)."""
    files = {"pki/ca.pem": ca.cert_pem}
    server = spec.api_server(member)

    def client(path: str, cn: str, org: str | None = None) -> None:
        files[path] = kubeconfig(server, ca.cert_pem, issue_client_cert(ca, cn, org), cn)

    def pair(name: str, kp: KeyPair) -> None:
        files[f"pki/{name}.pem"], files[f"pki/{name}-key.pem"] = kp.cert_pem, kp.key_pem

    # kubelet: client identity for the Node authorizer and NodeRestriction, serving cert for
    # the API server's logs/exec calls
    client("kubelet.kubeconfig", f"system:node:{member.hostname}", "system:nodes")
    pair("kubelet", issue_server_cert(ca, member.hostname, [member.address], [member.hostname]))
    client("kube-proxy.kubeconfig", "system:kube-proxy")
    docker = issue_client_cert(ca, f"kubelet-{member.hostname}")
    files.update({"pki/docker/ca.pem": ca.cert_pem, "pki/docker/cert.pem": docker.cert_pem,
                  "pki/docker/key.pem": docker.key_pem})
    files["kubelet.yaml"] = _kubelet_config(root, member.pod_cidr, spec.time_scale)
    for path, value in KUBELET_SYSCTLS.items():
        files[f"sysctl/{path.replace('/', '.')}"] = value + "\n"
    if member.master:
        files["pki/ca-key.pem"] = ca.key_pem
        # service account tokens are signed with the CA key: every master has it already
        files["pki/sa.pub"] = "".join(_public_key_pem(c.key_pem) for c in (ca, previous_ca) if c)
        sans = ["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                f"kubernetes.default.svc.{CLUSTER_DOMAIN}", "localhost", member.hostname]
        pair("apiserver", issue_server_cert(ca, "kube-apiserver",
                                            [member.address, spec.service_ip, "127.0.0.1"], sans))
        pair("apiserver-kubelet-client",
             issue_client_cert(ca, "kube-apiserver-kubelet-client", "system:masters"))
        pair("apiserver-etcd-client", issue_client_cert(ca, "kube-apiserver-etcd-client"))
        pair("etcd", issue_server_cert(ca, member.hostname, [member.address, "127.0.0.1"],
                                       [member.hostname, "localhost"]))
        # its controllers share its identity: with one service account each, every controller
        # waits for its token in turn (seconds at start-up); it holds the CA and service
        # account keys, so the group gives it nothing it could not sign for itself
        client("controller-manager.kubeconfig", "system:kube-controller-manager", "system:masters")
        client("scheduler.kubeconfig", "system:kube-scheduler")
    return files


def _kubelet_config(root: str, pod_cidr: str, time_scale: float) -> str:
    return yaml.safe_dump({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": f"{root}/pki/ca.pem"}},
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": f"{root}/pki/kubelet.pem", "tlsPrivateKeyFile": f"{root}/pki/kubelet-key.pem",
        "readOnlyPort": 0, "port": KUBELET_PORT,
        "cgroupDriver": "cgroupfs",
        # no cluster DNS exists here (see README); pods keep no resolver rather than the host's
        "clusterDomain": CLUSTER_DOMAIN, "resolvConf": "",
        # kubenet's range from the start: the node is Ready as soon as it registers
        "podCIDR": pod_cidr,
        "failSwapOn": False, "protectKernelDefaults": False,
        "nodeStatusUpdateFrequency": "2s",
        "nodeLeaseDurationSeconds": round(NODE_LEASE_SECONDS * time_scale),
        "serializeImagePulls": False, "staticPodPath": "",
        "syncFrequency": "10s", "fileCheckFrequency": "10s",
    }, sort_keys=False)


# The controller-manager and the scheduler serve nothing (their health and metrics ports are
# not used here): no self-signed certificate outside the cluster CA, and no lookup of the
# API's authentication settings, which fails and ends them while the API is starting.
_NOT_SERVING = ("--port", "0", "--secure-port", "0", "--profiling=false")


def _extra(spec: Spec, component: str) -> list[str]:
    return list(spec.options.get(component, []))


def etcd_argv(spec: Spec, member: Member, root: str, state: str = "new") -> list[str]:
    pki = f"{root}/pki"
    peers = ",".join(f"{m.hostname}=https://{m.address}:{ETCD_PEER_PORT}" for m in spec.masters)
    return [
        "etcd", "--name", member.hostname, "--data-dir", f"{root}/etcd",
        "--listen-client-urls", f"https://{member.address}:{ETCD_CLIENT_PORT},https://127.0.0.1:{ETCD_CLIENT_PORT}",
        "--advertise-client-urls", f"https://{member.address}:{ETCD_CLIENT_PORT}",
        "--listen-peer-urls", f"https://{member.address}:{ETCD_PEER_PORT}",
        "--initial-advertise-peer-urls", f"https://{member.address}:{ETCD_PEER_PORT}",
        "--initial-cluster", peers, "--initial-cluster-state", state,
        "--initial-cluster-token", spec.cluster_id,
        "--cert-file", f"{pki}/etcd.pem", "--key-file", f"{pki}/etcd-key.pem",
        "--client-cert-auth", "--trusted-ca-file", f"{pki}/ca.pem",
        "--peer-cert-file", f"{pki}/etcd.pem", "--peer-key-file", f"{pki}/etcd-key.pem",
        "--peer-client-cert-auth", "--peer-trusted-ca-file", f"{pki}/ca.pem",
        "--logger", "zap", "--log-level", "warn",
    ]


def apiserver_argv(spec: Spec, member: Member, root: str) -> list[str]:
    pki = f"{root}/pki"
    return [
        f"{spec.bin_dir}/kube-apiserver",
        "--advertise-address", member.address, "--secure-port", str(API_PORT),
        "--insecure-port", "0", "--cert-dir", f"{root}/apiserver",
        "--etcd-servers", spec.etcd_servers(), "--etcd-cafile", f"{pki}/ca.pem",
        "--etcd-certfile", f"{pki}/apiserver-etcd-client.pem",
        "--etcd-keyfile", f"{pki}/apiserver-etcd-client-key.pem",
        "--tls-cert-file", f"{pki}/apiserver.pem", "--tls-private-key-file", f"{pki}/apiserver-key.pem",
        "--client-ca-file", f"{pki}/ca.pem",
        "--kubelet-client-certificate", f"{pki}/apiserver-kubelet-client.pem",
        "--kubelet-client-key", f"{pki}/apiserver-kubelet-client-key.pem",
        "--kubelet-certificate-authority", f"{pki}/ca.pem",
        "--kubelet-preferred-address-types", "InternalIP",
        "--service-account-issuer", f"https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
        "--service-account-key-file", f"{pki}/sa.pub",
        "--service-account-signing-key-file", f"{pki}/ca-key.pem",
        "--service-cluster-ip-range", spec.service_cidr,
        "--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
        "--allow-privileged=true", "--profiling=false",
        "--endpoint-reconciler-type", "lease",
        *_extra(spec, "kube-apiserver"),
    ]


def controller_manager_argv(spec: Spec, member: Member, root: str) -> list[str]:
    pki = f"{root}/pki"
    return [
        f"{spec.bin_dir}/kube-controller-manager",
        "--kubeconfig", f"{root}/controller-manager.kubeconfig", *_NOT_SERVING,
        "--cluster-signing-cert-file", f"{pki}/ca.pem", "--cluster-signing-key-file", f"{pki}/ca-key.pem",
        "--root-ca-file", f"{pki}/ca.pem", "--service-account-private-key-file", f"{pki}/ca-key.pem",
        "--use-service-account-credentials=false",
        # podCIDRs are the driver's (node_pod_cidr)
        "--allocate-node-cidrs=false", "--service-cluster-ip-range", spec.service_cidr,
        f"--leader-elect={str(len(spec.masters) > 1).lower()}",
        "--node-monitor-period", "1s", "--node-monitor-grace-period",
        f"{NODE_GRACE * spec.time_scale:g}s",
        *_extra(spec, "kube-controller-manager"),
    ]


def scheduler_argv(spec: Spec, member: Member, root: str) -> list[str]:
    return [
        f"{spec.bin_dir}/kube-scheduler",
        "--kubeconfig", f"{root}/scheduler.kubeconfig", *_NOT_SERVING,
        f"--leader-elect={str(len(spec.masters) > 1).lower()}",
        *_extra(spec, "kube-scheduler"),
    ]


def kubelet_env(root: str, docker_api: str) -> dict[str, str]:
    """The kubelet reaches its node's dockerd the provider-neutral way: the node's TLS endpoint
    with a client certificate from the cluster CA (docker's own environment variables)."""
    return {"DOCKER_HOST": docker_api, "DOCKER_TLS_VERIFY": "1",
            "DOCKER_CERT_PATH": f"{root}/pki/docker"}


def kubelet_argv(spec: Spec, member: Member, root: str, cgroup_root: str,
                 docker_api: str) -> list[str]:
    docker = f"{root}/pki/docker"
    labels = f"{ROLE_LABEL}={'master' if member.master else 'worker'}"
    if member.nodegroup:
        labels += f",{NODEGROUP_LABEL}={member.nodegroup}"
    return [
        f"{spec.bin_dir}/kubelet",
        "--config", f"{root}/kubelet.yaml", "--kubeconfig", f"{root}/kubelet.kubeconfig",
        "--root-dir", f"{root}/kubelet", "--cert-dir", f"{root}/pki",
        "--hostname-override", member.hostname, "--node-ip", member.address,
        "--address", member.address, "--healthz-bind-address", member.address,
        "--cgroup-root", cgroup_root,
        # empty: the endpoint comes from kubelet_env
        "--container-runtime", "docker", "--docker-endpoint", "",
        # cAdvisor (container statistics) has a Docker client of its own: the same endpoint
        # (left alone it looks for /var/run/docker.sock, and waits 5 s for it at every start)
        "--docker", docker_api, "--docker-tls", "--docker-tls-ca", f"{docker}/ca.pem",
        "--docker-tls-cert", f"{docker}/cert.pem", "--docker-tls-key", f"{docker}/key.pem",
        "--experimental-dockershim-root-directory", f"{root}/dockershim",
        "--container-runtime-endpoint", f"unix://{root}/dockershim.sock",
        "--image-service-endpoint", f"unix://{root}/dockershim.sock",
        "--pod-infra-container-image", PAUSE_IMAGE,
        # kubenet: Debian's CNI bridge and host-local on the podCIDR the controller-manager
        # gave the node, set up as soon as the kubelet learns it (a CNI config directory is
        # re-read only every 5 s); pod-to-pod traffic is routed, the rest masqueraded
        "--network-plugin", "kubenet", "--cni-bin-dir", CNI_BIN_DIR,
        "--non-masquerade-cidr", spec.pod_cidr,
        "--node-labels", labels,
        *(["--register-with-taints", MASTER_TAINT] if member.master else []),
        *_extra(spec, "kubelet"),
    ]


def kube_proxy_argv(spec: Spec, member: Member, root: str) -> list[str]:
    return [
        f"{spec.bin_dir}/kube-proxy",
        "--kubeconfig", f"{root}/kube-proxy.kubeconfig", "--hostname-override", member.hostname,
        "--bind-address", member.address, "--cluster-cidr", spec.pod_cidr,
        "--proxy-mode", "iptables",
        # conntrack limits are host-wide settings: leave them as the host has them
        "--conntrack-max-per-core", "0", "--conntrack-tcp-timeout-established", "0",
        "--conntrack-tcp-timeout-close-wait", "0",
        "--metrics-bind-address", "127.0.0.1:10249", "--healthz-bind-address", "127.0.0.1:10256",
        "--profiling=false",
        *_extra(spec, "kube-proxy"),
    ]

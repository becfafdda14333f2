"""DockerInc::Docker::Container: a container on a cluster of the stack's project (`cluster`)
or on a Docker endpoint the operator allows (`docker_endpoint`).

Properties follow Heat's docker plugin, plus `cluster`, TLS material for an endpoint
(`tls_ca_cert`, `tls_client_cert`, `tls_client_key`: PEM text) and `labels`. Any property
change replaces the container.

Confinement: a template never reaches a Docker API the operator did not mean it to. On a
cluster the service looks the cluster up in the stack's project and talks to it with a client
certificate it issues from the cluster's CA. An endpoint must be on the operator's list
([orchestration] docker_endpoints) and may not be a unix socket nor an address of the
service's host (loopback, link-local, the host's own). Docker's answers are logged and never
shown: a failure's reason is a short fixed text.

The container is named from the stack, the resource and its record id (or
`name`) and labelled with the record id, so a create retried after a crash
finds the container an earlier attempt made instead of making a second one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import tempfile
from urllib.parse import urlsplit

import docker
import requests
import sqlalchemy as sa
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.tls import TLSConfig

from jeroboam import pki
from jeroboam.db.models import Cluster, ClusterTemplate
from jeroboam.orchestration.errors import TemplateError
from jeroboam.orchestration.functions import has_deferred
from jeroboam.orchestration.resources.base import Resource

LOG = logging.getLogger(__name__)

RECORD_LABEL = "org.jeroboam.resource-id"
STACK_LABEL = "org.jeroboam.stack-id"
CLIENT_TIMEOUT = 120  # seconds per Docker API call (an image pull is one call)
# Fixed rather than negotiated: negotiating costs a call per client, made before the client
# can be told to ignore the environment. Docker 20.10 and every later engine serve it.
API_VERSION = "1.41"
ENDPOINT_SCHEMES = ("tcp", "https")
DOCKER_COES = ("swarm", "swarm-mode")  # whose api_address is a Docker API
CLIENT_CN = "jeroboam-orchestration"

_STRINGS = {"type": "array", "items": {"type": "string"}}
# Inspect data shown as the `info` attribute: not its paths on the endpoint's host (log,
# hosts and resolv.conf files, graph driver directories, mount sources).
_SHOWN_INFO = ("Id", "Created", "Name", "Image", "State", "Config", "RestartCount")
_TLS_KEYS = ("tls_ca_cert", "tls_client_cert", "tls_client_key")
# What reaches the host an endpoint runs on (its devices, file system, network, kernel
# capabilities, other tenants' containers). A cloud operator shares an endpoint only for plain
# containers, so these are kept for a cluster of the stack's own project, whose nodes its
# members hold client certificates for anyway.
_HOST_REACHING = ("privileged", "devices", "cap_add", "volumes", "volumes_from", "links", "network_mode")
_PLAIN_NETWORK_MODES = ("", "default", "bridge", "none")


class ClusterNotFound(TemplateError):
    """No such cluster in the stack's project (any more: its containers went with it)."""


class DockerFailure(RuntimeError):
    """A Docker call failed; the message is fixed text, the details are in the log."""


def _public_reason(exc: Exception) -> str:
    if isinstance(exc, ImageNotFound):
        return "image not found"
    if isinstance(exc, NotFound):
        return "not found on the Docker endpoint"
    if isinstance(exc, APIError):
        return f"the Docker endpoint refused the request (HTTP {exc.status_code})"
    if isinstance(exc, requests.Timeout):
        return "the Docker endpoint did not answer in time"
    if isinstance(exc, (requests.ConnectionError, OSError)):
        return "cannot connect to the Docker endpoint"
    return "the Docker endpoint failed"


def _host_reaching(props: dict) -> list[str]:
    found = [k for k in _HOST_REACHING if props.get(k) and k != "network_mode"]
    if str(props.get("network_mode") or "") not in _PLAIN_NETWORK_MODES:
        found.append("network_mode")
    return found


def _is_host_address(ip) -> bool:
    ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 is 127.0.0.1
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        return True
    # an address a socket can bind to is one of this host's
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


def check_endpoint(endpoint: str, settings, where: str) -> None:
    """Refuse (TemplateError) an endpoint the operator does not allow, or one on this host."""
    url = urlsplit(endpoint)
    if url.scheme not in ENDPOINT_SCHEMES or not url.hostname:
        raise TemplateError(where, "must be a tcp://HOST:PORT endpoint (unix sockets and other "
                            "transports are not allowed)")
    try:
        infos = socket.getaddrinfo(url.hostname, None, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise TemplateError(where, f"host {url.hostname} cannot be resolved") from None
    if any(_is_host_address(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos):
        raise TemplateError(where, "is an address of the service's own host, which templates may not use")
    if endpoint not in (settings.get("orchestration", "docker_endpoints") if settings else ()):
        raise TemplateError(where, "is not an endpoint the operator allows ([orchestration] "
                            "docker_endpoints); use `cluster` to run on a cluster of this project")


def find_cluster(session, ident: str, project_id: str | None, where: str):
    """The cluster named or identified by ident in project_id, serving a Docker API."""
    rows = session.execute(
        sa.select(Cluster.uuid, Cluster.status, Cluster.api_address, Cluster.ca_cert_pem, Cluster.ca_key_pem,
                  ClusterTemplate.coe)
        .join(ClusterTemplate, ClusterTemplate.uuid == Cluster.cluster_template_id)
        .where(sa.or_(Cluster.uuid == ident, Cluster.name == ident), Cluster.project_id == project_id)
        .limit(2)).all()
    if not rows:
        raise ClusterNotFound(where, f"cluster {ident} could not be found in this project")
    if len(rows) > 1:
        raise TemplateError(where, f"several clusters are named {ident}; use the cluster's uuid")
    row = rows[0]
    if row.coe not in DOCKER_COES:
        raise TemplateError(where, f"cluster {ident} is a {row.coe} cluster, not a Docker one")
    if not (row.api_address and row.ca_cert_pem and row.ca_key_pem):
        raise TemplateError(where, f"cluster {ident} has no Docker API yet (status {row.status})")
    return row


class DockerContainer(Resource):
    type_name = "DockerInc::Docker::Container"
    tenant_safe = True
    properties_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["image"],
        "properties": {
            "cluster": {"type": "string", "minLength": 1},
            "docker_endpoint": {"type": "string", "minLength": 1},
            "tls_ca_cert": {"type": "string"},
            "tls_client_cert": {"type": "string"},
            "tls_client_key": {"type": "string"},
            "image": {"type": "string", "minLength": 1},
            "name": {"type": "string", "pattern": "^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"},
            "cmd": _STRINGS,
            "entrypoint": _STRINGS,
            "env": _STRINGS,
            "hostname": {"type": "string"},
            "user": {"type": "string"},
            "memory": {"type": "integer", "minimum": 0},
            "port_specs": _STRINGS,
            "port_bindings": {"type": "object"},
            "privileged": {"type": "boolean", "default": False},
            "tty": {"type": "boolean", "default": False},
            "open_stdin": {"type": "boolean", "default": False},
            "stdin_once": {"type": "boolean", "default": False},
            "dns": _STRINGS,
            "volumes": {"type": "object"},
            "volumes_from": _STRINGS,
            "links": {"type": "object", "additionalProperties": {"type": "string"}},
            "restart_policy": {
                "type": "object", "additionalProperties": False,
                "properties": {"Name": {"enum": ["no", "on-failure", "always", "unless-stopped"]},
                               "MaximumRetryCount": {"type": "integer", "minimum": 0}},
            },
            "cap_add": _STRINGS,
            "cap_drop": _STRINGS,
            "read_only": {"type": "boolean", "default": False},
            "cpu_shares": {"type": "integer", "minimum": 0},
            "cpu_set": {"type": "string"},
            "devices": {
                "type": "array",
                "items": {"type": "object", "additionalProperties": False, "required": ["path_on_host"],
                          "properties": {"path_on_host": {"type": "string"}, "path_in_container": {"type": "string"},
                                         "permissions": {"enum": ["r", "w", "m", "rw", "rm", "wm", "rwm"]}}},
            },
            "network_mode": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    attributes_schema = {
        "id": "The container id.",
        "name": "The container name.",
        "info": "The container's inspect data, less its paths on the endpoint's host.",
        "network_info": "The container's network settings.",
        "network_ip": "The container's IP address (first network).",
        "network_gateway": "The container's gateway (first network).",
        "addresses": "Network name -> IP address.",
        "network_tcp_ports": "Comma-separated exposed TCP ports.",
        "network_udp_ports": "Comma-separated exposed UDP ports.",
    }

    _checked_target: tuple[str, dict] | None = None  # per instance, i.e. per action

    @classmethod
    def validate_properties(cls, props, path, partial=False):
        props = super().validate_properties(props, path, partial)
        if has_deferred([props.get("cluster"), props.get("docker_endpoint")]):
            raise TemplateError(path, "cluster and docker_endpoint cannot depend on other resources' attributes")
        if ("cluster" in props) == ("docker_endpoint" in props):
            raise TemplateError(path, "give either cluster (of this project) or docker_endpoint")
        if "cluster" in props:
            tls = [k for k in _TLS_KEYS if k in props]
            if tls:
                raise TemplateError(f"{path}.{tls[0]}", "the service supplies the TLS credentials of a cluster")
        else:
            reaching = [k for k in _host_reaching(props) if not has_deferred(props.get(k))]
            if reaching:
                raise TemplateError(f"{path}.{reaching[0]}", "is allowed only on a cluster of this project, "
                                    "not on a shared docker_endpoint")
        return props

    @classmethod
    def check_access(cls, props, path, services, session, project_id):
        if "cluster" in props:
            find_cluster(session, props["cluster"], project_id, f"{path}.cluster")
        else:
            check_endpoint(props["docker_endpoint"], services.settings, f"{path}.docker_endpoint")

    def _target(self) -> tuple[str, dict]:
        """The endpoint and TLS material (PEM texts by property name), checked again once per
        action (the operator's list or the cluster may have changed since validation)."""
        if self._checked_target is None:
            self._checked_target = self._find_target()
        return self._checked_target

    def _find_target(self) -> tuple[str, dict]:
        props, services = self.properties, self.stack.services
        if "docker_endpoint" in props:
            check_endpoint(props["docker_endpoint"], services.settings, f"resources.{self.name}.docker_endpoint")
            return props["docker_endpoint"], {k: props[k] for k in _TLS_KEYS if props.get(k)}
        if services.session_factory is None:
            raise TemplateError(f"resources.{self.name}.cluster", "clusters need the service's database")
        with services.session_factory() as session:
            row = find_cluster(session, props["cluster"], self.stack.project_id, f"resources.{self.name}.cluster")
        client = pki.issue_client_cert(pki.KeyPair(row.ca_cert_pem, row.ca_key_pem), CLIENT_CN)
        return row.api_address, {"tls_ca_cert": row.ca_cert_pem, "tls_client_cert": client.cert_pem,
                                 "tls_client_key": client.key_pem}

    @contextlib.contextmanager
    def _client(self):
        endpoint, pems = self._target()
        with tempfile.TemporaryDirectory(prefix="jeroboam-docker-") as tmp:
            tls = None
            if pems:
                # The SDK reads certificates from files, for as long as the client lives.
                paths = {}
                for key, pem in pems.items():
                    paths[key] = os.path.join(tmp, key + ".pem")
                    with open(os.open(paths[key], os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                        f.write(pem)
                client_cert = None
                if "tls_client_cert" in paths and "tls_client_key" in paths:
                    client_cert = (paths["tls_client_cert"], paths["tls_client_key"])
                ca = paths.get("tls_ca_cert")
                tls = TLSConfig(client_cert=client_cert, ca_cert=ca, verify=ca is not None)
            try:
                client = docker.DockerClient(base_url=endpoint, tls=tls or False,
                                             version=API_VERSION, timeout=CLIENT_TIMEOUT)
                # Proxy and CA-bundle variables of the worker's environment (REQUESTS_CA_BUNDLE
                # would replace the CA given here) have no say.
                client.api.trust_env = False
                try:
                    yield client
                finally:
                    client.close()
            except (DockerException, requests.RequestException, OSError) as exc:
                LOG.warning("stack %s resource %s: Docker call failed: %r", self.stack.id, self.name, exc)
                raise DockerFailure(_public_reason(exc)) from None

    def _container_name(self) -> str:
        return self.properties.get("name") or self.physical_name()

    def _find(self, client):
        """This resource's container: by recorded id, else by its deterministic name."""
        for ref in filter(None, (self.physical_id, self._container_name())):
            try:
                container = client.containers.get(ref)
            except NotFound:
                continue
            if container.labels.get(RECORD_LABEL) == self.record_id:
                return container
            if ref == self.physical_id:
                continue
            raise RuntimeError(f"a container named {ref} exists and does not belong to this resource")
        return None

    def create(self):
        props = self.properties
        with self._client() as client:
            container = self._find(client)
            if container is None:
                try:
                    client.images.get(props["image"])
                except ImageNotFound:
                    client.images.pull(props["image"])
                container = client.containers.create(props["image"], name=self._container_name(),
                                                     **self._create_args())
            if container.status != "running":
                container.start()
            return container.id

    def _create_args(self) -> dict:
        props = self.properties
        labels = {**(props.get("labels") or {}), RECORD_LABEL: self.record_id, STACK_LABEL: self.stack.id}
        args = {
            "command": props.get("cmd") or None,
            "entrypoint": props.get("entrypoint") or None,
            "environment": props.get("env") or None,
            "hostname": props.get("hostname") or None,
            "user": props.get("user") or None,
            "mem_limit": props.get("memory") or None,
            "privileged": props["privileged"],
            "tty": props["tty"],
            "stdin_open": props["open_stdin"],
            "dns": props.get("dns") or None,
            "volumes": props.get("volumes") or None,
            "volumes_from": props.get("volumes_from") or None,
            "links": props.get("links") or None,
            "restart_policy": props.get("restart_policy") or None,
            "cap_add": props.get("cap_add") or None,
            "cap_drop": props.get("cap_drop") or None,
            "read_only": props["read_only"],
            "cpu_shares": props.get("cpu_shares") or None,
            "cpuset_cpus": props.get("cpu_set") or None,
            "network_mode": props.get("network_mode") or None,
            "labels": labels,
        }
        if props["stdin_once"]:
            args["stdin_once"] = True
        ports = {spec: None for spec in props.get("port_specs") or []}
        for port, binding in (props.get("port_bindings") or {}).items():
            ports[port] = _binding(binding)
        if ports:
            args["ports"] = ports
        if props.get("devices"):
            args["devices"] = [
                ":".join((d["path_on_host"], d.get("path_in_container") or d["path_on_host"],
                          d.get("permissions", "rwm")))
                for d in props["devices"]]
        return {k: v for k, v in args.items() if v is not None}

    def check_create_complete(self):
        with self._client() as client:
            container = client.containers.get(self.physical_id)
            state = container.attrs["State"]
            if state.get("Running"):
                return True
            if state.get("Status") != "exited":
                return False  # created or restarting
            if state.get("ExitCode"):
                raise DockerFailure(f"container exited with code {state['ExitCode']}")
            return True  # a command that ran to completion

    def _cluster_gone(self) -> bool:
        try:
            self._target()
        except ClusterNotFound:
            return True
        return False

    def delete(self):
        if self._cluster_gone():
            return
        with self._client() as client:
            container = self._find(client)
            if container is not None:
                try:
                    container.remove(force=True, v=True)
                except NotFound:
                    pass

    def check_delete_complete(self):
        if self._cluster_gone():
            return True
        with self._client() as client:
            return self._find(client) is None

    def get_attributes(self):
        with self._client() as client:
            info = client.containers.get(self.physical_id).attrs
        # the sandbox key is a path on the endpoint's host
        net = {k: v for k, v in (info.get("NetworkSettings") or {}).items() if k != "SandboxKey"}
        networks = net.get("Networks") or {}
        first = next(iter(networks.values()), {})
        ports = net.get("Ports") or {}
        return {
            "id": info["Id"],
            "name": info.get("Name", "").lstrip("/"),
            "info": {k: info[k] for k in _SHOWN_INFO if k in info},
            "network_info": net,
            "network_ip": net.get("IPAddress") or first.get("IPAddress") or "",
            "network_gateway": net.get("Gateway") or first.get("Gateway") or "",
            "addresses": {name: n.get("IPAddress") for name, n in networks.items()},
            "network_tcp_ports": ",".join(p.split("/")[0] for p in ports if p.endswith("/tcp")),
            "network_udp_ports": ",".join(p.split("/")[0] for p in ports if p.endswith("/udp")),
        }


def _binding(value):
    """Heat-style port binding (port, "ip:port", {HostIp, HostPort} or a list) -> SDK form."""
    if isinstance(value, list):
        return [_binding(v) for v in value]
    if isinstance(value, dict):
        port = value.get("HostPort")
        port = int(port) if port not in (None, "") else None
        return (value["HostIp"], port) if value.get("HostIp") else port
    if isinstance(value, str) and ":" in value:
        ip, _, port = value.rpartition(":")
        return (ip, int(port))
    return int(value)

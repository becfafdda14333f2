"""DockerInc::Docker::Container: a container on the Docker endpoint `docker_endpoint`.

Properties follow Heat's docker plugin, plus TLS material (`tls_ca_cert`,
`tls_client_cert`, `tls_client_key`: PEM text) and `labels`. Any property change
replaces the container.

The container is named from the stack, the resource and its record id (or
`name`) and labelled with the record id, so a create retried after a crash
finds the container an earlier attempt made instead of making a second one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import docker
from docker.errors import ImageNotFound, NotFound
from docker.tls import TLSConfig

from jeroboam.orchestration.resources.base import Resource

DEFAULT_ENDPOINT = "unix:///var/run/docker.sock"
RECORD_LABEL = "org.jeroboam.resource-id"
STACK_LABEL = "org.jeroboam.stack-id"
CLIENT_TIMEOUT = 120  # seconds per Docker API call (an image pull is one call)
# Fixed rather than negotiated: negotiating costs a call per client, made before the client
# can be told to ignore the environment. Docker 20.10 and every later engine serve it.
API_VERSION = "1.41"

_STRINGS = {"type": "array", "items": {"type": "string"}}
_TLS_KEYS = ("tls_ca_cert", "tls_client_cert", "tls_client_key")


class DockerContainer(Resource):
    type_name = "DockerInc::Docker::Container"
    properties_schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["image"],
        "properties": {
            "docker_endpoint": {"type": "string", "default": DEFAULT_ENDPOINT},
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
        "info": "The container's full inspect data.",
        "network_info": "The container's network settings.",
        "network_ip": "The container's IP address (first network).",
        "network_gateway": "The container's gateway (first network).",
        "addresses": "Network name -> IP address.",
        "network_tcp_ports": "Comma-separated exposed TCP ports.",
        "network_udp_ports": "Comma-separated exposed UDP ports.",
    }

    @contextlib.contextmanager
    def _client(self):
        props = self.properties
        with tempfile.TemporaryDirectory(prefix="jeroboam-docker-") as tmp:
            tls = None
            if any(props.get(k) for k in _TLS_KEYS):
                # The SDK reads certificates from files, for as long as the client lives.
                paths = {}
                for key in _TLS_KEYS:
                    if props.get(key):
                        paths[key] = os.path.join(tmp, key + ".pem")
                        with open(os.open(paths[key], os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                            f.write(props[key])
                client_cert = None
                if "tls_client_cert" in paths and "tls_client_key" in paths:
                    client_cert = (paths["tls_client_cert"], paths["tls_client_key"])
                ca = paths.get("tls_ca_cert")
                tls = TLSConfig(client_cert=client_cert, ca_cert=ca, verify=ca is not None)
            client = docker.DockerClient(base_url=props["docker_endpoint"], tls=tls or False,
                                         version=API_VERSION, timeout=CLIENT_TIMEOUT)
            # Proxy and CA-bundle variables of the worker's environment (REQUESTS_CA_BUNDLE
            # would replace the CA given here) have no say.
            client.api.trust_env = False
            try:
                yield client
            finally:
                client.close()

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
                logs = container.logs(tail=5).decode(errors="replace").strip()
                raise RuntimeError(f"container exited with code {state['ExitCode']}: {logs or state.get('Error')}")
            return True  # a command that ran to completion

    def delete(self):
        with self._client() as client:
            container = self._find(client)
            if container is not None:
                try:
                    container.remove(force=True, v=True)
                except NotFound:
                    pass

    def check_delete_complete(self):
        with self._client() as client:
            return self._find(client) is None

    def get_attributes(self):
        with self._client() as client:
            info = client.containers.get(self.physical_id).attrs
        net = info.get("NetworkSettings") or {}
        networks = net.get("Networks") or {}
        first = next(iter(networks.values()), {})
        ports = net.get("Ports") or {}
        return {
            "id": info["Id"],
            "name": info.get("Name", "").lstrip("/"),
            "info": info,
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

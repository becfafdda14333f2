"""A small client of a cluster's Kubernetes API, for the driver and its health monitor:
readiness, nodes, cordon/drain/delete. It authenticates with a client certificate
(system:masters) issued from the cluster CA, made once per process and CA."""

from __future__ import annotations

import functools
import json
import os
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from jeroboam.pki import KeyPair, issue_client_cert

ADMIN_USER = "jeroboam"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"


class APIError(RuntimeError):
    def __init__(self, status: int | None, message: str):
        self.status = status
        super().__init__(message)


@functools.lru_cache(maxsize=64)
def _context(ca_pem: str, ca_key_pem: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem)
    cert = issue_client_cert(KeyPair(ca_pem, ca_key_pem), ADMIN_USER, "system:masters")
    # ssl loads a client certificate only from a file: a private one, gone at once
    with tempfile.TemporaryDirectory(prefix="jeroboam-k8s-") as tmp:
        path = os.path.join(tmp, "client.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        with open(fd, "w") as f:
            f.write(cert.cert_pem + cert.key_pem)
        ctx.load_cert_chain(path)
    return ctx


class KubeAPI:
    TIMEOUT = 5.0  # seconds per request from a namespace node's API; callers stretch it

    def __init__(self, server: str, ca: KeyPair, timeout: float = TIMEOUT):
        self.server = server.rstrip("/")
        self.ctx = _context(ca.cert_pem, ca.key_pem)
        self.timeout = timeout

    def request(self, method: str, path: str, body=None, content_type="application/json",
                raw: bool = False):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method,
                                     headers={"Content-Type": content_type,
                                              "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=self.timeout) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as exc:
            raise APIError(exc.code, f"{method} {path}: {exc.code} "
                           f"{exc.read().decode(errors='replace')[:300]}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise APIError(None, f"{method} {path}: {reason}") from None
        return text if raw else json.loads(text)

    def ready(self) -> bool:
        try:
            return self.request("GET", "/readyz", raw=True) == "ok"
        except APIError:
            return False

    def healthz(self) -> str:
        return self.request("GET", "/healthz", raw=True)

    def nodes(self) -> list[dict]:
        return self.request("GET", "/api/v1/nodes")["items"]

    def patch_node(self, name: str, patch: dict) -> None:
        self.request("PATCH", f"/api/v1/nodes/{name}", patch,
                     content_type="application/strategic-merge-patch+json")

    def drain(self, name: str, timeout: float = 30) -> None:
        """Cordon the node, evict its pods and wait until they are gone (PodDisruptionBudgets
        are respected until ``timeout``; then, or at once when the node is not Ready and its
        kubelet cannot stop them, pods are deleted without grace), delete the Node object."""
        try:
            self.patch_node(name, {"spec": {"unschedulable": True}})
            live = ready_condition(self.request("GET", f"/api/v1/nodes/{name}"))
        except APIError as exc:
            if exc.status == 404:
                return
            raise
        selector = urllib.parse.quote(f"spec.nodeName={name}")
        deadline = time.monotonic() + timeout
        while pods := self.request("GET", f"/api/v1/pods?fieldSelector={selector}")["items"]:
            evict = live and time.monotonic() < deadline
            for pod in pods:
                meta = pod["metadata"]
                path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
                try:
                    if not evict:
                        self.request("DELETE", path, {"gracePeriodSeconds": 0})
                    elif not meta.get("deletionTimestamp"):
                        self.request("POST", f"{path}/eviction", {
                            "apiVersion": "policy/v1beta1", "kind": "Eviction",
                            "metadata": {"name": meta["name"], "namespace": meta["namespace"]}})
                except APIError as exc:
                    if exc.status not in (404, 429):  # gone, or a budget says later
                        raise
            time.sleep(0.2)
        try:
            self.request("DELETE", f"/api/v1/nodes/{name}")
        except APIError as exc:
            if exc.status != 404:
                raise


def ready_condition(node: dict) -> bool:
    for cond in node.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def schedulable(node: dict) -> bool:
    """Ready, and seen so by the node controller: the ``not-ready`` taint every node registers
    with (pods are not scheduled there) is gone."""
    return ready_condition(node) and not any(
        t.get("key") == NOT_READY_TAINT for t in node.get("spec", {}).get("taints") or [])

"""Docker SDK clients for a node: its unix socket (the provider's own path) or its TLS endpoint."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import weakref

import docker

from jeroboam.pki import KeyPair

# The node dockerds are Debian's 20.10, which speaks at most API 1.41; newer engines accept it.
API_VERSION = "1.41"


def _client(base_url: str, timeout: float, tls=None) -> docker.DockerClient:
    client = docker.DockerClient(base_url=base_url, version=API_VERSION, timeout=timeout, tls=tls)
    # requests would let REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override the cluster CA, and
    # HTTP(S)_PROXY send node traffic to a proxy: the environment has no say here.
    client.api.trust_env = False
    return client


def socket_client(socket_path: str, timeout: float = 30) -> docker.DockerClient:
    return _client(f"unix://{socket_path}", timeout)


def tls_client(endpoint: str, ca_cert_pem: str, client_cert: KeyPair | None,
               timeout: float = 30) -> docker.DockerClient:
    """A client for ``tcp://IP:2376`` verifying the server with the cluster CA.

    The SDK reads certificates from files on every new connection, so they live in a private
    temporary directory removed once the client is garbage collected.
    """
    tmp = tempfile.mkdtemp(prefix="jeroboam-tls-")
    ca_path = os.path.join(tmp, "ca.pem")
    files = {ca_path: ca_cert_pem}
    cert = None
    if client_cert is not None:
        cert = (os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem"))
        files.update({cert[0]: client_cert.cert_pem, cert[1]: client_cert.key_pem})
    for path, text in files.items():
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(text)
    tls = docker.tls.TLSConfig(client_cert=cert, ca_cert=ca_path, verify=True)
    client = _client(endpoint, timeout, tls)
    weakref.finalize(client, shutil.rmtree, tmp, True)
    return client


def ping(socket_path: str, timeout: float = 1.0) -> bool:
    """GET /_ping on a unix socket without the SDK: the start path polls this every 20 ms."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(socket_path)
            s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return s.recv(64).split(b" ", 2)[1:2] == [b"200"]
    except OSError:
        return False

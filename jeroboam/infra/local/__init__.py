"""The ``local`` infrastructure provider: nodes as network namespaces with their own dockerd, on
one Linux host."""

from .clients import API_VERSION, ping, socket_client, tls_client
from .host import InfraError, InfraTimeout
from .images import BASE_IMAGE, ImageTarball
from .provider import (DEFAULT_ADDRESS_POOLS, DEFAULT_STATE_DIR, NETWORK_TYPE, NODE_TYPE,
                       TLS_PORT, LocalProvider, NetworkInfo, NodeInfo, NodeSpec)

__all__ = [
    "API_VERSION", "BASE_IMAGE", "DEFAULT_ADDRESS_POOLS", "DEFAULT_STATE_DIR", "NETWORK_TYPE",
    "NODE_TYPE", "TLS_PORT",
    "ImageTarball", "InfraError", "InfraTimeout", "LocalProvider", "NetworkInfo", "NodeInfo",
    "NodeSpec", "ping", "socket_client", "tls_client",
]

"""Who is calling: identity from noauth headers, or from a Keystone token.

noauth takes X-Project-Id, X-User-Id and X-Roles as a trusted proxy (or a test)
would set them; a caller sending none of them gets the configured defaults, so
that plain `curl` and `openstack --os-auth-type none` work. keystone validates X-Auth-Token against
Keystone's /v3/auth/tokens and keeps the answer for token_cache_seconds.
"""

from __future__ import annotations

import functools
import ipaddress
import threading
import time
from dataclasses import dataclass

from jeroboam.api.errors import Forbidden, Unauthorized
from jeroboam.api.policy import expand_roles


@dataclass(frozen=True)
class RequestContext:
    project_id: str
    user_id: str
    roles: frozenset[str]
    request_id: str
    version: tuple[int, int] = (1, 1)

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles


def _split_roles(value: str) -> frozenset[str]:
    return expand_roles(r.strip().lower() for r in value.split(",") if r.strip())


@functools.lru_cache(maxsize=256)
def _loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback (a port may follow)."""
    name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class NoAuth:
    def __init__(self, settings):
        self.project = settings.get("auth", "noauth_project")
        self.user = settings.get("auth", "noauth_user")
        self.roles = settings.get("auth", "noauth_roles")
        self.any_host = bool(settings.get("auth", "noauth_allow_remote"))

    def identify(self, headers) -> tuple[str, str, frozenset[str]]:
        host = headers.get("host", "")
        if host and not self.any_host and not _loopback_host(host):
            # A web page whose name was rebound to 127.0.0.1 speaks to us same-origin, with its
            # own name in Host: without this it could act as the operator.
            raise Forbidden(f"noauth serves requests addressed to loopback only, not to {host}: "
                            "set [auth] noauth_allow_remote = true to serve other names.")
        project = headers.get("x-project-id") or headers.get("x-tenant-id")
        roles = headers.get("x-roles")
        if project is None and roles is None:
            # An anonymous caller (curl, `openstack --os-auth-type none`) is the local operator.
            return self.project, headers.get("x-user-id") or self.user, _split_roles(self.roles)
        # A caller that names its project speaks for itself: no roles sent means none held.
        return project or self.project, headers.get("x-user-id") or self.user, _split_roles(roles or "")


class KeystoneAuth:
    def __init__(self, settings):
        from keystoneauth1 import session as ks_session
        from keystoneauth1.identity import v3

        self.url = settings.get("auth", "keystone_url").rstrip("/")
        domain = settings.get("auth", "keystone_domain")
        auth = v3.Password(
            auth_url=f"{self.url}/v3", username=settings.get("auth", "keystone_username"),
            password=settings.get("auth", "keystone_password"),
            project_name=settings.get("auth", "keystone_project"),
            user_domain_name=domain, project_domain_name=domain)
        self.session = ks_session.Session(auth=auth)
        self.ttl = float(settings.get("auth", "token_cache_seconds"))
        self._cache: dict[str, tuple[float, tuple]] = {}
        self._lock = threading.Lock()

    def identify(self, headers) -> tuple[str, str, frozenset[str]]:
        token = headers.get("x-auth-token")
        if not token:
            raise Unauthorized("no token", headers={"WWW-Authenticate": f'Keystone uri="{self.url}"'})
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(token)
        if hit and hit[0] > now:
            return hit[1]
        identity = self._validate(token)
        with self._lock:
            self._cache[token] = (now + self.ttl, identity)
        return identity

    def _validate(self, token: str):
        response = self.session.get(
            f"{self.url}/v3/auth/tokens", headers={"X-Subject-Token": token}, raise_exc=False)
        if response.status_code != 200:
            raise Unauthorized("invalid token", headers={"WWW-Authenticate": f'Keystone uri="{self.url}"'})
        body = response.json()["token"]
        roles = expand_roles(r["name"].lower() for r in body.get("roles", []))
        project = (body.get("project") or {}).get("id") or body["user"]["id"]
        return project, body["user"]["id"], roles


def make_auth(settings):
    strategy = settings.get("auth", "strategy")
    if strategy == "noauth":
        return NoAuth(settings)
    if strategy == "keystone":
        return KeystoneAuth(settings)
    raise ValueError(f"unknown auth strategy {strategy!r} (noauth or keystone)")

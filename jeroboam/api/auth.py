"""Who is calling: identity from noauth headers, or from a Keystone token.

noauth takes X-Project-Id, X-User-Id and X-Roles as a trusted proxy (or a test)
would set them; a caller sending none of them gets the configured defaults, so
that plain `curl` and `openstack --os-auth-type none` work.

keystone hands X-Auth-Token to keystonemiddleware's auth_token, called as the
WSGI middleware it is (its own [keystone_authtoken] options, which it reads from
Jeroboam's configuration, retries, and 503 when Keystone cannot be reached), in a
worker thread so that a slow Keystone never stalls the event loop. A bounded LRU cache sits in front of it; an entry
lives token_cache_time seconds but never past the token's expires_at.

Either way a role implies the roles Keystone's defaults say it does.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from jeroboam.api.errors import Forbidden, ServiceUnavailable, Unauthorized
from jeroboam.api.policy import expand_roles

LOG = logging.getLogger("jeroboam.keystone")
Identity = tuple[str, str, frozenset[str]]

GROUP = "keystone_authtoken"
# What each service-user plugin cannot do without.
REQUIRED = {"password": ("auth_url", "username", "password"), "v3password": ("auth_url", "username", "password")}


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
        self.roles = expand_roles(r.lower() for r in settings.get("auth", "noauth_roles"))
        self.any_host = settings.get("auth", "noauth_allow_remote")

    async def identify(self, headers) -> Identity:
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
            return self.project, headers.get("x-user-id") or self.user, self.roles
        # A caller that names its project speaks for itself: no roles sent means none held.
        return project or self.project, headers.get("x-user-id") or self.user, _split_roles(roles or "")


def _accept(environ, start_response):
    """The application behind the middleware: reached only with a valid token."""
    start_response("204 No Content", [])
    return []


class _NoCache:
    """The middleware's token cache (its `cache` option): a no-op, since the bounded cache in
    front of the middleware replaces its in-process one, which has no size limit."""

    def get(self, key):
        return None

    def set(self, key, value, time=0):
        pass


_NO_CACHE = _NoCache()


class KeystoneAuth:
    CACHE_KEY = "jeroboam.keystone.no_cache"

    def __init__(self, settings):
        import cachetools
        from keystonemiddleware import auth_token

        uri = settings.get(GROUP, "www_authenticate_uri") or settings.get(GROUP, "auth_url")
        self.challenge = {"WWW-Authenticate": f'Keystone uri="{uri}"'}
        # The middleware reads [keystone_authtoken] from Jeroboam's configuration; what is given
        # here, as a paste pipeline would, takes precedence.
        self._middleware = auth_token.AuthProtocol(_accept, {
            "oslo_config_config": settings.conf, "www_authenticate_uri": uri, "cache": self.CACHE_KEY,
            "delay_auth_decision": False, "service_token_roles_required": True})
        self.ttl = float(settings.get(GROUP, "token_cache_time"))
        self._cache = cachetools.TLRUCache(maxsize=settings.get("auth", "token_cache_size"),
                                           ttu=lambda _token, entry, _now: entry[1], timer=time.monotonic)
        self._lock = threading.Lock()

    async def identify(self, headers) -> Identity:
        import anyio.to_thread

        token = (headers.get("x-auth-token") or "").strip()
        if not token:
            raise Unauthorized("no token", headers=self.challenge)
        with self._lock:
            entry = self._cache.get(token)
        if entry is not None:
            return entry[0]
        identity, deadline = await anyio.to_thread.run_sync(self._validate, token)
        if self.ttl > 0:
            with self._lock:
                self._cache[token] = (identity, deadline)
        return identity

    def _validate(self, token: str) -> tuple[Identity, float]:
        """Ask keystonemiddleware (blocking); returns the identity and until when it may be cached."""
        import webob
        from keystoneauth1 import access
        from keystoneauth1 import exceptions as ksa_exceptions

        request = webob.Request.blank("/", headers={"X-Auth-Token": token}, environ={self.CACHE_KEY: _NO_CACHE})
        try:
            status = request.get_response(self._middleware).status_int
        except ksa_exceptions.ConnectionError as exc:
            # The middleware answers 503 for a refused connection but lets a timed-out one through.
            LOG.error("Keystone did not answer: %s", exc)
            status = 503
        if status == 503:
            raise ServiceUnavailable("The Keystone service is temporarily unavailable.")
        if status != 204:
            raise Unauthorized("invalid token", headers=self.challenge)
        # The middleware leaves Keystone's answer in the request environment.
        auth_ref = access.create(body=request.environ["keystone.token_info"], auth_token=token)
        if not auth_ref.project_id:
            raise Forbidden("A project-scoped token is required.")
        identity = (auth_ref.project_id, auth_ref.user_id,
                    expand_roles(r.lower() for r in auth_ref.role_names))
        remaining = (auth_ref.expires - datetime.now(timezone.utc)).total_seconds()
        return identity, time.monotonic() + min(self.ttl, remaining)


def check_settings(settings) -> str | None:
    """What keeps the configured strategy from working, in one line; None when nothing does."""
    if settings.get("api", "auth_strategy") == "noauth":
        return None
    auth_type = settings.get(GROUP, "auth_type")
    missing = [name for name in REQUIRED.get(auth_type, ("auth_url",)) if not settings.get(GROUP, name)]
    if missing:
        return (f"--auth keystone needs [keystone_authtoken] {', '.join(missing)} "
                f"(or JEROBOAM_KEYSTONE_AUTHTOKEN_{missing[0].upper()})")
    return None


def make_auth(settings):
    problem = check_settings(settings)
    if problem:
        raise ValueError(problem)
    return KeystoneAuth(settings) if settings.get("api", "auth_strategy") == "keystone" else NoAuth(settings)

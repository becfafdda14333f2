"""The ASGI application: routes, the root documents, and the per-request middleware."""

from __future__ import annotations

import gc
import importlib
import logging
import time
import uuid

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jeroboam import config
from jeroboam.api import microversions, openapi
from jeroboam.api.health import HealthCheck
from jeroboam.api.metrics import MetricsEndpoint, RequestMetrics
from jeroboam.api.auth import make_auth
from jeroboam.api.errors import router_error
from jeroboam.api.policy import Policy
from jeroboam.api.routing import json_response, base_url
from jeroboam.db.base import make_engine, make_sessionmaker
from jeroboam.drivers import Registry

ACCESS_LOG = logging.getLogger("jeroboam.access")
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
RESOURCE_MODULES = ["clustertemplates", "clusters", "nodegroups", "certificates", "quotas", "federations",
                    "tasks", "stacks"]
V1_COLLECTIONS = ["clustertemplates", "clusters", "quotas", "certificates", "mservices", "stats", "federations",
                  "credentials"]


def resources():
    return [r for name in RESOURCE_MODULES for r in importlib.import_module(f"jeroboam.api.{name}").RESOURCES]


async def root(request: Request) -> Response:
    base = base_url(request)
    return json_response({
        "name": "OpenStack Magnum API",
        "description": "Magnum is an OpenStack project which aims to provide container cluster management.",
        "versions": [{"id": "v1", "links": [{"href": f"{base}/v1/", "rel": "self"}], "status": "CURRENT",
                      "max_version": microversions.fmt(microversions.MAX),
                      "min_version": microversions.fmt(microversions.MIN)}],
    }, 200, {"x-openstack-request-id": request.scope["state"]["request_id"]})


async def v1_root(request: Request) -> Response:
    base = base_url(request)
    body = {
        "id": "v1",
        "media_types": [{"base": "application/json", "type": "application/vnd.openstack.magnum.v1+json"}],
        "links": [{"href": f"{base}/v1/", "rel": "self"},
                  {"href": "http://docs.openstack.org/developer/magnum/dev/api-spec-v1.html",
                   "rel": "describedby", "type": "text/html"}],
    }
    for name in V1_COLLECTIONS:
        body[name] = [{"href": f"{base}/v1/{name}/", "rel": "self"}, {"href": f"{base}/{name}/", "rel": "bookmark"}]
    body["nodegroups"] = [{"href": f"{base}/v1/clusters/{{cluster_id}}/nodegroups", "rel": "self"},
                          {"href": f"{base}/clusters/{{cluster_id}}/nodegroups", "rel": "bookmark"}]
    body["tasks"] = [{"href": f"{base}/v1/tasks/", "rel": "self"}, {"href": f"{base}/tasks/", "rel": "bookmark"}]
    headers = {"x-openstack-request-id": request.scope["state"]["request_id"], **microversions.DEFAULT_HEADERS}
    return json_response(body, 200, headers)


async def openapi_document(request: Request) -> Response:
    return json_response(request.app.state.openapi, 200, {})


async def not_found(scope, receive, send) -> None:
    response = Response(router_error(404, "Not Found"), 404, media_type="application/json",
                        headers={"x-openstack-request-id": scope["state"]["request_id"]})
    await response(scope, receive, send)


class RequestMiddleware:
    """Gives each request an id, routes Magnum's path aliases, and logs one line per request.

    `/clusters` is served as `/v1/clusters` (Magnum routes any first segment
    that is not `v1` that way) and a trailing slash is dropped.
    """

    PASS_THROUGH = ("/", "/v1", "/healthcheck", "/metrics")

    def __init__(self, app, access_log: bool, observe=None):
        self.app = app
        self.access_log = access_log
        self.observe = observe  # observe(scope, status, seconds) after each request: the metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        request_id = f"req-{uuid.uuid4()}"
        scope.setdefault("state", {})["request_id"] = request_id
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/") or "/"
        if path not in self.PASS_THROUGH and not path.startswith("/v1/"):
            path = "/v1" + path
        scope["path"] = path
        status = 500

        async def send_with_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            elapsed = time.perf_counter() - start
            if self.access_log:
                ACCESS_LOG.info('request_id=%s method=%s path="%s" status=%d duration_ms=%.2f', request_id,
                                scope["method"], scope["path"], status, elapsed * 1000)
            if self.observe:
                self.observe(scope, status, elapsed)


def create_app(settings: config.Settings | None = None, engine=None) -> Starlette:
    settings = settings or config.load()
    engine = engine or make_engine(settings.database_url)
    all_resources = resources()
    health = HealthCheck(engine, settings.get("healthcheck", "disable_by_file_path"))
    routes = [Route("/", root), Route("/v1", v1_root), Route("/healthcheck", health.__call__, methods=["GET", "HEAD"]),
              Route("/v1/openapi.json", openapi_document)]
    metrics = bool(settings.get("metrics", "enabled"))
    if metrics:
        routes.append(Route("/metrics", MetricsEndpoint(engine).__call__))
    # Every method reaches the resource, which answers 405 itself in Magnum's error shape.
    routes += [Route(r.path, r.__call__, methods=ALL_METHODS) for r in all_resources]
    app = Starlette(routes=routes)
    app.router.default = not_found
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_sessionmaker(engine)
    # Reads need no transaction: on PostgreSQL this saves the BEGIN and COMMIT round trips.
    app.state.read_session_factory = make_sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))
    app.state.policy = Policy(settings.conf)
    app.state.auth = make_auth(settings)
    disabled = settings.get("drivers", "disabled_drivers")
    app.state.drivers = lambda: Registry(disabled)
    app.state.openapi = openapi.document(all_resources)
    # Everything loaded so far lives as long as the process: keep it out of the garbage
    # collector's sight, so that a list of 1000 objects does not trigger full collections
    # that walk it all (measured: 28% of a list request's time).
    gc.collect()
    gc.freeze()
    return RequestMiddleware(app, settings.get("api", "access_log"),
                             RequestMetrics(app.routes) if metrics else None)

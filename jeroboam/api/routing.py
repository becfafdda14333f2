"""Endpoints and the one dispatcher every request goes through.

For each request the dispatcher: negotiates the microversion, identifies the
caller, picks the body and query schemas for that version and checks them,
runs the handler inside one database transaction, and turns any APIError into
Magnum's error body. Handlers are plain synchronous functions of a `Call`:
their work is a few short queries, so they run inline on the event loop rather
than paying a thread hop per request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable

import orjson
from starlette.requests import Request
from starlette.responses import Response

from jeroboam import lifecycle
from jeroboam.api import microversions
from jeroboam.api.auth import RequestContext
from jeroboam.api.errors import APIError, BadRequest, RequestTooLarge, UnsupportedMediaType, error_body, router_error
from jeroboam.api.schemas import pick
from jeroboam.api.validation import Body, Query, parse_json
from jeroboam.states import InvalidTransition
from jeroboam.tasks import queue

LOG = logging.getLogger("jeroboam.api")


@dataclass
class Endpoint:
    handler: Callable
    summary: str
    status: int = 200
    min_version: tuple[int, int] = (1, 1)
    body: list | Body | None = None
    query: list | Query | None = None
    # For the OpenAPI document: the response's schema, when it has a body.
    response: dict | None = None
    # The [api] option bounding the request body (Magnum's, or Heat's for the stacks API).
    body_limit: str = "max_request_body_size"


@dataclass
class Call:
    """Everything a handler needs about one request."""

    ctx: RequestContext
    session: object
    state: object
    path: dict
    query: dict
    body: object
    base_url: str
    enqueued: bool = False

    @property
    def version(self) -> tuple[int, int]:
        return self.ctx.version

    def queue_task(self, action: str, resource_type: str, resource_uuid: str, payload: dict | None = None,
                   begin: Iterable[tuple[object, str]] = (), lock_key: str | None = None) -> dict:
        """Queue a task in this request's transaction, beginning its operation on the clusters
        and nodegroups of `begin` ((object, event) pairs; 400 where the state table refuses);
        returns the header naming the task."""
        try:
            task = lifecycle.begin(self.session, begin, lambda: queue.enqueue(
                self.session, action, resource_type, resource_uuid, self.ctx.project_id, self.ctx.user_id,
                payload, lock_key))
        except InvalidTransition as exc:
            raise BadRequest(exc.refusal) from None
        self.enqueued = True
        return {"Location": f"{self.base_url}/v1/tasks/{task.uuid}"}

    def link(self, resource: str, ident: str) -> list[dict]:
        return [{"href": f"{self.base_url}/v1/{resource}/{ident}", "rel": "self"},
                {"href": f"{self.base_url}/{resource}/{ident}", "rel": "bookmark"}]


@dataclass
class Reply:
    body: object = None
    status: int | None = None
    headers: dict = field(default_factory=dict)


def json_response(body, status: int, headers: dict) -> Response:
    content = b"" if body is None else orjson.dumps(body)
    return Response(content, status, headers=headers, media_type=None if body is None else "application/json")


def base_url(request: Request) -> str:
    scope = request.scope
    host = request.headers.get("host") or f"{scope['server'][0]}:{scope['server'][1]}"
    return f"{scope['scheme']}://{host}{scope.get('root_path', '')}"


class Resource:
    """The endpoints of one path, by HTTP method."""

    def __init__(self, path: str, **methods: Endpoint):
        self.path = path
        self.methods = {m.upper(): e for m, e in methods.items()}
        self.allow = ", ".join(sorted(self.methods))

    async def __call__(self, request: Request) -> Response:
        state = request.app.state
        request_id = request.scope["state"]["request_id"]
        headers = {"x-openstack-request-id": request_id}
        endpoint = self.methods.get(request.method)
        if endpoint is None:
            return Response(router_error(405, "Method Not Allowed"), 405,
                            headers={**headers, "Allow": self.allow}, media_type="application/json")
        try:
            limit = state.settings.get("api", endpoint.body_limit)
            _check_body_headers(request, endpoint.body_limit, limit)
            version = microversions.negotiate(request.headers.get(microversions.HEADER))
        except APIError as exc:
            return Response(exc.body(), exc.status, headers={**headers, **exc.headers},
                            media_type="application/json")
        version_str = microversions.fmt(version)
        headers.update(microversions.response_headers(version_str)
                       if version != microversions.MIN else microversions.DEFAULT_HEADERS)
        try:
            if version < endpoint.min_version:
                raise microversions.too_old(version)
            project, user, roles = await state.auth.identify(request.headers)
            ctx = RequestContext(project, user, roles, request_id, version)
            query = self._check_query(endpoint, version, request)
            body = await self._check_body(endpoint, version, request, limit)
            factory = state.read_session_factory if request.method == "GET" else state.session_factory
            with factory() as session:
                call = Call(ctx, session, state, dict(request.path_params), query, body, base_url(request))
                with session.begin():
                    reply = endpoint.handler(call)
            if call.enqueued:
                queue.work_available.set()
        except APIError as exc:
            return Response(exc.body(), exc.status, headers={**headers, **exc.headers},
                            media_type="application/json")
        except Exception:
            LOG.exception("request %s failed", request_id)
            return Response(error_body(500, "Internal Server Error.", "server"), 500, headers=headers,
                            media_type="application/json")
        if not isinstance(reply, Reply):
            reply = Reply(reply)
        return json_response(reply.body, reply.status or endpoint.status, {**headers, **reply.headers})

    @staticmethod
    def _check_query(endpoint: Endpoint, version, request: Request) -> dict:
        schema = endpoint.query
        if isinstance(schema, list):
            schema = pick(schema, version)
        if schema is None:
            return {}
        return schema.check(request.query_params)

    @staticmethod
    async def _check_body(endpoint: Endpoint, version, request: Request, limit: int):
        if endpoint.body is None:
            # Endpoints without a body schema ignore what comes (CA rotation gets octet-stream).
            return None
        schema = pick(endpoint.body, version) if isinstance(endpoint.body, list) else endpoint.body
        # Read in chunks up to the limit: a chunked body announces no length to check beforehand.
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(endpoint.body_limit, limit)
            chunks.append(chunk)
        return schema.check(parse_json(b"".join(chunks)))


# Content types a web page may send cross-site without the browser asking first (CORS
# "simple" requests): a body of one of these must never act, whatever it holds.
FORM_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})


def _too_large(option: str, limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"Request is too large: the limit is {limit} bytes ([api] {option}).")


def _check_body_headers(request: Request, option: str, limit: int) -> None:
    """413 for a body announced above the limit; 415 for a body that is not JSON (JSON Patch
    bodies may say application/json-patch+json), and for a form type even without a body.
    An empty body of another type passes: magnumclient's CA rotation sends octet-stream."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    headers = request.headers
    length = headers.get("content-length", "")
    if length.isascii() and length.isdigit() and int(length) > limit:
        raise _too_large(option, limit)
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    is_json = media_type == "application/json" or (media_type.startswith("application/")
                                                   and media_type.endswith("+json"))
    has_body = length not in ("", "0") or "transfer-encoding" in headers
    if media_type in FORM_TYPES or (has_body and not is_json):
        raise UnsupportedMediaType(f"Unknown mimetype: {media_type or 'none'}. Request bodies must be "
                                   "application/json.")

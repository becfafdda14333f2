"""Errors in the API-WG shape that Magnum answers with, and the exceptions that raise them.

`title` is the message up to its first full stop and `detail` the whole of it;
`request_id` is always "" on the wire (the id travels in x-openstack-request-id).
"""

from __future__ import annotations

import orjson


class APIError(Exception):
    status = 500
    code = "client"

    def __init__(self, message: str, status: int | None = None, headers: dict | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.status, self.message, self.code)


class BadRequest(APIError):
    status = 400


class Forbidden(APIError):
    status = 403


class NotFound(APIError):
    status = 404


class Conflict(APIError):
    status = 409


class ServiceUnavailable(APIError):
    """A service this one depends on (Keystone) cannot be reached."""

    status = 503
    code = "server"


class WebobError(APIError):
    """What Magnum's middleware (not its controllers) refuses: the status phrase as title,
    the explanation as detail, no code."""

    code = ""
    title = ""

    def body(self) -> bytes:
        return orjson.dumps({"errors": [{
            "request_id": "", "code": "", "status": self.status, "title": self.title,
            "detail": self.message, "links": []}]})


class NotAcceptable(WebobError):
    """A header or version the router cannot serve."""

    status = 406
    title = "Not Acceptable"


class RequestTooLarge(WebobError):
    status = 413
    title = "Request Entity Too Large"


class UnsupportedMediaType(APIError):
    status = 415


class Unauthorized(APIError):
    """What keystonemiddleware answers for a missing or bad token."""

    status = 401

    def body(self) -> bytes:
        return orjson.dumps({"error": {"code": 401, "title": "Unauthorized",
                                       "message": "The request you have made requires authentication."}})


def invalid_input(field: str, value, reason: str) -> BadRequest:
    return BadRequest(f"Invalid input for field/attribute {field}. Value: '{value}'. {reason}")


def title_of(message: str) -> str:
    return message.split(".", 1)[0] if "." in message else message


def error_body(status: int, message: str, code: str = "client") -> bytes:
    return orjson.dumps({"errors": [{
        "request_id": "", "code": code, "status": status, "title": title_of(message),
        "detail": message, "links": []}]})


def router_error(status: int, title: str) -> bytes:
    """404 for an unknown path, 405: the router's own errors carry an empty code and detail."""
    return orjson.dumps({"errors": [{
        "request_id": "", "code": "", "status": status, "title": title, "detail": "", "links": []}]})

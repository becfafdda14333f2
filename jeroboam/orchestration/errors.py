"""Errors of the orchestration layer; the API maps them to HTTP statuses."""

from __future__ import annotations


class TemplateError(Exception):
    """A template, parameter or property problem, located by its dotted path (HTTP 400)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class StackNotFound(Exception):
    """No such stack (HTTP 404)."""


class StackConflict(Exception):
    """The stack's state forbids the request, e.g. an action already in progress (HTTP 409)."""

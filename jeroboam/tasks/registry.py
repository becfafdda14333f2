"""The actions a task may carry, and what runs them.

An action names its handler (run by a worker with a TaskContext) and the hooks
that move its resource along when the task ends. The hooks run in the same
transaction as the task's final state, so a resource never disagrees with its
task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from sqlalchemy.orm import Session


@dataclass(frozen=True)
class Action:
    name: str
    resource_type: str
    handler: Callable  # handler(ctx: TaskContext) -> None
    cancellable: bool = False
    # hook(session, task) and hook(session, task, reason)
    on_success: Callable[[Session, object], None] | None = None
    on_failure: Callable[[Session, object, str], None] | None = None


_ACTIONS: dict[str, Action] = {}


def register(action: Action) -> Action:
    _ACTIONS[action.name] = action
    return action


def get(name: str) -> Action:
    _load_builtin_actions()
    return _ACTIONS[name]


def known(name: str) -> bool:
    _load_builtin_actions()
    return name in _ACTIONS


def _load_builtin_actions() -> None:
    # Importing the modules registers their actions; deferred to avoid import cycles.
    import jeroboam.conductor  # noqa: F401
    import jeroboam.orchestration.actions  # noqa: F401

"""Task actions that run stacks: stack.create, stack.update, stack.delete.

The API records the intent (the stack is ACTION_IN_PROGRESS) and queues the
task; the handler runs the engine, which resumes from the stored state when a
task is taken over from a worker that died. A rollback after a failure runs
within the same task. The task succeeds when the stack reaches the requested
ACTION_COMPLETE; it fails otherwise (ROLLBACK_COMPLETE included: the action
did not happen), and is cancelled when a cancel request stopped it.
"""

from __future__ import annotations

from jeroboam.orchestration.engine import Engine, stack_event
from jeroboam.orchestration.errors import StackNotFound
from jeroboam.orchestration.resources.base import Services
from jeroboam.orchestration.sql_store import SqlStore
from jeroboam.orchestration.store import COMPLETE, DELETE, FAILED, IN_PROGRESS
from jeroboam.orchestration.template import Limits
from jeroboam.tasks import registry
from jeroboam.tasks.context import TaskCancelled, TaskContext

ACTIONS = {"stack.create": "CREATE", "stack.update": "UPDATE", "stack.delete": "DELETE"}


class StackActionFailed(Exception):
    pass


def run_stack(ctx: TaskContext) -> None:
    engine = Engine(SqlStore(ctx.session_factory, fence=ctx.owned), limits=Limits.from_settings(ctx.settings),
                    services=Services(ctx.settings, ctx.session_factory))
    stack_id = ctx.resource_uuid
    cancelled = []

    def cancel() -> bool:
        try:
            ctx.check_cancel()
        except TaskCancelled:
            cancelled.append(True)
            return True
        return False

    def step() -> None:
        if ctx.action == "stack.delete":
            # Queued behind a running action (DELETE of a busy stack): begin once it has settled.
            try:
                stack = engine.store.get_stack(stack_id)
                if stack.state != f"{DELETE}_{COMPLETE}" and not (
                        stack.action == DELETE and stack.status == IN_PROGRESS):
                    engine.delete_stack(stack_id)
            except StackNotFound:
                return
        stack = engine.run(stack_id, cancel=cancel)
        if cancelled:
            raise TaskCancelled(stack.status_reason)
        if stack.state != f"{ACTIONS[ctx.action]}_{COMPLETE}":
            raise StackActionFailed(f"{stack.state}: {stack.status_reason}")

    ctx.plan([ctx.action])
    ctx.run_step(ctx.action, step)


def settle_stack(session, task, reason: str) -> None:
    """A task that ends without the engine settling the stack (cancelled before it
    started, or failed outside the engine) leaves it FAILED, not IN_PROGRESS forever."""
    store = SqlStore(session=session)
    try:
        stack = store.get_stack(task.resource_uuid)
    except StackNotFound:
        return
    if stack.status == IN_PROGRESS:
        stack.status, stack.status_reason = FAILED, f"{task.action} ended: {reason}"
        store.save(stack, [], [], [stack_event(stack)])


for _name in ACTIONS:
    registry.register(registry.Action(_name, "stack", run_stack, cancellable=True, on_failure=settle_stack))

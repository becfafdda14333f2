"""Every lifecycle in one place: a table of (state, event) -> state per kind of object.

An event that the table does not list for the current state is an error
(InvalidTransition), never a silent no-op: a cluster cannot be resized while it
is being deleted, and a finished task cannot finish twice.
"""

from __future__ import annotations

from dataclasses import dataclass


class InvalidTransition(Exception):
    def __init__(self, machine: str, state: str | None, event: str):
        super().__init__(f"{machine}: event {event!r} is not allowed in state {state!r}")
        self.machine, self.state, self.event = machine, state, event

    @property
    def refusal(self) -> str:
        """What Magnum answers (400) for an operation on a busy object."""
        return f'Updating a {self.machine} when status is "{self.state}" is not supported.'


@dataclass(frozen=True)
class StateMachine:
    name: str
    transitions: dict[tuple[str | None, str], str]

    def next(self, state: str | None, event: str) -> str:
        try:
            return self.transitions[(state, event)]
        except KeyError:
            raise InvalidTransition(self.name, state, event) from None

    def allows(self, state: str | None, event: str) -> bool:
        return (state, event) in self.transitions


# --- Clusters and nodegroups (Magnum's status enum) -------------------------------------

CREATE_IN_PROGRESS = "CREATE_IN_PROGRESS"
CREATE_FAILED = "CREATE_FAILED"
CREATE_COMPLETE = "CREATE_COMPLETE"
UPDATE_IN_PROGRESS = "UPDATE_IN_PROGRESS"
UPDATE_FAILED = "UPDATE_FAILED"
UPDATE_COMPLETE = "UPDATE_COMPLETE"
DELETE_IN_PROGRESS = "DELETE_IN_PROGRESS"
DELETE_FAILED = "DELETE_FAILED"
DELETE_COMPLETE = "DELETE_COMPLETE"
RESUME_COMPLETE = "RESUME_COMPLETE"
RESUME_FAILED = "RESUME_FAILED"
RESTORE_COMPLETE = "RESTORE_COMPLETE"
ROLLBACK_IN_PROGRESS = "ROLLBACK_IN_PROGRESS"
ROLLBACK_FAILED = "ROLLBACK_FAILED"
ROLLBACK_COMPLETE = "ROLLBACK_COMPLETE"
SNAPSHOT_COMPLETE = "SNAPSHOT_COMPLETE"
CHECK_COMPLETE = "CHECK_COMPLETE"
ADOPT_COMPLETE = "ADOPT_COMPLETE"

CLUSTER_STATUSES = (
    CREATE_IN_PROGRESS, CREATE_FAILED, CREATE_COMPLETE, UPDATE_IN_PROGRESS, UPDATE_FAILED,
    UPDATE_COMPLETE, DELETE_IN_PROGRESS, DELETE_FAILED, DELETE_COMPLETE, RESUME_COMPLETE,
    RESUME_FAILED, RESTORE_COMPLETE, ROLLBACK_IN_PROGRESS, ROLLBACK_FAILED, ROLLBACK_COMPLETE,
    SNAPSHOT_COMPLETE, CHECK_COMPLETE, ADOPT_COMPLETE,
)
FAILED_STATUSES = frozenset({CREATE_FAILED, UPDATE_FAILED, DELETE_FAILED, ROLLBACK_FAILED, RESUME_FAILED})
IN_PROGRESS_STATUSES = frozenset({CREATE_IN_PROGRESS, UPDATE_IN_PROGRESS, DELETE_IN_PROGRESS, ROLLBACK_IN_PROGRESS})
DELETE_STATUSES = frozenset({DELETE_IN_PROGRESS, DELETE_FAILED, DELETE_COMPLETE})
# Magnum's "stable-OK" set: the states from which an update may start.
STABLE_STATUSES = frozenset({
    CREATE_COMPLETE, UPDATE_COMPLETE, RESUME_COMPLETE, RESTORE_COMPLETE, ROLLBACK_COMPLETE,
    SNAPSHOT_COMPLETE, CHECK_COMPLETE, ADOPT_COMPLETE,
})
HEALTH_STATUSES = ("HEALTHY", "UNHEALTHY", "UNKNOWN")


def _outcomes() -> dict[tuple[str | None, str], str]:
    """Create, update and delete each start in progress and end complete or failed."""
    table: dict[tuple[str | None, str], str] = {(None, "create"): CREATE_IN_PROGRESS}
    for started, complete, failed in ((CREATE_IN_PROGRESS, CREATE_COMPLETE, CREATE_FAILED),
                                      (UPDATE_IN_PROGRESS, UPDATE_COMPLETE, UPDATE_FAILED),
                                      (DELETE_IN_PROGRESS, DELETE_COMPLETE, DELETE_FAILED)):
        table[(started, "succeed")] = complete
        table[(started, "fail")] = failed
    return table


def _cluster_transitions() -> dict[tuple[str | None, str], str]:
    table = _outcomes()
    # PATCH, upgrade, CA rotation and auto-heal start only from a stable state.
    for state in STABLE_STATUSES:
        table[(state, "update")] = UPDATE_IN_PROGRESS
    # Resize and nodegroup changes may also repair a failed update, or follow one still in
    # progress (Magnum accepts both): they queue behind it, one operation per cluster.
    for state in STABLE_STATUSES | {UPDATE_FAILED, UPDATE_IN_PROGRESS}:
        table[(state, "resize")] = UPDATE_IN_PROGRESS
    # Delete is accepted from anywhere but a finished delete.
    for state in CLUSTER_STATUSES:
        if state != DELETE_COMPLETE:
            table[(state, "delete")] = DELETE_IN_PROGRESS
    return table


CLUSTER = StateMachine("cluster", _cluster_transitions())

# Nodegroups share the enum; their own operations move them, the cluster moves alongside.
NODEGROUP = StateMachine("nodegroup", {
    **_outcomes(),
    # A nodegroup may be changed again after a failure (a resize repairs it), or while an
    # update of it is still under way (the change queues behind it).
    **{(s, "update"): UPDATE_IN_PROGRESS for s in STABLE_STATUSES | FAILED_STATUSES | {UPDATE_IN_PROGRESS}},
    **{(s, "delete"): DELETE_IN_PROGRESS for s in CLUSTER_STATUSES if s != DELETE_COMPLETE},
})


# --- Tasks -----------------------------------------------------------------------------

PENDING = "PENDING"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TASK_STATES = (PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED)
TASK_DONE = frozenset({SUCCEEDED, FAILED, CANCELLED})

TASK = StateMachine("task", {
    (None, "enqueue"): PENDING,
    (PENDING, "claim"): RUNNING,
    # A worker whose lease ran out is presumed dead; another one takes the task over.
    (RUNNING, "take_over"): RUNNING,
    (RUNNING, "succeed"): SUCCEEDED,
    (RUNNING, "fail"): FAILED,
    (PENDING, "fail"): FAILED,
    (RUNNING, "cancel"): CANCELLED,
    (PENDING, "cancel"): CANCELLED,
})

# Steps of a task: the unit a taken-over task resumes from.
STEP = StateMachine("step", {
    (None, "plan"): PENDING,
    (PENDING, "start"): RUNNING,
    # A step that was running when its worker died is run again (steps are idempotent).
    (RUNNING, "start"): RUNNING,
    (FAILED, "start"): RUNNING,
    (RUNNING, "succeed"): SUCCEEDED,
    (RUNNING, "fail"): FAILED,
})

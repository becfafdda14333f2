"""The engine's storage interface, its records, and an in-memory implementation.

The engine reads a stack and its resources once per action and writes back in
batches (`Store.save`), one transaction per batch, so a worker that dies leaves
a consistent state another worker can resume from.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from dataclasses import dataclass, field

import orjson

from jeroboam.orchestration.errors import StackConflict, StackNotFound

# Actions and statuses (Heat's ACTION_STATUS).
INIT, CREATE, UPDATE, DELETE, ROLLBACK = "INIT", "CREATE", "UPDATE", "DELETE", "ROLLBACK"
IN_PROGRESS, COMPLETE, FAILED = "IN_PROGRESS", "COMPLETE", "FAILED"
STATUSES = (IN_PROGRESS, COMPLETE, FAILED)

STACK_TYPE = "OS::Heat::Stack"


@dataclass
class StackRecord:
    id: str
    name: str
    project_id: str | None
    template: dict
    parameters: dict  # as the user gave them; coercion happens on every bind
    action: str = INIT
    status: str = COMPLETE
    status_reason: str = ""
    timeout_mins: int | None = None
    disable_rollback: bool = True
    # The template and parameters before the update in progress: the target of
    # its rollback. None while no update is pending.
    prev_template: dict | None = None
    prev_parameters: dict | None = None
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None
    action_started_at: datetime.datetime | None = None  # the stack timeout counts from here
    deleted_at: datetime.datetime | None = None

    @property
    def state(self) -> str:
        return f"{self.action}_{self.status}"


@dataclass
class ResourceRecord:
    id: str
    stack_id: str
    name: str  # logical name; group members are "group/index"
    type: str
    action: str = INIT
    status: str = COMPLETE
    status_reason: str = ""
    physical_id: str | None = None
    properties: dict = field(default_factory=dict)  # resolved, as last acted on
    metadata: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # the plugin's private state
    attributes: dict | None = None  # cached when an action completes; None = not available
    requires: list = field(default_factory=list)  # names, for reverse-order deletion
    depends_on: list = field(default_factory=list)  # explicit ones, for update comparison
    update_policy: dict = field(default_factory=dict)
    deletion_policy: str = "Delete"
    replaces: str | None = None  # id of the record this one replaces
    replaced_by: str | None = None  # set on an old copy awaiting cleanup
    created_at: datetime.datetime | None = None
    updated_at: datetime.datetime | None = None

    @property
    def state(self) -> str:
        return f"{self.action}_{self.status}"


@dataclass
class EventRecord:
    id: str
    stack_id: str
    resource_name: str
    physical_resource_id: str | None
    resource_type: str
    action: str
    status: str
    reason: str
    time: datetime.datetime

    @property
    def state(self) -> str:
        return f"{self.action}_{self.status}"


class Store:
    """What the engine needs from storage."""

    def create_stack(self, stack: StackRecord, events: list[EventRecord]) -> None:
        """Insert a new stack; StackConflict if its name is taken in its project."""
        raise NotImplementedError

    def get_stack(self, stack_id: str) -> StackRecord:
        """The stack (also when DELETE_COMPLETE); StackNotFound if it never existed."""
        raise NotImplementedError

    def resources(self, stack_id: str) -> list[ResourceRecord]:
        raise NotImplementedError

    def save(self, stack: StackRecord | None, resources: list[ResourceRecord],
             removed: list[ResourceRecord], events: list[EventRecord]) -> None:
        """In one transaction: update the stack (if given), upsert `resources`,
        delete the `removed` ones, append `events`."""
        raise NotImplementedError

    def events(self, stack_id: str) -> list[EventRecord]:
        """Events in the order they were recorded."""
        raise NotImplementedError


def _clone(value):
    # A JSON round trip: copies, and refuses what a database JSON column would.
    return orjson.loads(orjson.dumps(value))


_JSON_FIELDS = {
    StackRecord: ("template", "parameters", "prev_template", "prev_parameters"),
    ResourceRecord: ("properties", "metadata", "data", "attributes", "requires", "depends_on", "update_policy"),
    EventRecord: (),
}


def copy_record(record):
    """A deep copy of a record whose JSON fields go through a JSON round trip."""
    return dataclasses.replace(record, **{f: _clone(getattr(record, f)) for f in _JSON_FIELDS[type(record)]})


class MemoryStore(Store):
    """Keeps copies, never the engine's objects, so tests see only what was saved."""

    def __init__(self):
        self._lock = threading.Lock()
        self._stacks: dict[str, StackRecord] = {}
        self._resources: dict[str, dict[str, ResourceRecord]] = {}
        self._events: dict[str, list[EventRecord]] = {}

    def create_stack(self, stack, events):
        with self._lock:
            for other in self._stacks.values():
                if (other.project_id == stack.project_id and other.name == stack.name
                        and other.state != f"{DELETE}_{COMPLETE}"):
                    raise StackConflict(f"a stack named {stack.name!r} already exists")
            self._stacks[stack.id] = copy_record(stack)
            self._resources[stack.id] = {}
            self._events[stack.id] = [copy_record(e) for e in events]

    def get_stack(self, stack_id):
        with self._lock:
            if stack_id not in self._stacks:
                raise StackNotFound(stack_id)
            return copy_record(self._stacks[stack_id])

    def resources(self, stack_id):
        with self._lock:
            return [copy_record(r) for r in self._resources.get(stack_id, {}).values()]

    def save(self, stack, resources, removed, events):
        copies = [copy_record(r) for r in resources]
        with self._lock:
            if stack is not None:
                self._stacks[stack.id] = copy_record(stack)
            for rec in copies:
                self._resources[rec.stack_id][rec.id] = rec
            for rec in removed:
                self._resources[rec.stack_id].pop(rec.id, None)
            for event in events:
                self._events[event.stack_id].append(copy_record(event))

    def events(self, stack_id):
        with self._lock:
            return [copy_record(e) for e in self._events.get(stack_id, [])]

    def list_stacks(self) -> list[StackRecord]:
        with self._lock:
            return [copy_record(s) for s in self._stacks.values()]

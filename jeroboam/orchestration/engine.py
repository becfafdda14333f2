"""The stack engine: create, update, delete, rollback; resumable and parallel.

Request side (API): `create_stack`, `update_stack`, `delete_stack` validate and
record the intent (the stack goes ACTION_IN_PROGRESS). Worker side: `run`
carries out whatever action is in progress, and is also how a crashed action
is resumed: it reads the stored state and continues from it.

Every action is a convergence of the stored resources toward a target
(the template for create/update, the previous template for an update's
rollback, nothing for delete and a create's rollback):

  phase A  in forward dependency order, each target resource is created,
           left alone, updated in place or replaced (a new record created;
           the old copy kept for phase B);
  phase B  in reverse dependency order, records no longer in the target
           (removed resources, old copies of replaced ones) are deleted.

Resources whose handlers do no I/O run inline; others run on a bounded thread
pool. Waiting for completion never holds a thread: a resource not yet complete
is checked again after its `poll_after` hint or a short, growing back-off.
State is written in batches, once per scheduler pass and always before waiting.
"""

from __future__ import annotations

import collections
import datetime
import functools
import heapq
import itertools
import queue
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from jeroboam.orchestration import resources as registry
from jeroboam.orchestration.errors import StackConflict, StackNotFound, TemplateError
from jeroboam.orchestration.graph import Graph, Walker
from jeroboam.orchestration.resources.base import AttributeView, Services, StackInfo
from jeroboam.orchestration.store import (
    COMPLETE, CREATE, DELETE, FAILED, IN_PROGRESS, INIT, ROLLBACK, STACK_TYPE, UPDATE,
    EventRecord, ResourceRecord, StackRecord, Store,
)
from jeroboam.orchestration.template import DEFAULT_LIMITS, BoundTemplate, Limits, ResourceDefinition, Template

DEFAULT_TIMEOUT_MINS = 60
_FIRST_POLL = 0.01  # seconds; back-off doubles up to _MAX_POLL
_MAX_POLL = 2.0
_CANCEL_POLL = 0.5


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _new_id() -> str:
    return str(uuid.uuid4())


def _parent(name: str) -> str:
    return name.rpartition("/")[0]


def _root(name: str) -> str:
    return name.partition("/")[0]


class StackView(AttributeView):
    """Current resources by name, for get_resource / get_attr and outputs."""

    def __init__(self, current: dict[str, ResourceRecord]):
        self.current = current

    def record(self, name):
        return self.current.get(name)

    def _available(self, name):
        rec = self.current.get(name)
        if rec is None or rec.attributes is None or rec.action in (INIT, DELETE):
            return None
        return rec

    def reference_id(self, name):
        rec = self.current.get(name)
        if rec is None or rec.physical_id is None:
            return None
        cls = registry.get(rec.type)
        return cls.reference_id(rec) if cls else rec.physical_id

    def attribute(self, name, attr, path):
        rec = self._available(name)
        cls = rec and registry.get(rec.type)
        return cls.attribute(self, rec, attr, path) if cls else None


def stack_view(store: Store, stack_id: str) -> StackView:
    return StackView({r.name: r for r in store.resources(stack_id) if r.replaced_by is None})


class Engine:
    def __init__(self, store: Store, *, concurrency: int = 16, error_wait: float = 240.0,
                 default_timeout_mins: int = DEFAULT_TIMEOUT_MINS, limits: Limits = DEFAULT_LIMITS,
                 services: Services = Services()):
        """concurrency: worker threads for blocking handlers (waiting never holds one).
        error_wait: after a failure, how long running resources may still finish.
        services: what plugins may use of the service (settings, database)."""
        self.store = store
        self.limits = limits
        self.services = services
        self.concurrency = concurrency
        self.error_wait = error_wait
        self.default_timeout_mins = default_timeout_mins

    # ------------------------------------------------------------ request side
    def validate(self, template, parameters=None, *, stack_id="", stack_name="", project_id=None) -> BoundTemplate:
        """Parse and fully validate; raises TemplateError naming the place."""
        return Template(template, self.limits).bind(parameters, stack_id=stack_id, stack_name=stack_name,
                                                    project_id=project_id)

    def create_stack(self, name: str, template, parameters: dict | None = None, *, project_id: str | None = None,
                     timeout_mins: int | None = None, disable_rollback: bool = True,
                     stack_id: str | None = None,
                     authorize: Callable[[BoundTemplate], None] | None = None) -> StackRecord:
        """Validate and store a new stack in CREATE_IN_PROGRESS; `run` then creates it.

        authorize(bound template) runs before anything is stored and may raise to refuse."""
        stack_id = stack_id or _new_id()
        bound = self.validate(template, parameters, stack_id=stack_id, stack_name=name, project_id=project_id)
        if authorize is not None:
            authorize(bound)
        now = _now()
        stack = StackRecord(
            id=stack_id, name=name, project_id=project_id, template=bound.template.raw,
            parameters=dict(parameters or {}), action=CREATE, status=IN_PROGRESS,
            status_reason="Stack CREATE started", timeout_mins=timeout_mins, disable_rollback=disable_rollback,
            created_at=now, action_started_at=now)
        self.store.create_stack(stack, [stack_event(stack)])
        return stack

    def update_stack(self, stack_id: str, template=None, parameters: dict | None = None, *, existing: bool = True,
                     timeout_mins: int | None = None, disable_rollback: bool | None = None,
                     authorize: Callable[[BoundTemplate], None] | None = None) -> StackRecord:
        """Validate and record an update (UPDATE_IN_PROGRESS); `run` then carries it out.

        existing: omitted template/parameters keep their current values (PATCH);
        otherwise omitted parameters take their defaults (PUT). authorize: as for create.
        """
        stack = self._live_stack(stack_id)
        if stack.status == IN_PROGRESS:
            raise StackConflict(f"stack {stack.name} is {stack.state}; wait for it or cancel it")
        new = Template(stack.template if template is None else template, self.limits)
        values = dict(parameters or {})
        if existing:
            kept = {k: v for k, v in stack.parameters.items() if k in new.parameters}
            values = {**kept, **values}
        bound = new.bind(values, stack_id=stack.id, stack_name=stack.name, project_id=stack.project_id)
        if authorize is not None:
            authorize(bound)
        self._check_immutable(stack, new, values)
        stack.prev_template, stack.prev_parameters = stack.template, stack.parameters
        stack.template, stack.parameters = new.raw, values
        if timeout_mins is not None:
            stack.timeout_mins = timeout_mins
        if disable_rollback is not None:
            stack.disable_rollback = disable_rollback
        self._set_stack(stack, UPDATE, IN_PROGRESS, "Stack UPDATE started")
        stack.updated_at = stack.action_started_at = _now()
        self.store.save(stack, [], [], [stack_event(stack)])
        return stack

    def delete_stack(self, stack_id: str) -> StackRecord:
        """Record a delete (DELETE_IN_PROGRESS); `run` then deletes. Allowed from any
        settled state, including failed ones; a delete already under way is returned as is."""
        stack = self._live_stack(stack_id)
        if stack.status == IN_PROGRESS:
            if stack.action == DELETE:
                return stack
            raise StackConflict(f"stack {stack.name} is {stack.state}; cancel it first")
        self._set_stack(stack, DELETE, IN_PROGRESS, "Stack DELETE started")
        stack.action_started_at = _now()
        self.store.save(stack, [], [], [stack_event(stack)])
        return stack

    @staticmethod
    def bound(stack: StackRecord, template: dict | None = None, parameters: dict | None = None) -> BoundTemplate:
        """The stack's template (or the one given) bound to its parameters (or those given)."""
        return Template(stack.template if template is None else template).bind(
            stack.parameters if parameters is None else parameters,
            stack_id=stack.id, stack_name=stack.name, project_id=stack.project_id)

    def outputs(self, stack: StackRecord) -> list[dict]:
        """The stack's outputs resolved against its current resources."""
        return self.bound(stack).outputs(stack_view(self.store, stack.id))

    def _live_stack(self, stack_id: str) -> StackRecord:
        stack = self.store.get_stack(stack_id)
        if stack.state == f"{DELETE}_{COMPLETE}":
            raise StackNotFound(stack_id)
        return stack

    def _check_immutable(self, stack: StackRecord, new: Template, values: dict) -> None:
        old = Template(stack.template)
        old_values = old.parameter_values(stack.parameters)
        new_values = new.parameter_values(values)
        for name, param in new.parameters.items():
            if param.immutable and name in old_values and old_values[name] != new_values[name]:
                raise TemplateError(f"parameters.{name}", "is immutable and cannot be changed")

    @staticmethod
    def _set_stack(stack: StackRecord, action: str, status: str, reason: str) -> None:
        stack.action, stack.status, stack.status_reason = action, status, reason

    # ------------------------------------------------------------- worker side
    def run(self, stack_id: str, cancel: Callable[[], bool] | None = None) -> StackRecord:
        """Carry out (or resume) the stack's action in progress, including a rollback
        after a failure; return the settled stack. `cancel` is polled; when it
        returns True the action stops and the stack is ACTION_FAILED (no rollback)."""
        while True:
            stack = self.store.get_stack(stack_id)
            if stack.status != IN_PROGRESS:
                return stack
            action = stack.action
            run = _Run(self, stack, cancel)
            try:
                target = self._target(stack)
            except TemplateError as exc:
                failure = f"{type(exc).__name__}: {exc}"
            else:
                failure = run.converge(target)
            run.finish(failure)
            if failure is None:
                return run.stack
            if action in (CREATE, UPDATE) and not stack.disable_rollback and not run.cancelled:
                self._set_stack(run.stack, ROLLBACK, IN_PROGRESS, "Stack ROLLBACK started")
                run.stack.action_started_at = _now()
                self.store.save(run.stack, [], [], [stack_event(run.stack)])
                continue
            return run.stack

    def _target(self, stack: StackRecord) -> BoundTemplate | None:
        if stack.action == DELETE:
            return None
        if stack.action == ROLLBACK:
            if stack.prev_template is None:
                return None  # a create's rollback deletes everything
            return self.bound(stack, stack.prev_template, stack.prev_parameters)
        return self.bound(stack)


def stack_event(stack: StackRecord) -> EventRecord:
    """The event recording the stack's current state."""
    return EventRecord(id=_new_id(), stack_id=stack.id, resource_name=stack.name, physical_resource_id=stack.id,
                       resource_type=STACK_TYPE, action=stack.action, status=stack.status,
                       reason=stack.status_reason, time=_now())


class _Op:
    """One resource action in flight: a handler call, then checks until complete."""

    __slots__ = ("record", "plugin", "kind", "action", "on_done", "polls", "old_props", "changed",
                 "props", "metadata", "defn")

    def __init__(self, record, plugin, kind, action, on_done):
        self.record = record
        self.plugin = plugin
        self.kind = kind  # "create" | "update" | "delete": which handlers
        self.action = action  # what the record shows: CREATE, UPDATE, ROLLBACK, DELETE
        self.on_done = on_done
        self.polls = 0
        self.old_props = self.changed = self.props = self.metadata = self.defn = None


_CHECKS = {"create": "check_create_complete", "update": "check_update_complete", "delete": "check_delete_complete"}


class _Run:
    """One pass of an action over a stack: scheduler, bookkeeping, batched writes."""

    def __init__(self, engine: Engine, stack: StackRecord, cancel):
        self.engine = engine
        self.store = engine.store
        self.stack = stack
        self.action = stack.action
        self.info = StackInfo(stack.id, stack.name, stack.project_id, engine.services)
        self.cancel = cancel
        self.records = {r.id: r for r in self.store.resources(stack.id)}
        self.current = {r.name: r for r in self.records.values() if r.replaced_by is None}
        self.view = StackView(self.current)
        self.bound: BoundTemplate | None = None
        # batched writes
        self.dirty: dict[str, ResourceRecord] = {}
        self.removed: list[ResourceRecord] = []
        self.events: list[EventRecord] = []
        # scheduling
        self.ready: collections.deque = collections.deque()
        self.timers: list = []
        self.seq = itertools.count()
        self.done_queue: queue.SimpleQueue = queue.SimpleQueue()
        self.pool: ThreadPoolExecutor | None = None
        self.active = 0  # handler calls in flight plus resources waiting for a check
        self.open_groups: dict[str, tuple] = {}
        self.failure: str | None = None
        self.failed_at = 0.0
        self.aborted: str | None = None
        self.cancelled = False
        timeout = (stack.timeout_mins or engine.default_timeout_mins) * 60
        started = stack.action_started_at or _now()
        self.deadline = time.monotonic() + timeout - (_now() - started).total_seconds()
        self.next_cancel_poll = 0.0

    # ---------------------------------------------------------- convergence
    def converge(self, bound: BoundTemplate | None) -> str | None:
        """Bring the resources to `bound` (None: no resources); the failure reason or None."""
        self.bound = bound
        targets = bound.resources if bound else {}
        try:
            if targets:
                for name, defn in targets.items():
                    if name not in self.current:
                        self._new_record(defn)
                walker = Walker(bound.graph)

                def start(name):
                    self._converge(name, targets[name], lambda ok: ok and self._push(walker.done(name), start))

                self._push(walker.start(), start)
                self._loop()
            if self.failure is None:
                self._cleanup(targets)
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)
        return self.failure

    def _push(self, keys, fn) -> None:
        for key in keys:
            self.ready.append((fn, key))

    def _cleanup(self, targets) -> None:
        """Phase B: delete the records outside the target, in reverse dependency order."""
        doomed = {r.id: r for r in self.records.values()
                  if r.replaced_by is not None or _root(r.name) not in targets}
        if not doomed:
            return
        by_name = collections.defaultdict(list)
        for rec in doomed.values():
            by_name[rec.name].append(rec.id)
        graph = Graph({rid: [o for n in rec.requires for o in by_name.get(n, ()) if o != rid]
                       for rid, rec in doomed.items()}).without_cycles()
        walker = Walker(graph, reverse=True)

        def start(rid):
            self._delete(doomed[rid], lambda ok: ok and self._push(walker.done(rid), start))

        self._push(walker.start(), start)
        self._loop()

    def _new_record(self, defn: ResourceDefinition) -> ResourceRecord:
        rec = ResourceRecord(id=_new_id(), stack_id=self.stack.id, name=defn.name, type=defn.type,
                             requires=sorted(defn.requires), created_at=_now())
        self.records[rec.id] = rec
        self.current[rec.name] = rec
        self.dirty[rec.id] = rec
        return rec

    def _converge(self, name: str, defn: ResourceDefinition, on_done) -> None:
        """Phase A for one resource: create, leave, update in place or replace."""
        rec = self.current[name]
        fresh = rec.action == INIT or (rec.action == CREATE and rec.status == IN_PROGRESS)
        try:
            props, metadata = self.bound.resolve(defn, self.view)
            start = self._plan(rec, defn, props, metadata, fresh)
        except Exception as exc:  # resolving or validating this resource failed
            action = CREATE if fresh else self._update_action()
            self._set(rec, action, FAILED, _reason(name, exc))
            self._failed(action, rec.status_reason)
            return on_done(False)
        if start is None:
            return on_done(True)
        start(on_done)

    def _plan(self, rec, defn, props, metadata, fresh):
        """What to do with one resource: a starter taking on_done, or None for nothing."""
        cls = defn.plugin
        if fresh:
            return functools.partial(self._start_create, rec, defn, props, metadata)
        if rec.type != defn.type:
            return functools.partial(self._replace, rec, defn, props, metadata)
        if cls.composite:
            return functools.partial(self._start_group, rec, defn, props, metadata)
        if rec.status == FAILED or rec.action == DELETE:
            return functools.partial(self._replace, rec, defn, props, metadata)
        if cls.ignores_changes:
            rec.properties, rec.metadata = props, metadata
            self.dirty[rec.id] = rec
            return None
        changed = {k for k in props.keys() | rec.properties.keys() if props.get(k) != rec.properties.get(k)}
        resuming = rec.status == IN_PROGRESS
        if not (changed or resuming or metadata != rec.metadata or _definition_changed(rec, defn)):
            return None
        if changed and cls.needs_replacement(rec.name, rec.properties, props, changed):
            return functools.partial(self._replace, rec, defn, props, metadata)
        return functools.partial(self._start_update, rec, defn, props, metadata, changed)

    def _update_action(self) -> str:
        return ROLLBACK if self.action == ROLLBACK else UPDATE

    def _plugin(self, rec: ResourceRecord, props: dict):
        cls = registry.get(rec.type)
        if cls is None:
            raise TemplateError(f"resources.{rec.name}.type", f'unknown resource type "{rec.type}"')
        # A copy: a worker thread may change it while the scheduler saves the record.
        return cls(rec.name, rec.id, props, dict(rec.data), rec.physical_id, self.info)

    def _adopt_definition(self, rec: ResourceRecord, defn: ResourceDefinition) -> None:
        rec.type = defn.type
        rec.requires = sorted(defn.requires)
        rec.depends_on = list(defn.depends_on)
        rec.update_policy = defn.update_policy or {}
        rec.deletion_policy = defn.deletion_policy

    def _start_create(self, rec, defn, props, metadata, on_done) -> None:
        if defn.plugin.composite:
            return self._start_group(rec, defn, props, metadata, on_done)
        resuming = rec.action == CREATE and rec.status == IN_PROGRESS
        self._adopt_definition(rec, defn)
        rec.properties, rec.metadata = props, metadata
        if not resuming:
            self._set(rec, CREATE, IN_PROGRESS, "state changed")
        op = _Op(rec, self._plugin(rec, props), "create", CREATE, on_done)
        self._dispatch(op, "check" if resuming and rec.physical_id is not None else "start")

    def _start_update(self, rec, defn, props, metadata, changed, on_done) -> None:
        action = self._update_action()
        if not (rec.action == action and rec.status == IN_PROGRESS):
            self._set(rec, action, IN_PROGRESS, "state changed")
        op = _Op(rec, self._plugin(rec, props), "update", action, on_done)
        op.old_props, op.changed, op.props, op.metadata, op.defn = rec.properties, changed, props, metadata, defn
        self._dispatch(op, "start")

    def _replace(self, rec, defn, props, metadata, on_done) -> None:
        """Create-before-delete: a new record now, the old copy deleted in phase B.

        When an old copy of exactly this definition still exists (a rollback
        undoing a replacement), it becomes current again instead."""
        old = next((r for r in self.records.values()
                    if r.name == rec.name and r.replaced_by is not None and r.status == COMPLETE
                    and r.action != DELETE and r.type == defn.type and r.properties == props
                    and r.metadata == metadata), None)
        if old is not None:
            old.replaced_by, rec.replaced_by = None, old.id
            self.current[rec.name] = old
            self._retire_members(rec, old.id)
            self.dirty[old.id], self.dirty[rec.id] = old, rec
            return on_done(True)
        new = self._new_record(defn)
        new.replaces, rec.replaced_by = rec.id, new.id
        self._retire_members(rec, new.id)
        self.dirty[rec.id] = rec
        self._start_create(new, defn, props, metadata, on_done)

    def _retire_members(self, rec: ResourceRecord, replacement_id: str) -> None:
        """A replaced composite's members go to cleanup with it."""
        prefix = rec.name + "/"
        for name, member in list(self.current.items()):
            if name.startswith(prefix):
                member.replaced_by = replacement_id
                self.dirty[member.id] = member
                del self.current[name]

    def _start_group(self, rec, defn, props, metadata, on_done) -> None:
        """A composite resource: converge its members (created/updated in parallel,
        surplus ones deleted), then the group itself completes."""
        cls = defn.plugin
        updating = not (rec.action == INIT or (rec.action == CREATE and rec.status != COMPLETE))
        action = self._update_action() if updating else CREATE
        if (updating and rec.status == COMPLETE and props == rec.properties and metadata == rec.metadata
                and not _definition_changed(rec, defn)):
            return on_done(True)
        if not (rec.action == action and rec.status == IN_PROGRESS):
            self._set(rec, action, IN_PROGRESS, "state changed")
        self._adopt_definition(rec, defn)
        if rec.physical_id is None:
            rec.physical_id = self._plugin(rec, props).create()
        prefix = rec.name + "/"
        existing = {n: r for n, r in self.current.items() if _parent(n) == rec.name}
        ref_names = {self.view.reference_id(n): n[len(prefix):] for n in existing}
        members, data = cls.members(rec.name, props, rec.data, updating, ref_names)
        # a count from an attribute was not known when the template was validated
        others = sum(1 for n, r in self.current.items() if _root(n) != _root(rec.name)
                     and not getattr(registry.get(r.type), "composite", False))
        if others + len(members) > self.engine.limits.max_resources:
            self._set(rec, action, FAILED, f"{len(members)} members would exceed the stack's limit of "
                      f"{self.engine.limits.max_resources} resources")
            self._failed(action, rec.status_reason)
            return on_done(False)
        # Member types were checked when the group's properties were validated.
        member_defs = {
            prefix + short: ResourceDefinition(
                name=prefix + short, type=mtype, plugin=registry.get(mtype), properties=mprops, metadata=mmeta,
                depends_on=[], requires=frozenset([rec.name]), resolved=True)
            for short, (mtype, mprops, mmeta) in members.items()
        }
        surplus = [r for n, r in existing.items() if n not in member_defs]
        # Open until every member is done; one still open when the run stops
        # (after a failure elsewhere) is marked FAILED by finish().
        self.open_groups[rec.id] = (rec, action)
        pending = [len(member_defs) + len(surplus)]
        failed = [False]

        def member_done(ok):
            pending[0] -= 1
            failed[0] = failed[0] or not ok
            if pending[0] == 0:
                del self.open_groups[rec.id]
                if failed[0]:
                    self._set(rec, action, FAILED, self.failure)
                    return on_done(False)
                rec.properties, rec.metadata, rec.data, rec.attributes = props, metadata, data, {}
                self._set(rec, action, COMPLETE, "state changed")
                on_done(True)

        for full, mdefn in member_defs.items():
            if full not in self.current:
                self._new_record(mdefn)
            self.ready.append((lambda n, d=mdefn: self._converge(n, d, member_done), full))
        for member in surplus:
            self.ready.append((lambda m: self._delete(m, member_done), member))
        if not pending[0]:
            pending[0] = 1
            member_done(True)

    def _delete(self, rec: ResourceRecord, on_done) -> None:
        if rec.action == INIT:
            return self._forget(rec, on_done)
        if rec.deletion_policy == "Retain":
            self._set(rec, DELETE, COMPLETE, "deletion policy Retain: left in place")
            return self._forget(rec, on_done)
        if not (rec.action == DELETE and rec.status == IN_PROGRESS):
            self._set(rec, DELETE, IN_PROGRESS, "state changed")
        try:
            plugin = self._plugin(rec, rec.properties)
        except TemplateError as exc:
            self._set(rec, DELETE, FAILED, _reason(rec.name, exc))
            self._failed(DELETE, rec.status_reason)
            return on_done(False)
        self._dispatch(_Op(rec, plugin, "delete", DELETE, on_done), "start")

    def _forget(self, rec: ResourceRecord, on_done) -> None:
        del self.records[rec.id]
        if self.current.get(rec.name) is rec:
            del self.current[rec.name]
        self.dirty.pop(rec.id, None)
        self.removed.append(rec)
        on_done(True)

    # ------------------------------------------------------- handler calls
    def _dispatch(self, op: _Op, step: str) -> None:
        self.active += 1
        if op.plugin.blocking:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(self.engine.concurrency, thread_name_prefix=f"stack-{self.stack.id[:8]}")
            self.pool.submit(self._call, op, step).add_done_callback(
                lambda fut: self.done_queue.put((op, fut.result())))
        else:
            self._apply(op, self._call(op, step))

    @staticmethod
    def _call(op: _Op, step: str):
        """The handler call (step "start") or a check, then attributes once complete.
        Runs on a worker thread for blocking plugins: touches only the plugin."""
        plugin = op.plugin
        plugin.poll_after = None
        try:
            if step == "start":
                if op.kind == "create":
                    physical_id = plugin.create()
                    if physical_id is not None:
                        plugin.physical_id = physical_id
                elif op.kind == "update":
                    plugin.update(op.old_props, op.changed)
                else:
                    plugin.delete()
            done = getattr(plugin, _CHECKS[op.kind])()
            attributes = plugin.get_attributes() if done and op.kind != "delete" else None
            return done, attributes, None
        except Exception as exc:
            return False, None, exc

    def _apply(self, op: _Op, outcome) -> None:
        """Record a call's outcome (scheduler thread)."""
        self.active -= 1
        done, attributes, exc = outcome
        rec, plugin = op.record, op.plugin
        if rec.physical_id != plugin.physical_id:
            rec.physical_id = plugin.physical_id
        rec.data = dict(plugin.data)
        self.dirty[rec.id] = rec
        if exc is not None:
            self._set(rec, op.action, FAILED, _reason(rec.name, exc, plugin))
            self._failed(op.action, rec.status_reason)
            return op.on_done(False)
        if done:
            if op.kind == "delete":
                self._set(rec, DELETE, COMPLETE, "state changed")
                return self._forget(rec, op.on_done)
            if op.kind == "update":
                rec.properties, rec.metadata = op.props, op.metadata
                self._adopt_definition(rec, op.defn)
            rec.attributes = attributes or {}
            self._set(rec, op.action, COMPLETE, "state changed")
            return op.on_done(True)
        if self.aborted:
            self._set(rec, op.action, FAILED, self.aborted)
            return op.on_done(False)
        delay = plugin.poll_after
        if delay is None:
            delay = min(_FIRST_POLL * (2 ** op.polls), _MAX_POLL)
        op.polls += 1
        self.active += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, next(self.seq), op))

    # ------------------------------------------------------------ scheduler
    def _loop(self) -> None:
        while True:
            # Whatever is ready now starts, even if one of them fails on the spot;
            # what becomes ready after a failure never starts (stays INIT_COMPLETE).
            while self.ready and not self.failure:
                batch, self.ready = self.ready, collections.deque()
                for fn, key in batch:
                    fn(key)
            self.ready.clear()
            self._drain(block_for=None)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                _, _, op = heapq.heappop(self.timers)
                self.active -= 1
                self._dispatch(op, "check")
            if self.ready:
                continue
            self._flush()
            if not self.active:
                return
            now = time.monotonic()
            self._limits(now)
            if not self.active:
                return
            wake = self.deadline
            if self.timers:
                wake = min(wake, self.timers[0][0])
            if self.cancel is not None:
                wake = min(wake, self.next_cancel_poll)
            if self.failure and not self.aborted:
                wake = min(wake, self.failed_at + self.engine.error_wait)
            self._drain(block_for=max(0.0, wake - now))

    def _drain(self, block_for: float | None) -> None:
        """Apply finished thread calls; wait up to block_for for the first one."""
        try:
            item = self.done_queue.get(timeout=block_for) if block_for else self.done_queue.get_nowait()
        except queue.Empty:
            return
        while True:
            self._apply(*item)
            try:
                item = self.done_queue.get_nowait()
            except queue.Empty:
                return

    def _limits(self, now: float) -> None:
        """Stack timeout, cancel request, end of the wait after a failure."""
        if self.aborted:
            return
        reason = None
        if now >= self.deadline:
            reason = f"{self.action.capitalize()} timed out"
        elif self.cancel is not None and now >= self.next_cancel_poll:
            self.next_cancel_poll = now + _CANCEL_POLL
            if self.cancel():
                self.cancelled = True
                reason = f"Stack {self.action} cancelled"
        if reason is None and self.failure and now >= self.failed_at + self.engine.error_wait:
            reason = f"{self.action.capitalize()} aborted after a failure"
        if reason is None:
            return
        self.aborted = reason
        if self.failure is None:
            self.failure = reason
            self.failed_at = now
        # Waiting resources fail now; calls still running on threads fail when they return.
        timers, self.timers = self.timers, []
        for _, _, op in timers:
            self.active -= 1
            self._set(op.record, op.action, FAILED, reason)
            op.on_done(False)

    def _failed(self, action: str, reason: str) -> None:
        if self.failure is None:
            self.failure = f"Resource {action} failed: {reason}"
            self.failed_at = time.monotonic()

    # ---------------------------------------------------------- bookkeeping
    def _set(self, rec: ResourceRecord, action: str, status: str, reason: str) -> None:
        rec.action, rec.status, rec.status_reason = action, status, reason
        rec.updated_at = now = _now()
        self.dirty[rec.id] = rec
        self.events.append(EventRecord(
            id=_new_id(), stack_id=rec.stack_id, resource_name=rec.name, physical_resource_id=rec.physical_id,
            resource_type=rec.type, action=action, status=status, reason=reason, time=now))

    def _flush(self, stack: StackRecord | None = None) -> None:
        if self.dirty or self.removed or self.events or stack is not None:
            self.store.save(stack, list(self.dirty.values()), self.removed, self.events)
            self.dirty, self.removed, self.events = {}, [], []

    def finish(self, failure: str | None) -> None:
        """Settle the stack: COMPLETE, or FAILED with the first failure's reason."""
        for rec, action in self.open_groups.values():
            self._set(rec, action, FAILED, failure or "interrupted")
        self.open_groups.clear()
        stack = self.stack
        now = _now()
        if failure is None:
            Engine._set_stack(stack, self.action, COMPLETE, f"Stack {self.action} completed successfully")
            if self.action == ROLLBACK and stack.prev_template is not None:
                stack.template, stack.parameters = stack.prev_template, stack.prev_parameters
            if self.action in (UPDATE, ROLLBACK):
                stack.prev_template = stack.prev_parameters = None
            if self.action == DELETE:
                stack.deleted_at = now
        else:
            Engine._set_stack(stack, self.action, FAILED, failure)
        stack.updated_at = now
        self.events.append(stack_event(stack))
        self._flush(stack)


def _definition_changed(rec: ResourceRecord, defn: ResourceDefinition) -> bool:
    return (rec.depends_on != list(defn.depends_on) or rec.update_policy != (defn.update_policy or {})
            or rec.deletion_policy != defn.deletion_policy)


def _reason(name: str, exc: Exception, plugin: registry.Resource | None = None) -> str:
    text = plugin.failure_text(exc) if plugin is not None else str(exc)
    message = text if isinstance(exc, TemplateError) else f"resources.{name}: {text}"
    return f"{type(exc).__name__}: {message}"

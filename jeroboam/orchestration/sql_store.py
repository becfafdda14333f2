"""The engine's store on the service database (SQLite, PostgreSQL or MySQL/MariaDB).

Each `save` is one transaction: the stack row, an upsert of every changed
resource, deletes, and the new events, each as one executemany. With a
`session`, the store works inside that session's transaction (the API writes a
new stack and its task together); otherwise it opens its own per call.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from jeroboam.db.stack_models import Stack, StackEvent, StackResource
from jeroboam.orchestration.errors import StackConflict, StackNotFound
from jeroboam.orchestration.store import EventRecord, ResourceRecord, StackRecord, Store

STACKS = Stack.__table__
RESOURCES = StackResource.__table__
EVENTS = StackEvent.__table__

_STACK_FIELDS = [f.name for f in dataclasses.fields(StackRecord) if f.name != "id"]
_RESOURCE_FIELDS = [f.name for f in dataclasses.fields(ResourceRecord)]
_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}
_UPDATED = [c.name for c in RESOURCES.columns if c.name != "id"]


def _upsert(dialect: str):
    """INSERT of resource rows that updates those whose id exists, in the database's own syntax."""
    if dialect == "mysql":
        insert = mysql.insert(RESOURCES)
        return insert.on_duplicate_key_update({c: insert.inserted[c] for c in _UPDATED})
    insert = _INSERTS[dialect](RESOURCES)
    return insert.on_conflict_do_update(index_elements=[RESOURCES.c.id],
                                        set_={c: insert.excluded[c] for c in _UPDATED})


def _stack_row(rec: StackRecord) -> dict:
    return {"uuid": rec.id, **{f: getattr(rec, f) for f in _STACK_FIELDS}}


def stack_record(row) -> StackRecord:
    return StackRecord(id=row.uuid, **{f: getattr(row, f) for f in _STACK_FIELDS})


def _resource_row(rec: ResourceRecord) -> dict:
    # Plain dict of the dataclass's fields (dataclasses.asdict would deep-copy every JSON value).
    return {f: getattr(rec, f) for f in _RESOURCE_FIELDS}


def _resource_record(row) -> ResourceRecord:
    return ResourceRecord(**{f: row[f] for f in _RESOURCE_FIELDS})


def _event_row(event: EventRecord) -> dict:
    return {"uuid": event.id, "stack_id": event.stack_id, "resource_name": event.resource_name,
            "physical_resource_id": event.physical_resource_id, "resource_type": event.resource_type,
            "action": event.action, "status": event.status, "reason": event.reason, "time": event.time}


def event_record(row) -> EventRecord:
    return EventRecord(id=row.uuid, stack_id=row.stack_id, resource_name=row.resource_name,
                       physical_resource_id=row.physical_resource_id, resource_type=row.resource_type,
                       action=row.action, status=row.status, reason=row.reason, time=row.time)


class SqlStore(Store):
    def __init__(self, session_factory=None, *, session: Session | None = None,
                 fence: Callable[[Session], None] | None = None):
        """fence(session) runs first in every save's transaction and may raise to refuse
        it (a worker that lost its task to another must not write)."""
        if (session_factory is None) == (session is None):
            raise ValueError("give a session_factory or a session")
        self._factory = session_factory
        self._session = session
        self._fence = fence

    @contextlib.contextmanager
    def _transaction(self):
        if self._session is not None:
            yield self._session
            return
        with self._factory() as session, session.begin():
            yield session

    def create_stack(self, stack, events):
        with self._transaction() as session:
            taken = session.scalar(sa.select(STACKS.c.id).where(
                STACKS.c.project_id == stack.project_id, STACKS.c.name == stack.name,
                STACKS.c.deleted_at.is_(None)))
            if taken is not None:
                raise StackConflict(f"a stack named {stack.name!r} already exists")
            try:
                with session.begin_nested():
                    session.execute(sa.insert(STACKS), [_stack_row(stack)])
                    if events:
                        session.execute(sa.insert(EVENTS), [_event_row(e) for e in events])
            except IntegrityError:  # a concurrent create of the same name won the race
                raise StackConflict(f"a stack named {stack.name!r} already exists") from None

    def get_stack(self, stack_id):
        with self._transaction() as session:
            row = session.execute(sa.select(STACKS).where(STACKS.c.uuid == stack_id)).first()
        if row is None:
            raise StackNotFound(stack_id)
        return stack_record(row)

    def resources(self, stack_id):
        with self._transaction() as session:
            rows = session.execute(sa.select(RESOURCES).where(RESOURCES.c.stack_id == stack_id)
                                   .order_by(RESOURCES.c.created_at)).mappings().all()
        return [_resource_record(row) for row in rows]

    def save(self, stack, resources, removed, events):
        with self._transaction() as session:
            if self._fence is not None:
                self._fence(session)
            if stack is not None:
                row = _stack_row(stack)
                session.execute(sa.update(STACKS).where(STACKS.c.uuid == stack.id).values(**row))
            if resources:
                session.execute(_upsert(session.get_bind().dialect.name), [_resource_row(r) for r in resources])
            if removed:
                ids = [r.id for r in removed]
                for start in range(0, len(ids), 500):  # bounded IN lists
                    session.execute(sa.delete(RESOURCES).where(RESOURCES.c.id.in_(ids[start:start + 500])))
            if events:
                session.execute(sa.insert(EVENTS), [_event_row(e) for e in events])

    def events(self, stack_id):
        with self._transaction() as session:
            rows = session.execute(sa.select(EVENTS).where(EVENTS.c.stack_id == stack_id)
                                   .order_by(EVENTS.c.id)).all()
        return [event_record(row) for row in rows]

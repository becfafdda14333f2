"""Whether a worker is alive, from its database session (PostgreSQL, MariaDB and MySQL);
and the lock of a lock key, which work outside tasks holds while it acts on what the key's
tasks act on.

Each worker holds a lock named after it on a connection of its own for as long as it runs:
a session-level advisory lock on PostgreSQL, a named lock (GET_LOCK) on MariaDB and MySQL.
The server releases it the moment that session ends, so a worker that died (SIGKILL, a
crash) is known dead at once, while a live one whose heartbeat is late (a long pause, an
overloaded host) still holds its lock and keeps its tasks. A worker whose host vanished is
known dead once the server ends its session: on PostgreSQL when TCP keepalives give up
(seconds); MariaDB has no per-session keepalives, so there the session has an idle limit
(wait_timeout) that the heartbeat's pings keep well within. Leases remain the test where
the database has no such lock (SQLite, one process).
"""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import closing

import sqlalchemy as sa
from sqlalchemy.orm import Session

from jeroboam.db.base import is_postgres

LOG = logging.getLogger("jeroboam.worker")
# How long a starting worker waits for a namesake's session to end (a killed predecessor
# whose server-side session has not noticed yet) before calling the name taken.
TAKE_SECONDS = 3.0
# PostgreSQL closes a session whose client's host stopped answering after about
# idle + interval * count seconds (on TCP connections).
KEEPALIVES = {"tcp_keepalives_idle": 5, "tcp_keepalives_interval": 1, "tcp_keepalives_count": 3}
# MariaDB ends the lock's session when its worker has not pinged it for this many
# heartbeats (at least IDLE_MIN seconds): a worker stalled that long looks dead.
IDLE_BEATS = 4
IDLE_MIN = 60
# How long hold(wait=True) waits on MariaDB (PostgreSQL waits as long as it takes).
WAIT_SECONDS = 120
# connection info key: the connection holds named locks taken for its transaction (MariaDB)
HOLDS_LOCKS = "jeroboam_named_locks"


def _pg_key(name: str) -> int:
    """An advisory lock key: 64 bits of a digest, signed as PostgreSQL's bigint."""
    digest = hashlib.sha256(f"jeroboam-{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _named(engine: sa.Engine, name: str) -> str:
    """A GET_LOCK name: those are server-wide, so the database is part of it (installations
    sharing a server have workers of the same names); 64 characters at most."""
    return "jeroboam-" + hashlib.sha256(f"{engine.url.database}:{name}".encode()).hexdigest()[:40]


def _mysql(engine: sa.Engine) -> bool:
    return engine.dialect.name in ("mysql", "mariadb")


def supported(engine: sa.Engine) -> bool:
    return is_postgres(engine) or _mysql(engine)


def hold(session: Session, name: str, wait: bool = False) -> bool:
    """Take the lock `name` for the caller's transaction (released when it ends); False when
    another transaction or worker holds it (with `wait`, once it waited WAIT_SECONDS in
    vain on MariaDB). Always True where there is no such lock (SQLite: one process)."""
    bind = session.get_bind()
    if is_postgres(bind):
        if wait:
            session.execute(sa.select(sa.func.pg_advisory_xact_lock(_pg_key(name))))
            return True
        return bool(session.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(_pg_key(name)))))
    if _mysql(bind):
        # a named lock outlasts transactions: this connection gives its locks back when it
        # returns to the pool, which the session does when the transaction ends
        session.connection().info[HOLDS_LOCKS] = True
        return session.scalar(sa.select(sa.func.get_lock(_named(bind, name), WAIT_SECONDS if wait else 0))) == 1
    return True


@sa.event.listens_for(sa.pool.Pool, "checkin")
def _give_back(dbapi_connection, record) -> None:
    if record.info.pop(HOLDS_LOCKS, False) and dbapi_connection is not None:
        try:
            with closing(dbapi_connection.cursor()) as cursor:
                cursor.execute("SELECT RELEASE_ALL_LOCKS()")
        except Exception as exc:  # closed instead: the server then frees them
            record.invalidate(exc)


def worker_lock(worker: str) -> str:
    return f"worker:{worker}"


def key_lock(lock_key: str) -> str:
    """Held by a claim while it starts a task of the key, and by work on what the key's
    tasks act on that runs outside them (a worker's clean-up pass): none starts meanwhile."""
    return f"key:{lock_key}"


def dead(session: Session, workers) -> set[str]:
    """Those of `workers` whose lock is free. The lock is taken for the caller's transaction,
    so a namesake starting meanwhile cannot take the name until the caller has committed
    what it did on the dead worker's behalf."""
    return {w for w in workers if hold(session, worker_lock(w))}


class SessionLock:
    """A worker's own lock, held on a dedicated connection outside any transaction (an idle
    session, not an idle transaction holding back the server's clean-up)."""

    def __init__(self, engine: sa.Engine, worker: str, heartbeat_seconds: float):
        self.engine = engine
        self.worker = worker
        name = worker_lock(worker)
        if is_postgres(engine):
            self.settings = KEEPALIVES
            self.take_sql = sa.select(sa.func.pg_try_advisory_lock(_pg_key(name)))
            self.release_sql = sa.select(sa.func.pg_advisory_unlock(_pg_key(name)))
        else:
            self.settings = {"wait_timeout": max(IDLE_MIN, int(IDLE_BEATS * heartbeat_seconds))}
            self.take_sql = sa.select(sa.func.get_lock(_named(engine, name), 0))
            self.release_sql = sa.select(sa.func.release_lock(_named(engine, name)))
        self.conn: sa.Connection | None = None
        self.held = False

    def _try(self) -> bool:
        if self.conn is None:
            self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            for name, value in self.settings.items():
                self.conn.execute(sa.text(f"SET {name} = {int(value)}"))
        self.held = self.conn.scalar(self.take_sql) == 1
        return self.held

    def take(self) -> bool:
        """Take the lock; False when a live namesake holds it."""
        deadline = time.monotonic() + TAKE_SECONDS
        while not self._try():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def keep(self) -> None:
        """From the heartbeat: take the lock again on a new connection if the old one broke
        (the database restarted). Meanwhile this worker looked dead; its tasks may have been
        taken over, which the fence on every task write notices."""
        try:
            if self.conn is not None and self.held:
                self.conn.scalar(sa.select(1))
                return
        except sa.exc.DBAPIError:
            LOG.warning("worker %s: the connection holding its session lock broke; taking it again", self.worker)
            self.conn.invalidate()
            self.conn.close()
            self.conn = None
        if not self._try():
            LOG.error("worker %s: its session lock is held elsewhere (a namesake?)", self.worker)

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.scalar(self.release_sql)
            finally:
                self.conn.close()
                self.conn, self.held = None, False

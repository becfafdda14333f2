"""Whether a worker is alive, from its database session (PostgreSQL).

Each worker holds a session-level advisory lock, keyed on its name, on a connection of
its own for as long as it runs. The server releases it the moment that session ends, so
a worker that died (SIGKILL, a crash, its host gone once TCP keepalives give up) is
known dead at once, while a live one whose heartbeat is late (a long pause, an
overloaded host) still holds its lock and keeps its tasks. Leases remain the test
where the database has no such lock (SQLite, MySQL).
"""

from __future__ import annotations

import hashlib
import logging
import time

import sqlalchemy as sa
from sqlalchemy.orm import Session

from jeroboam.db.base import is_postgres

LOG = logging.getLogger("jeroboam.worker")
# How long a starting worker waits for a namesake's session to end (a killed predecessor
# whose server-side session has not noticed yet) before calling the name taken.
TAKE_SECONDS = 3.0
# The server closes a session whose client's host stopped answering after about
# idle + interval * count seconds (on TCP connections).
KEEPALIVES = {"tcp_keepalives_idle": 5, "tcp_keepalives_interval": 1, "tcp_keepalives_count": 3}


def lock_key(worker: str) -> int:
    """The advisory lock key of a worker name: 64 bits of a digest, signed as PostgreSQL's bigint."""
    digest = hashlib.sha256(f"jeroboam-worker:{worker}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def supported(engine: sa.Engine) -> bool:
    return is_postgres(engine)


def dead(session: Session, workers) -> set[str]:
    """Those of `workers` whose lock is free. The lock is taken for the caller's transaction
    (released when it ends), so a namesake starting meanwhile cannot take the name until
    the caller has committed what it did on the dead worker's behalf."""
    return {w for w in workers
            if session.scalar(sa.select(sa.func.pg_try_advisory_xact_lock(lock_key(w))))}


class SessionLock:
    """A worker's own lock, held on a dedicated connection outside any transaction (an idle
    session, not an idle transaction holding back the server's clean-up)."""

    def __init__(self, engine: sa.Engine, worker: str):
        self.engine = engine
        self.worker = worker
        self.key = lock_key(worker)
        self.conn: sa.Connection | None = None
        self.held = False

    def _try(self) -> bool:
        if self.conn is None:
            self.conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            for name, value in KEEPALIVES.items():
                self.conn.execute(sa.text(f"SET {name} = {int(value)}"))
        self.held = bool(self.conn.scalar(sa.select(sa.func.pg_try_advisory_lock(self.key))))
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
                self.conn.scalar(sa.select(sa.func.pg_advisory_unlock(self.key)))
            finally:
                self.conn.close()
                self.conn, self.held = None, False

"""Database plumbing shared by every model: the declarative base, engines, sessions."""

from __future__ import annotations

import datetime
import logging
import random
import sqlite3
import time
import uuid

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, sessionmaker


LOG = logging.getLogger("jeroboam.db")
# Serialization failures and deadlocks: the transaction may simply run again (PostgreSQL's
# SQLSTATEs; MySQL's lock wait timeout and deadlock error numbers).
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})
RETRYABLE_MYSQL_ERRORS = frozenset({1205, 1213})
RETRY_ATTEMPTS = 6
RETRY_FIRST_DELAY = 0.05  # seconds, doubled at each attempt, with jitter


class Base(DeclarativeBase):
    type_annotation_map = {dict: sa.JSON, list: sa.JSON}


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_uuid() -> str:
    return str(uuid.uuid4())


class UTCDateTime(sa.TypeDecorator):
    """Timestamps stored naive in UTC and handed back timezone-aware.

    SQLite keeps no offset, and clients (gophercloud) need RFC 3339 with one.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "mysql":  # MySQL's DATETIME drops fractions of a second unless told
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value


def _sqlite_pragmas(dbapi_conn, _record):
    cur = dbapi_conn.cursor()
    # WAL lets API readers run while a worker writes; busy_timeout waits out the
    # short write locks of other processes instead of failing at once.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False}, json_deserializer=orjson.loads)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    options = {}
    for plain, driver in (("postgresql://", "postgresql+psycopg://"), ("mysql://", "mysql+pymysql://"),
                          ("mariadb://", "mariadb+pymysql://")):
        if url.startswith(plain):
            url = driver + url[len(plain):]
    if url.startswith(("mysql", "mariadb")):
        # PostgreSQL's default: each statement sees what others committed before it. MySQL's
        # REPEATABLE READ would hand a transaction's later reads its first snapshot.
        options["isolation_level"] = "READ COMMITTED"
    # No pre-ping: it costs a round trip per request; connections are recycled instead and
    # a dropped one fails a single request.
    return sa.create_engine(url, pool_size=10, max_overflow=20, pool_recycle=300, json_deserializer=orjson.loads,
                            **options)


def make_sessionmaker(engine: sa.Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False)


def is_postgres(engine: sa.Engine) -> bool:
    return engine.dialect.name == "postgresql"


def is_contention(exc: BaseException) -> bool:
    """Whether another transaction was in the way: SQLite busy or locked beyond its busy
    timeout, a serialization failure or deadlock elsewhere."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES:
        return True
    if exc.orig.args and exc.orig.args[0] in RETRYABLE_MYSQL_ERRORS:
        return True
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def retrying(transaction, attempts: int = RETRY_ATTEMPTS):
    """Run transaction() (which opens and commits its own), again with a growing delay when
    another transaction was in the way."""
    for attempt in range(attempts):
        try:
            return transaction()
        except sa.exc.DBAPIError as exc:
            if attempt == attempts - 1 or not is_contention(exc):
                raise
            delay = RETRY_FIRST_DELAY * 2 ** attempt * (0.5 + random.random())
            LOG.warning("database contention (%s); trying again in %.2fs", exc.orig, delay)
            time.sleep(delay)


def locks_rows(engine: sa.Engine) -> bool:
    """Whether SELECT ... FOR UPDATE SKIP LOCKED works: PostgreSQL, MySQL 8, MariaDB 10.6."""
    if engine.dialect.name != "mysql":
        return is_postgres(engine)
    with engine.connect():  # the server's version is known once connected
        version = engine.dialect.server_version_info
    return version >= ((10, 6) if engine.dialect.is_mariadb else (8,))

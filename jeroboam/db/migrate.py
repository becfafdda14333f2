"""Schema migrations through Alembic, run from code (`jeroboam db upgrade`, and on `serve` start)."""

from __future__ import annotations

import functools
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant shared by every process of one deployment: the name of the migration lock.
_LOCK = 7262531


def _config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


@functools.cache
def heads() -> frozenset[str]:
    """The revisions this code expects the database to be at."""
    return frozenset(ScriptDirectory.from_config(_config("sqlite://")).get_heads())


def current(connection: sa.Connection) -> frozenset[str]:
    """The revisions the database is at (empty when it was never migrated)."""
    return frozenset(MigrationContext.configure(connection).get_current_heads())


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    cfg = _config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        # Many API and worker processes may start at once; one migrates, the rest wait.
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({_LOCK})"))
        elif engine.dialect.name == "mysql":
            # A session lock: MySQL's DDL commits implicitly, so a transaction lock would not last.
            connection.execute(sa.text(f"SELECT GET_LOCK('jeroboam-{_LOCK}', 600)"))
        cfg.attributes["connection"] = connection
        try:
            command.upgrade(cfg, revision)
        finally:
            if engine.dialect.name == "mysql":
                connection.execute(sa.text(f"SELECT RELEASE_LOCK('jeroboam-{_LOCK}')"))

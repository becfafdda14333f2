"""Schema migrations through Alembic, run from code (`jeroboam db upgrade`, and on `serve` start)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    cfg = _config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            # Many API and worker processes may start at once; one migrates, the rest wait.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(7262531)"))
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

"""Alembic environment: the URL comes from the caller (jeroboam.db.migrate), never from an ini."""

from alembic import context

from jeroboam.db import all_models

config = context.config
target_metadata = all_models.metadata()

connectable = config.attributes.get("connection")
if connectable is None:
    from jeroboam.db.base import make_engine

    with make_engine(config.get_main_option("sqlalchemy.url")).connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connectable, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()

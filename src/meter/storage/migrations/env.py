"""Alembic environment: runs on the connection meter.storage.db.migrate hands it."""

from __future__ import annotations

from alembic import context

from meter.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` run by hand: take the URL from the config.
    from meter.storage.db import sync_engine

    url = context.config.get_main_option("sqlalchemy.url") or ""
    connection = sync_engine(url).connect()

context.configure(connection=connection, target_metadata=metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()

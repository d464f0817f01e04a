"""Alembic environment: migrations run on the connection hcscan hands in (see scanner.store.db.migrate)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import scanner.store.models  # noqa: F401  (registers the tables on SQLModel.metadata)

target_metadata = SQLModel.metadata
connection = context.config.attributes.get("connection")
if connection is None:
    from sqlalchemy import create_engine

    engine = create_engine(context.config.get_main_option("sqlalchemy.url") or "sqlite:///hcscan.db")
    connection = engine.connect()

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

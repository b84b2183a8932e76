"""Alembic environment: runs on the connection that ``mailer.storage.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from mailer.storage.engine import capabilities
from mailer.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached by a bare `alembic` command
    raise RuntimeError("run migrations with `mailer db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=capabilities(connection.dialect).alter_in_batches,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

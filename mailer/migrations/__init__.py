"""Alembic migrations shipped in the package; run them with ``mailer db upgrade``."""

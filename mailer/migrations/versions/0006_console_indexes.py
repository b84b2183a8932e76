"""Indexes for the console's pages on large lists: a list's members newest first, a search
of members by name, and one subscriber's deliveries.

- ``ix_subscriptions_list_id_id`` (``subscriptions (list_id, id)``): a list's members page
  reads its 51 newest subscriptions in index order, where ``(list_id, status)`` made the
  database read and sort every subscription of the list (1,000,000 for a large list).
- ``ix_subscribers_name_folded``: the subscribers whose name begins with a prefix, ASCII
  letters folded, without reading them all (a list's search counts them first). On
  PostgreSQL ``lower(name) text_pattern_ops``: ``LIKE 'prefix%'`` reads it whatever the
  database's collation (a default index serves LIKE only under the C collation, and Debian's
  C.UTF-8 is not that). On SQLite ``name COLLATE NOCASE``, which orders names as
  ``lower(name)`` would (NOCASE folds ASCII letters, as SQLite's ``lower()`` does) and which
  SQLAlchemy can reflect, where it skips an expression index and the schema check against
  tables.py would warn.
- ``ix_deliveries_subscriber_id_id`` (``deliveries (subscriber_id, id)``): a subscriber's
  page lists their deliveries newest first; without it every delivery of every send was read
  (5,000,000 rows), and so was every erasure, whose cascade deletes a subscriber's
  deliveries.

Building them reads the three tables once (about 1 s per million rows here) and holds their
writes meanwhile: upgrade with the daemon stopped, as for every migration.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_subscriptions_list_id_id", "subscriptions", ["list_id", "id"])
    sqlite = op.get_context().dialect.name == "sqlite"
    folded = "name COLLATE NOCASE" if sqlite else "lower(name) text_pattern_ops"
    op.create_index("ix_subscribers_name_folded", "subscribers", [sa.text(folded)])
    op.create_index("ix_deliveries_subscriber_id_id", "deliveries", ["subscriber_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_subscriber_id_id", table_name="deliveries")
    op.drop_index("ix_subscribers_name_folded", table_name="subscribers")
    op.drop_index("ix_subscriptions_list_id_id", table_name="subscriptions")

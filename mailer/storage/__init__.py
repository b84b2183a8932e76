"""Storage: the only package that speaks SQL (SQLAlchemy 2 Core, asyncio; SQLite or PostgreSQL).

- ``tables``: the schema; ``mailer/migrations``: the Alembic revisions that build it;
- ``engine``: engines, SQLite pragmas, data folder, migrations;
- ``store``: the ``Store`` and its queries about lists and subscribers;
- ``sending``: the queries of campaigns, sends and deliveries (``store.sending``);
- ``pages``: what the subscriber pages read and write, and the figures of ``/metrics``
  (``store.pages``).
"""

from mailer.storage.engine import ensure_data_dir, head_revision
from mailer.storage.store import (
    ImportTally,
    ListImport,
    ListMeta,
    ListSummary,
    Store,
    SubscriberRow,
    SubscriberView,
)

__all__ = [
    "ImportTally",
    "ListImport",
    "ListMeta",
    "ListSummary",
    "Store",
    "SubscriberRow",
    "SubscriberView",
    "ensure_data_dir",
    "head_revision",
]

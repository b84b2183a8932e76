"""Storage: the only package that speaks SQL (SQLAlchemy 2 Core, asyncio; SQLite or PostgreSQL).

By noun, each table written by one module:

- ``tables``: the schema; ``mailer/migrations``: the Alembic revisions that build it;
- ``engine``: engines, SQLite pragmas, data folder, migrations, the database's
  ``Capabilities`` (the one module that names a dialect);
- ``database``: the ``Database`` handle the nouns share (transactions, write turns);
- ``store``: the ``Store``, which opens the database and composes the nouns;
- ``lists`` (``store.lists``): lists; ``imports``: a list file's import into one;
- ``subscribers`` (``store.subscribers``): subscribers, subscriptions, consent history;
- ``suppressions``: the addresses never mailed again, and their history;
- ``consent`` (``store.consent``): what the subscriber pages change (sign-up, confirm,
  unsubscribe, preferences);
- ``campaigns`` (``store.campaigns``): campaigns, their lists and events;
- ``sends`` (``store.sends``): sends and their moves (``mailer.lifecycle``);
- ``deliveries`` (``store.deliveries``): deliveries, their leases and results, the skip rule;
- ``figures`` (``store.figures``): counts, rates and the ``/metrics`` figures (read-only);
- ``staff`` (``store.staff``): the console's staff accounts and their sessions;
- ``audit`` (``store.audit``): the audit log of what staff change (append-only);
- ``lookups``: read-only look-ups several nouns share.

The value objects they take and return live in ``mailer.models``.
"""

from mailer.models import (
    ImportTally,
    ListMeta,
    ListSummary,
    SubscriberRow,
    SubscriberView,
)
from mailer.storage.engine import Capabilities, ensure_data_dir, head_revision, sending_lock
from mailer.storage.imports import IMPORT_SOURCE_PREFIX, ListImport
from mailer.storage.store import Store

__all__ = [
    "IMPORT_SOURCE_PREFIX",
    "Capabilities",
    "ImportTally",
    "ListImport",
    "ListMeta",
    "ListSummary",
    "Store",
    "SubscriberRow",
    "SubscriberView",
    "ensure_data_dir",
    "head_revision",
    "sending_lock",
]

"""The Store: opens the database and composes the storage nouns around one handle.

``store.lists``, ``store.subscribers``, ``store.consent``, ``store.campaigns``,
``store.sends``, ``store.deliveries``, ``store.figures``, ``store.staff``, ``store.audit``,
``store.bounces``, ``store.api_keys``, ``store.api_people`` and ``store.webhooks``
each own their tables (their modules' docstrings name them); they share one
:class:`~mailer.storage.database.Database` (engine, capabilities, transactions, write turns)
and never import this module. Writes no table itself.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Self

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from mailer.settings import Settings
from mailer.storage import engine as _engine
from mailer.storage.api_keys import ApiKeys
from mailer.storage.api_people import ApiPeople
from mailer.storage.audit import Audit
from mailer.storage.bounces import Bounces
from mailer.storage.browse import Browse
from mailer.storage.campaigns import Campaigns
from mailer.storage.consent import Consent
from mailer.storage.database import Database
from mailer.storage.deliveries import Deliveries
from mailer.storage.engine import Capabilities
from mailer.storage.figures import Figures
from mailer.storage.lists import Lists
from mailer.storage.overview import Overview
from mailer.storage.sends import Sends
from mailer.storage.staff import Staff
from mailer.storage.subscribers import Subscribers
from mailer.storage.webhooks import Webhooks


class Store:
    """Owns the engine; use as ``async with Store.open(settings) as store``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.db = Database(engine)
        self.capabilities: Capabilities = self.db.capabilities
        self.lists = Lists(self.db)
        self.subscribers = Subscribers(self.db)
        self.consent = Consent(self.db)
        self.campaigns = Campaigns(self.db)
        self.sends = Sends(self.db)
        self.deliveries = Deliveries(self.db)
        self.figures = Figures(self.db)
        self.staff = Staff(self.db)
        self.audit = Audit(self.db)
        self.bounces = Bounces(self.db)
        self.api_keys = ApiKeys(self.db)
        self.api_people = ApiPeople(self.db)  # the API's compare-and-set of a subscriber
        self.webhooks = Webhooks(self.db)
        self.overview = Overview(self.db)  # the console's reads about sends (no table)
        self.browse = Browse(self.db)  # the console's reads about people (no table)

    @classmethod
    def open(cls, settings: Settings) -> Store:
        return cls(_engine.create_engine(settings))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.engine.dispose()

    def once_across_daemons(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Whether this process may do the periodic job ``name`` now (one daemon of a
        cluster does it; see :meth:`Database.once_across_daemons`)."""
        return self.db.once_across_daemons(name)

    async def ping(self) -> None:
        async with self.db.begin() as conn:
            await conn.execute(text("SELECT 1"))

    async def upgrade(self) -> tuple[str | None, str | None]:
        return await _engine.upgrade(self.engine)

    async def revision(self) -> str | None:
        return await _engine.current_revision(self.engine)


__all__ = ["Store"]

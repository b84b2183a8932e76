"""What the REST API changes about one subscriber that no other noun offers: their name,
language, time zone and attributes, changed only if the row is still the version the client
read (a compare-and-set on ``updated_at``, so a lost update is refused, never applied).

Writes no table itself: the change goes through ``subscribers.update_subscriber`` (the
writer of ``subscribers``), inside one transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from mailer.storage import subscribers as writer
from mailer.storage.database import Database
from mailer.storage.tables import subscribers

CHANGEABLE = frozenset({"name", "locale", "timezone", "attributes"})


class ApiPeople:
    """The API's own reads and writes about subscribers (``store.api_people``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def public_id(self, email_key: str) -> str | None:
        """The public id of the subscriber with this address key (None: there is none)."""
        async with self._db.begin() as conn:
            found = (
                await conn.execute(
                    select(subscribers.c.public_id).where(subscribers.c.email_key == email_key)
                )
            ).scalar()
        return None if found is None else str(found)

    async def stamp(self, public_id: str) -> datetime | None:
        """When the subscriber last changed (None: no such subscriber)."""
        async with self._db.begin() as conn:
            found = (
                await conn.execute(
                    select(subscribers.c.updated_at).where(subscribers.c.public_id == public_id)
                )
            ).scalar()
        return found if isinstance(found, datetime) else None

    async def update(
        self, public_id: str, changes: dict[str, Any], *, expected: datetime, now: datetime
    ) -> bool:
        """Apply ``changes`` (of :data:`CHANGEABLE`) if the subscriber is still at
        ``expected`` (its :meth:`stamp` when the client read it); False, and nothing
        written, if it changed since or is gone."""
        unknown = set(changes) - CHANGEABLE
        if unknown:
            raise ValueError(f"not changeable: {', '.join(sorted(unknown))}")
        async with self._db.begin(write=True) as conn:
            row = (
                await conn.execute(
                    select(subscribers.c.id, subscribers.c.updated_at).where(
                        subscribers.c.public_id == public_id
                    )
                )
            ).one_or_none()
            if row is None or row.updated_at != expected:
                return False
            # a version after the one read, even on a clock that did not move
            await writer.update_subscriber(conn, int(row.id), changes, now=_after(now, expected))
        return True


def _after(now: datetime, expected: datetime) -> datetime:
    """A time after ``expected`` (the version read), ``now`` when it is."""
    return now if now > expected else expected + timedelta(microseconds=1)

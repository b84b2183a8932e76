"""The database side of one list import, inside the transaction ``store.lists.import_list``
opens: the caller streams batches of validated rows in, and everything lands or nothing does
(a dry run does it all, then ``import_list`` rolls it back).

Writes no table itself: it decides, and ``subscribers`` writes the subscribers and
subscriptions it decides on.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.models import ImportTally, SubscriberRow, SubscriptionStatus
from mailer.storage import lookups
from mailer.storage import subscribers as writer
from mailer.storage.tables import subscribers, subscriptions

IMPORT_SOURCE_PREFIX = "import:"


class ListImport:
    """One list file's import into one list, inside the caller's transaction."""

    def __init__(self, conn: AsyncConnection, *, list_id: int, source: str, now: datetime) -> None:
        self._conn = conn
        self._list_id = list_id
        self._source = source
        self._now = now
        self.tally = ImportTally()

    async def add(self, batch: Sequence[SubscriberRow]) -> None:
        """Merge a batch of rows whose keys are unique within the file."""
        if not batch:
            return
        conn, tally = self._conn, self.tally
        keys = [r.key for r in batch]
        suppressed = await lookups.suppressed_keys(conn, keys)
        existing = {
            r.email_key: r
            for r in (
                await conn.execute(select(subscribers).where(subscribers.c.email_key.in_(keys)))
            ).all()
        }
        new_rows = [r for r in batch if r.key not in existing and r.key not in suppressed]
        if new_rows:
            for r in await writer.insert_subscribers(conn, new_rows, self._now):
                existing[r.email_key] = r
        fresh = {r.key for r in new_rows}
        current = await self._statuses(
            # Only subscribers that existed before this batch can have a subscription already.
            [existing[r.key].id for r in batch if r.key in existing and r.key not in fresh]
        )
        to_subscribe: list[dict[str, Any]] = []
        for row in batch:
            if row.key in suppressed:
                tally.suppressed.append((row.line, row.email))
                continue
            stored = existing[row.key]
            if row.key not in fresh:
                if stored.email != row.email:
                    tally.merged.append((row.line, row.email, stored.email))
                changes = _changes(stored, row)
                if changes:
                    await writer.update_subscriber(conn, stored.id, changes, now=self._now)
                    tally.updated += 1
            status = current.get(stored.id)
            if status == SubscriptionStatus.UNSUBSCRIBED:
                tally.kept_unsubscribed.append((row.line, row.email))
            elif status is None:
                to_subscribe.append(self._subscription(stored.id))
                if row.key in fresh:
                    tally.added += 1
                else:
                    tally.subscribed_existing += 1
            elif row.key not in fresh and not _changes(stored, row):
                tally.unchanged += 1
        if to_subscribe:
            await writer.insert_subscriptions(conn, to_subscribe)

    async def _statuses(self, ids: list[int]) -> dict[int, str]:
        if not ids:
            return {}
        query = select(subscriptions.c.subscriber_id, subscriptions.c.status).where(
            subscriptions.c.list_id == self._list_id,
            subscriptions.c.subscriber_id.in_(ids),
        )
        return dict((await self._conn.execute(query)).all())

    def _subscription(self, subscriber_id: int) -> dict[str, Any]:
        return {
            "subscriber_id": subscriber_id,
            "list_id": self._list_id,
            "status": SubscriptionStatus.SUBSCRIBED.value,
            "source": self._source,
            "consent_at": self._now,
            "confirmed_at": self._now,
            "created_at": self._now,
            "updated_at": self._now,
        }

    async def finish(self, seen: Container[str], *, prune: bool) -> ImportTally:
        """Report (and with ``prune`` remove) imported members absent from the file."""
        query = (
            select(subscriptions.c.id, subscribers.c.email, subscribers.c.email_key)
            .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
            .where(
                subscriptions.c.list_id == self._list_id,
                subscriptions.c.status != SubscriptionStatus.UNSUBSCRIBED,
                subscriptions.c.source.startswith(IMPORT_SOURCE_PREFIX),
            )
            .order_by(subscribers.c.email_key)
        )
        gone: list[int] = []
        async for sub_id, email, key in await self._conn.stream(query):
            if key not in seen:
                self.tally.vanished.append(email)
                gone.append(sub_id)
        if prune:
            await writer.delete_subscriptions(self._conn, gone)
            self.tally.pruned = len(gone)
        return self.tally


def _changes(stored: Row[Any], row: SubscriberRow) -> dict[str, Any]:
    """Fields the file sets differently from the database (a column left out changes nothing)."""
    changes: dict[str, Any] = {}
    if row.name is not None and row.name != stored.name:
        changes["name"] = row.name
    if row.locale is not None and row.locale != stored.locale:
        changes["locale"] = row.locale
    if row.timezone is not None and row.timezone != stored.timezone:
        changes["timezone"] = row.timezone
    if row.attributes and {**(stored.attributes or {}), **row.attributes} != (
        stored.attributes or {}
    ):
        changes["attributes"] = {**(stored.attributes or {}), **row.attributes}
    return changes

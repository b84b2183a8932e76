"""Read-only look-ups by name that several storage nouns need inside their transactions:
a list's id by slug, a subscriber's id by address key, which addresses are suppressed.

Writes no table (and must not: each table has one writer, named in its module's docstring).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.errors import NotFoundError
from mailer.storage.tables import lists, subscribers, suppressions


async def list_id(conn: AsyncConnection, slug: str) -> int:
    found = (await conn.execute(select(lists.c.id).where(lists.c.slug == slug))).scalar()
    if found is None:
        known = (await conn.execute(select(lists.c.slug).order_by(lists.c.slug))).scalars().all()
        hint = f"; known lists: {', '.join(known)}" if known else "; no list is loaded yet"
        raise NotFoundError(f"unknown list {slug!r}{hint}")
    return int(found)


async def subscriber_id(conn: AsyncConnection, key: str) -> int | None:
    found = (
        await conn.execute(select(subscribers.c.id).where(subscribers.c.email_key == key))
    ).scalar()
    return None if found is None else int(found)


async def require_subscriber(conn: AsyncConnection, key: str) -> int:
    found = await subscriber_id(conn, key)
    if found is None:
        raise NotFoundError(f"no subscriber with the address {key}")
    return found


async def suppressed_keys(conn: AsyncConnection, keys: Iterable[str]) -> set[str]:
    keys = list(keys)
    if not keys:
        return set()
    query = select(suppressions.c.email_key).where(suppressions.c.email_key.in_(keys))
    return set((await conn.execute(query)).scalars())


async def suppression_reason(conn: AsyncConnection, key: str) -> str | None:
    reason = (
        await conn.execute(select(suppressions.c.reason).where(suppressions.c.email_key == key))
    ).scalar()
    return None if reason is None else str(reason)

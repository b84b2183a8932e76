"""The audit log: every change staff make, who made it, when and from where; append-only.

Writes ``audit_log`` (and no other table). :class:`Audit` (``store.audit``) records in a
transaction of its own and reads a page of the log; :func:`record` writes the entry inside the
caller's transaction, for a noun that wants the change and its entry to commit together.
Nothing updates or deletes a line.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.models import AuditEntry
from mailer.storage.database import Database
from mailer.storage.tables import audit_log

# The longest text kept per field (longer is cut): a line is a note, not a copy of the data.
_ACTOR, _ACTION, _TARGET, _CLIENT, _DETAIL = 320, 64, 500, 64, 1000
MAX_PAGE = 500


def _details(details: Mapping[str, Any] | None) -> dict[str, str | int | bool | None]:
    """A plain dict of str -> str | int | bool | None (strings cut); TypeError otherwise."""
    plain: dict[str, str | int | bool | None] = {}
    for key, value in (details or {}).items():
        if not isinstance(key, str):
            raise TypeError(f"audit details: key {key!r} is not a string")
        if isinstance(value, str):
            plain[key] = value[:_DETAIL]
        elif value is None or isinstance(value, int):  # bool is an int
            plain[key] = value
        else:
            raise TypeError(
                f"audit details: {key!r} is a {type(value).__name__}; "
                "only str, int, bool or None are kept"
            )
    return plain


async def record(
    conn: AsyncConnection,
    *,
    actor: str,
    action: str,
    target: str,
    details: Mapping[str, Any] | None,
    client: str | None,
    now: datetime,
) -> None:
    """Append one entry inside the caller's transaction."""
    await conn.execute(
        insert(audit_log).values(
            at=now, actor=actor[:_ACTOR], action=action[:_ACTION], target=target[:_TARGET],
            details=_details(details), client=None if client is None else client[:_CLIENT],
        )
    )  # fmt: skip


class Audit:
    """The audit log (``store.audit``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        details: Mapping[str, Any] | None = None,
        client: str | None,
        now: datetime,
    ) -> None:
        """Append one entry, in a transaction of its own."""
        async with self._db.begin(write=True) as conn:
            await record(
                conn, actor=actor, action=action, target=target, details=details,
                client=client, now=now,
            )  # fmt: skip

    async def page(
        self,
        *,
        before: int | None = None,
        limit: int = 50,
        actor: str | None = None,
        action: str | None = None,
    ) -> list[AuditEntry]:
        """Up to ``limit`` entries (at most 500), newest first, with an id below ``before``
        (the last id of the previous page), by this ``actor`` / of this ``action`` if given."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(min(limit, MAX_PAGE))
        if before is not None:
            query = query.where(audit_log.c.id < before)
        if actor is not None:
            query = query.where(audit_log.c.actor == actor)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).all()
        return [
            AuditEntry(
                id=int(r.id), at=r.at, actor=r.actor, action=r.action, target=r.target,
                details=dict(r.details or {}), client=r.client,
            )
            for r in rows
        ]  # fmt: skip

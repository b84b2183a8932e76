"""The REST API's keys and the answers kept for its ``Idempotency-Key``.

Writes ``api_keys`` and ``api_idempotency`` (and no other table). A key is ``mlr_`` and 43
characters of URL-safe base64 (256 random bits); only its SHA-256 is stored, with its first 12
characters to tell keys apart. ``store.api_keys`` creates, finds (by the hash, revoked keys
never), lists and revokes keys; every creation and revocation is in the audit log.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update

from mailer.errors import NotFoundError, StateError
from mailer.models import ApiKey, IdempotentAnswer, Scope
from mailer.storage import audit
from mailer.storage.database import Database
from mailer.storage.hook_tables import api_idempotency, api_keys

KEY_PREFIX = "mlr_"
_SHOWN = len(KEY_PREFIX) + 8
_TOUCH = timedelta(minutes=1)  # last_used_at is written at most once a minute per key
KEEP_ANSWERS = timedelta(hours=24)
_PURGE = timedelta(minutes=1)
_ABANDONED = timedelta(minutes=1)  # an answer still 'in progress' after this was abandoned


def new_key() -> str:
    """A fresh API key: ``mlr_`` and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(raw: str) -> str:
    """The SHA-256 hex of a key, what is stored and looked up."""
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=int(row.id),
        name=row.name,
        prefix=row.prefix,
        scopes=frozenset(Scope(s) for s in row.scopes if s in Scope._value2member_map_),
        created_by=row.created_by,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


class ApiKeys:
    """The API's keys (``store.api_keys``)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._purged: datetime | None = None  # answers past a day are deleted once a minute

    async def create(
        self, *, name: str, scopes: Iterable[Scope], actor: str, now: datetime
    ) -> tuple[ApiKey, str]:
        """A new key named ``name`` (unique); the stored key and the raw key, shown once."""
        raw = new_key()
        wanted = sorted({Scope(s).value for s in scopes})
        async with self._db.begin(write=True) as conn:
            taken = await conn.execute(select(api_keys.c.id).where(api_keys.c.name == name))
            if taken.first() is not None:
                raise StateError(f"an API key named {name!r} already exists; pick another name")
            key_id = (
                await conn.execute(
                    insert(api_keys)
                    .values(
                        name=name,
                        prefix=raw[:_SHOWN],
                        key_hash=key_hash(raw),
                        scopes=wanted,
                        created_by=actor,
                        created_at=now,
                    )
                    .returning(api_keys.c.id)
                )
            ).scalar_one()
            await audit.record(
                conn,
                actor=actor,
                action="api_key.create",
                target=f"api-key:{name}",
                details={"scopes": " ".join(wanted)},
                client=None,
                now=now,
            )
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).one()
        return _key(row), raw

    async def find(self, raw: str, *, now: datetime) -> ApiKey | None:
        """The active key ``raw`` is, or None; notes when it was last used (once a minute)."""
        if not raw.startswith(KEY_PREFIX) or len(raw) > 200:
            return None
        async with self._db.begin() as conn:
            row = (
                await conn.execute(select(api_keys).where(api_keys.c.key_hash == key_hash(raw)))
            ).first()
        if row is None or row.revoked_at is not None:
            return None
        if row.last_used_at is None or now - row.last_used_at >= _TOUCH:
            async with self._db.begin(write=True) as conn:
                await conn.execute(
                    update(api_keys).where(api_keys.c.id == row.id).values(last_used_at=now)
                )
            return replace(_key(row), last_used_at=now)
        return _key(row)

    async def all(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        async with self._db.begin() as conn:
            rows = (await conn.execute(select(api_keys).order_by(api_keys.c.id))).all()
        return [_key(r) for r in rows]

    async def revoke(self, name: str, *, actor: str, now: datetime) -> ApiKey:
        """Revoke the key named ``name`` (at once: its next request gets a 401)."""
        async with self._db.begin(write=True) as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.name == name))).first()
            if row is None:
                raise NotFoundError(f"no API key is named {name!r} (see `mailer api-keys list`)")
            if row.revoked_at is None:
                await conn.execute(
                    update(api_keys).where(api_keys.c.id == row.id).values(revoked_at=now)
                )
                await audit.record(
                    conn,
                    actor=actor,
                    action="api_key.revoke",
                    target=f"api-key:{name}",
                    details=None,
                    client=None,
                    now=now,
                )
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == row.id))).one()
        return _key(row)

    async def remembered(
        self, key_id: int, idem_key: str, *, fingerprint: str, now: datetime
    ) -> IdempotentAnswer | None:
        """The answer kept for ``idem_key`` (status 0: still being answered), or None after
        noting this request as in progress: the caller answers it and calls :meth:`remember`.
        Answers older than 24 h are forgotten (and deleted, at most once a minute)."""
        async with self._db.begin(write=True) as conn:
            if self._purged is None or now - self._purged >= _PURGE:
                await conn.execute(
                    delete(api_idempotency).where(api_idempotency.c.created_at < now - KEEP_ANSWERS)
                )
                self._purged = now
            row = (
                await conn.execute(
                    select(api_idempotency).where(
                        api_idempotency.c.key_id == key_id, api_idempotency.c.idem_key == idem_key
                    )
                )
            ).first()
            stale = row is not None and (
                row.created_at < now - KEEP_ANSWERS
                or (row.status == 0 and row.created_at < now - _ABANDONED)
            )
            if row is not None and not stale:
                return IdempotentAnswer(
                    fingerprint=row.fingerprint,
                    status=int(row.status),
                    body=row.body,
                    headers=dict(row.headers or {}),
                    created_at=row.created_at,
                )
            if row is not None:  # past a day, or a request that never finished: forgotten
                await conn.execute(delete(api_idempotency).where(api_idempotency.c.id == row.id))
            noted = await conn.execute(
                self._db.insert(api_idempotency)
                .values(
                    key_id=key_id,
                    idem_key=idem_key,
                    fingerprint=fingerprint,
                    status=0,
                    body="",
                    headers={},
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["key_id", "idem_key"])
            )
            if not noted.rowcount:  # a request with this key got in first, just now
                return IdempotentAnswer(
                    fingerprint=fingerprint, status=0, body="", headers={}, created_at=now
                )
        return None

    async def remember(
        self, key_id: int, idem_key: str, *, status: int, body: str, headers: dict[str, str]
    ) -> None:
        """Keep the answer given to the request :meth:`remembered` noted."""
        async with self._db.begin(write=True) as conn:
            await conn.execute(
                update(api_idempotency)
                .where(api_idempotency.c.key_id == key_id, api_idempotency.c.idem_key == idem_key)
                .values(status=status, body=body, headers=headers)
            )

    async def forget(self, key_id: int, idem_key: str) -> None:
        """Drop the note of a request that failed without an answer worth keeping (a 5xx):
        the client may try again with the same key."""
        async with self._db.begin(write=True) as conn:
            await conn.execute(
                delete(api_idempotency).where(
                    api_idempotency.c.key_id == key_id, api_idempotency.c.idem_key == idem_key
                )
            )

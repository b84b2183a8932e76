"""Staff: the console's accounts and their signed-in sessions.

Writes ``staff_users`` and ``staff_sessions`` (and no other table; the audit log is
``audit``'s). Addresses are stored and compared lower-cased. A change of role, of the disabled
flag, of the password or of the TOTP secret ends the user's sessions in the same transaction;
a login's rehash (new hashing parameters) keeps them. Hashing, checking and TOTP codes are
``mailer.accounts``'; this module only keeps what it is given.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.errors import NotFoundError, StateError
from mailer.models import Role, StaffSession, StaffUser
from mailer.storage.database import Database
from mailer.storage.tables import staff_sessions, staff_users

# A session's last_seen_at is written again only when older than this: a request does not
# write, and the idle timeout is exact to within this much.
SEEN_EVERY = timedelta(seconds=60)


def email_key(email: str) -> str:
    """How a staff address is stored and compared."""
    return email.strip().lower()


class Staff:
    """The console's accounts and sessions (``store.staff``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self,
        email: str,
        *,
        name: str | None,
        role: Role,
        password_hash: str | None,
        now: datetime,
    ) -> StaffUser:
        """A new account; StateError when the address has one already."""
        key = email_key(email)
        query = (
            self._db.insert(staff_users)
            .values(
                email=key, name=name, role=Role(role).value, locale=None,
                password_hash=password_hash, totp_secret=None, disabled=False,
                created_at=now, updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["email"])
            .returning(*staff_users.c)
        )  # fmt: skip
        async with self._db.begin(write=True) as conn:
            row = (await conn.execute(query)).one_or_none()
            if row is None:
                raise StateError(
                    f"{key} already has a staff account; change it with set-role, "
                    "reset-password, disable or enable"
                )
        return _user(row)

    async def get(self, email: str) -> StaffUser | None:
        async with self._db.begin() as conn:
            row = (
                await conn.execute(
                    select(staff_users).where(staff_users.c.email == email_key(email))
                )
            ).one_or_none()
        return None if row is None else _user(row)

    async def by_id(self, user_id: int) -> StaffUser | None:
        async with self._db.begin() as conn:
            row = (
                await conn.execute(select(staff_users).where(staff_users.c.id == user_id))
            ).one_or_none()
        return None if row is None else _user(row)

    async def all(self) -> list[StaffUser]:
        """Every account, in address order."""
        async with self._db.begin() as conn:
            rows = (await conn.execute(select(staff_users).order_by(staff_users.c.email))).all()
        return [_user(r) for r in rows]

    async def set_role(self, email: str, role: Role, *, now: datetime) -> StaffUser:
        """Change the role; the user's sessions end (they sign in again with the new one)."""
        return await self._change(email, now=now, role=Role(role).value)

    async def set_disabled(self, email: str, disabled: bool, *, now: datetime) -> StaffUser:
        """Disable (or enable) the account; its sessions end."""
        return await self._change(email, now=now, disabled=disabled)

    async def set_password(self, email: str, password_hash: str, *, now: datetime) -> StaffUser:
        """A new password (its hash); the user's sessions end."""
        return await self._change(email, now=now, password_hash=password_hash)

    async def set_totp(self, email: str, secret: str | None, *, now: datetime) -> StaffUser:
        """A new TOTP secret, or none; the user's sessions end."""
        return await self._change(email, now=now, totp_secret=secret, totp_step=None)

    async def rehash(self, user_id: int, password_hash: str) -> None:
        """The same password hashed with today's parameters, at login: sessions are kept."""
        async with self._db.begin(write=True) as conn:
            result = await conn.execute(
                update(staff_users)
                .where(staff_users.c.id == user_id)
                .values(password_hash=password_hash)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no staff account has id {user_id}")

    async def use_totp_step(self, user_id: int, step: int) -> bool:
        """Record that the TOTP code of ``step`` signed the user in; False when that step, or
        a later one, was used already (a replayed code)."""
        async with self._db.begin(write=True) as conn:
            result = await conn.execute(
                update(staff_users)
                .where(
                    staff_users.c.id == user_id,
                    (staff_users.c.totp_step.is_(None)) | (staff_users.c.totp_step < step),
                )
                .values(totp_step=step)
            )
        return bool(result.rowcount)

    async def set_locale(self, user_id: int, locale: str | None, *, now: datetime) -> None:
        """The language the console speaks to this user (None: the browser's)."""
        async with self._db.begin(write=True) as conn:
            result = await conn.execute(
                update(staff_users)
                .where(staff_users.c.id == user_id)
                .values(locale=locale, updated_at=now)
            )
            if result.rowcount == 0:
                raise NotFoundError(f"no staff account has id {user_id}")

    async def _change(self, email: str, *, now: datetime, **values: Any) -> StaffUser:
        key = email_key(email)
        async with self._db.begin(write=True) as conn:
            row = (
                await conn.execute(
                    update(staff_users)
                    .where(staff_users.c.email == key)
                    .values(updated_at=now, **values)
                    .returning(*staff_users.c)
                )
            ).one_or_none()
            if row is None:
                raise NotFoundError(f"no staff account for {key}; add one with `mailer users add`")
            await _close_all(conn, int(row.id))
        return _user(row)

    # sessions

    async def open_session(
        self, user_id: int, *, id_hash: str, csrf: str, client: str | None, now: datetime
    ) -> None:
        """Keep a new session (``id_hash``: the sha256 hex of its cookie value);
        NotFoundError for an unknown user, StateError for a disabled one."""
        async with self._db.begin(write=True) as conn:
            disabled = (
                await conn.execute(
                    select(staff_users.c.disabled).where(staff_users.c.id == user_id)
                )
            ).scalar()
            if disabled is None:
                raise NotFoundError(f"no staff account has id {user_id}")
            if disabled:
                raise StateError(f"staff account {user_id} is disabled; it cannot sign in")
            await conn.execute(
                insert(staff_sessions).values(
                    id_hash=id_hash, user_id=user_id, csrf=csrf, client=client,
                    created_at=now, last_seen_at=now,
                )
            )  # fmt: skip

    async def session(
        self, id_hash: str, *, now: datetime, idle: timedelta, absolute: timedelta
    ) -> StaffSession | None:
        """The live session ``id_hash`` names, with its user; None when unknown, idle for
        more than ``idle``, older than ``absolute`` or its user disabled (then the row is
        deleted). ``last_seen_at`` is written only when more than a minute old."""
        now = now.astimezone(UTC)
        query = (
            select(
                staff_sessions.c.csrf,
                staff_sessions.c.created_at.label("session_created_at"),
                staff_sessions.c.last_seen_at,
                *staff_users.c,
            )
            .join(staff_users, staff_users.c.id == staff_sessions.c.user_id)
            .where(staff_sessions.c.id_hash == id_hash)
        )
        async with self._db.begin() as conn:
            row = (await conn.execute(query)).one_or_none()
        if row is None:
            return None
        created, seen = row.session_created_at, row.last_seen_at
        if row.disabled or now - seen > idle or now - created > absolute:
            await self.close_session(id_hash)
            return None
        if now - seen > SEEN_EVERY:
            async with self._db.begin(write=True) as conn:
                await conn.execute(
                    update(staff_sessions)
                    .where(staff_sessions.c.id_hash == id_hash, staff_sessions.c.last_seen_at < now)
                    .values(last_seen_at=now)
                )
            seen = now
        return StaffSession(user=_user(row), csrf=row.csrf, created_at=created, last_seen_at=seen)

    async def close_session(self, id_hash: str) -> None:
        """End one session (logout); nothing happens when it has ended already."""
        async with self._db.begin(write=True) as conn:
            await conn.execute(delete(staff_sessions).where(staff_sessions.c.id_hash == id_hash))

    async def purge_sessions(self, *, now: datetime, idle: timedelta, absolute: timedelta) -> int:
        """Delete every session past its idle or absolute limit (run at each sign-in, so rows
        of browsers that never came back do not pile up); how many went."""
        now = now.astimezone(UTC)
        async with self._db.begin(write=True) as conn:
            result = await conn.execute(
                delete(staff_sessions).where(
                    (staff_sessions.c.last_seen_at < now - idle)
                    | (staff_sessions.c.created_at < now - absolute)
                )
            )
        return int(result.rowcount or 0)

    async def close_sessions(self, user_id: int) -> int:
        """End every session of a user; how many there were."""
        async with self._db.begin(write=True) as conn:
            return await _close_all(conn, user_id)


async def _close_all(conn: AsyncConnection, user_id: int) -> int:
    result = await conn.execute(delete(staff_sessions).where(staff_sessions.c.user_id == user_id))
    return int(result.rowcount)


def _user(row: Row[Any]) -> StaffUser:
    return StaffUser(
        id=int(row.id),
        email=row.email,
        name=row.name,
        role=Role(row.role),
        disabled=bool(row.disabled),
        locale=row.locale,
        password_hash=row.password_hash,
        totp_secret=row.totp_secret,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )

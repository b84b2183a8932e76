"""The handle every storage noun module works through: the engine, its capabilities, the
transaction helper and this process's turns at writing.

:class:`Database` is built by ``store.Store`` and handed to each noun (``subscribers``,
``lists``, ``campaigns``, ``sends``, ``deliveries``, ``consent``, ``figures``), so that none
of them imports ``store``. Writes no table.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Table, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailer.errors import NotFoundError, StateError, StorageError, StorageUnavailable
from mailer.storage.engine import Capabilities, capabilities, describe_failure


class WriteTurns:
    """One writer of this process at a time: first come, first served, urgent first.

    SQLite has one writer. Without this, writers wait in SQLite's busy handler, whose sleeps
    grow to 100 ms and favour no one, so a small send's claim could lose to a large send's
    group commits again and again. Here they queue in order, and a claim (``urgent``: the
    first message of a send waits for it) goes ahead of results waiting to be recorded.
    """

    def __init__(self) -> None:
        self._busy = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._normal: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def turn(self, *, urgent: bool = False) -> AsyncIterator[None]:
        if self._busy:
            waiter = asyncio.get_running_loop().create_future()
            (self._urgent if urgent else self._normal).append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._next()  # the turn came with the cancellation: pass it on
                raise
        self._busy = True
        try:
            yield
        finally:
            self._next()

    def _next(self) -> None:
        """Hand the turn to the next waiter (it stays busy), or free it."""
        for queue in (self._urgent, self._normal):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():  # a cancelled waiter is skipped
                    waiter.set_result(None)
                    return
        self._busy = False


class Database:
    """The engine with what it can do, and transactions that speak mailer's errors."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.capabilities: Capabilities = capabilities(engine.dialect)
        self._turns = WriteTurns()

    @asynccontextmanager
    async def begin(
        self, *, write: bool = False, urgent: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """A transaction; driver errors become StorageError / StorageUnavailable.

        ``write``: the transaction writes; where the database has one writer, it takes its
        turn among this process's writers first (see :class:`WriteTurns`), ahead of the
        others when ``urgent``. Other processes still meet SQLite's busy timeout.
        """
        if write and self.capabilities.one_writer:
            async with self._turns.turn(urgent=urgent), self.begin() as conn:
                yield conn
            return
        try:
            async with self.engine.begin() as conn:
                yield conn
        except (NotFoundError, StateError):
            raise
        except IntegrityError as exc:
            raise StorageError(f"the database refused the change: {exc.orig}") from None
        except (SQLAlchemyError, OSError) as exc:
            raise StorageUnavailable(describe_failure(self.engine, exc)) from None

    def insert(self, table: Table) -> Any:
        """An INSERT into ``table`` that knows ``on_conflict_do_nothing``."""
        return self.capabilities.insert(table)

    @asynccontextmanager
    async def once_across_daemons(self, name: str) -> AsyncIterator[bool]:
        """Whether this process may do the periodic job ``name`` now: with advisory locks, a
        session lock that one daemon of the cluster holds while it works (the others get
        False and skip the job); otherwise always True (one daemon per database)."""
        if not self.capabilities.advisory_locks:
            yield True
            return
        key = int.from_bytes(
            hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
        )
        try:
            async with self.engine.connect() as conn:
                got = bool(
                    (
                        await conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
                    ).scalar()
                )
                await conn.commit()
                try:
                    yield got
                finally:
                    if got:
                        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        await conn.commit()
        except (SQLAlchemyError, OSError) as exc:
            raise StorageUnavailable(describe_failure(self.engine, exc)) from None


__all__ = ["Database", "WriteTurns"]

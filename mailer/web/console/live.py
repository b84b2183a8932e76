"""Readings of slow figures for the console (:class:`Readings`): a count that takes long is
made at most once every few seconds whoever is looking, and answered at once from the last
reading while a new one is made (stale while revalidate); :class:`LiveProgress`, a send's
progress read that way.

Counting a send's deliveries by status, or a million-member list's members by status, is
proportional to its size (70-150 ms for 1,000,000 deliveries on SQLite, several hundred for
the lists page); the dashboard and a send's page poll every 2 s, and several staff may watch
at once. A figure whose reading takes less than :data:`CHEAP` is read at every look (exact).
A costlier one is read at the first look; later looks answer from memory (under a
millisecond) and start the next reading in the background once theirs is older than its
``fresh`` seconds. Any change made through the console (:meth:`Readings.forget`, called with
every audit line) drops every reading, so staff see their own change at once. A send's status
is always its own (read fresh by the caller, by primary key). Per process; nothing stored.
``MAILER_CONSOLE__CACHE_COUNTS=false`` reads every figure at every look.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import replace
from typing import Any, TypeVar

from mailer.clock import Clock
from mailer.errors import MailerError
from mailer.storage import Store
from mailer.storage.overview import Progress, SendLine

log = logging.getLogger("mailer.console")

T = TypeVar("T")
FRESH = 2.0  # seconds a send's progress is answered without starting another reading
CHEAP = 0.02  # a reading that took less is made again at every look
KEPT = 200  # readings remembered at most


class Readings:
    """The last reading of each slow figure, by key, refreshed in the background."""

    def __init__(self, *, cheap: float = CHEAP) -> None:
        self.cheap = cheap
        self._readings: dict[Hashable, tuple[float, Any]] = {}
        self._refreshing: dict[Hashable, asyncio.Task[None]] = {}
        self._generation = 0  # bumped by forget: a reading begun before is not kept

    async def get(self, key: Hashable, read: Callable[[], Awaitable[T]], *, fresh: float) -> T:
        """The figure ``key``: read now if cheap or never read, else the last reading (a new
        one started in the background when that is older than ``fresh`` seconds)."""
        found = self._readings.get(key)
        if found is None:
            value: T = await self._read(key, read)
            return value
        taken, kept = found
        if time.monotonic() - taken >= fresh and key not in self._refreshing:
            task = asyncio.create_task(self._refresh(key, read), name=f"reading {key!r}")
            self._refreshing[key] = task
        return kept  # type: ignore[no-any-return]

    def forget(self) -> None:
        """Drop every reading (something changed): the next looks read again."""
        self._generation += 1
        self._readings.clear()

    async def _read(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        started, generation = time.monotonic(), self._generation
        value = await read()
        self._readings.pop(key, None)
        if time.monotonic() - started < self.cheap or generation != self._generation:
            return value  # cheap (read again at the next look), or begun before a change
        self._readings[key] = (time.monotonic(), value)
        while len(self._readings) > KEPT:
            self._readings.pop(next(iter(self._readings)))
        return value

    async def _refresh(self, key: Hashable, read: Callable[[], Awaitable[Any]]) -> None:
        try:
            await self._read(key, read)
        except MailerError as exc:  # storage trouble: the next look tries again
            log.warning("console: %r not refreshed: %s", key, exc)
        finally:
            self._refreshing.pop(key, None)

    async def close(self) -> None:
        """Stop the readings in flight (the app's shutdown)."""
        for task in list(self._refreshing.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class LiveProgress(Readings):
    """Each watched send's progress, read at most every :data:`FRESH` seconds."""

    def __init__(self, store: Store, clock: Clock, *, cheap: float = CHEAP) -> None:
        super().__init__(cheap=cheap)
        self.store = store
        self.clock = clock

    async def of(self, line: SendLine) -> Progress:
        """``line``'s progress: its counts and rate from the last reading, its status and
        reason from ``line`` itself."""

        async def read() -> Progress:
            return await self.store.overview.progress(line.id, now=self.clock())

        progress = await self.get(("progress", line.id), read, fresh=_fresh())
        return replace(progress, status=line.status, reason=line.reason)


def _fresh() -> float:
    return FRESH  # read at each call, so that a test may change it

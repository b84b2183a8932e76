"""Live progress for the console (:class:`LiveProgress`): a send's counts, read at most once
every :data:`FRESH` seconds whoever is watching, and answered at once from the last reading
while a new one is made (stale while revalidate).

Counting a send's deliveries by status is proportional to its size (about 70-150 ms for
1,000,000 deliveries on SQLite); the dashboard and the send's page poll every 2 s, and several
staff may watch one send. A send whose count takes less than :data:`CHEAP` is counted at every
look (its figures are exact). A larger one is counted at the first look; later looks answer
from memory (under a millisecond) and start the next count in the background when theirs is
older than :data:`FRESH`: figures at most about 2 s behind, the status always the send's own
(read fresh by the caller, by primary key). Per process; nothing stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace

from mailer.clock import Clock
from mailer.errors import MailerError
from mailer.storage import Store
from mailer.storage.overview import Progress, SendLine

log = logging.getLogger("mailer.console")

FRESH = 2.0  # seconds a reading is answered without starting another
CHEAP = 0.02  # a count that took less is made again at every look
KEPT = 200  # sends remembered at most


class LiveProgress:
    """The last progress reading of each watched send, refreshed in the background."""

    def __init__(self, store: Store, clock: Clock, *, cheap: float = CHEAP) -> None:
        self.store = store
        self.clock = clock
        self.cheap = cheap
        self._readings: dict[int, tuple[float, Progress]] = {}
        self._refreshing: dict[int, asyncio.Task[None]] = {}

    async def of(self, line: SendLine) -> Progress:
        """``line``'s progress: its counts and rate from the last reading (a new one started
        when that is older than FRESH; made now when there is none), its status and reason
        from ``line`` itself."""
        found = self._readings.get(line.id)
        if found is None:
            progress = await self._read(line.id)
        else:
            taken, progress = found
            if time.monotonic() - taken >= FRESH and line.id not in self._refreshing:
                task = asyncio.create_task(self._refresh(line.id), name=f"progress-{line.id}")
                self._refreshing[line.id] = task
        return replace(progress, status=line.status, reason=line.reason)

    async def _read(self, send_id: int) -> Progress:
        started = time.monotonic()
        progress = await self.store.overview.progress(send_id, now=self.clock())
        self._readings.pop(send_id, None)
        if time.monotonic() - started < self.cheap:
            return progress  # cheap to count: counted again at the next look
        self._readings[send_id] = (time.monotonic(), progress)
        while len(self._readings) > KEPT:
            self._readings.pop(next(iter(self._readings)))
        return progress

    async def _refresh(self, send_id: int) -> None:
        try:
            await self._read(send_id)
        except MailerError as exc:  # storage trouble: the next look tries again
            log.warning("console: progress of send %d not refreshed: %s", send_id, exc)
        finally:
            self._refreshing.pop(send_id, None)

    async def close(self) -> None:
        """Wait for the counts in flight (the app's shutdown)."""
        for task in list(self._refreshing.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

"""The feed: due deliveries in, built messages out, composed here or in the render pool.

The only code that knows where composing runs. :func:`open_pool` opens a
:class:`~.render_pool.RenderPool` when the send is large enough to pay for the processes
(at least :data:`RENDER_POOL_MIN` recipients, ``MAILER_DELIVERY__RENDER_WORKERS`` not 0);
the engine opens it before the pre-flight and keeps it for the first pass, and
:func:`open_feed` opens one for a later pass. Without a pool, everything runs in a thread
of the sending process.

The pre-flight goes through :meth:`Feed.check`: with a pool, its first recipients
(:data:`~.preflight.PREFLIGHT_BUILT`) composed whole by the pool's processes, the others in
chunks taken in turn by them and by a thread here (idle otherwise, and alone while the
processes start), the results back in order; so a sending process with a pool never
loads the libraries of the finishing (CSS inlining, text derivation). The producer of the
:class:`~.send_pass.SendPass` pushes each due delivery to the feed, which hands the built
message (or the reason it cannot be built) to the pass's :class:`Outlet`, in order: at once
when composing here; in the pool, :data:`RENDER_CHUNK` recipients a batch and at most
:data:`RENDER_AHEAD` batches ahead of the SMTP lanes, which bounds the memory. If the pool
dies (:class:`~.render_pool.RenderPoolLost`), what it held was neither sent nor recorded,
and the feed composes it, and everything after, here.

It must not send, record or read the database: it composes and hands over.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Protocol

from mailer.clock import Clock
from mailer.compose import Composer
from mailer.dispatch.preflight import Checked, check_batch, describe
from mailer.dispatch.render_pool import (
    Recipe,
    RenderPool,
    RenderPoolLost,
    compose_batch,
    processes_for,
)
from mailer.message import Built
from mailer.models import DeliveryResult, DeliveryStatus, Due, Recipient, SendSpec
from mailer.settings import Settings

log = logging.getLogger("mailer.dispatch")

RENDER_POOL_MIN = 1000  # recipients: below, the render pool costs more than it saves
RENDER_CHUNK = 64  # recipients per batch sent to the render pool
RENDER_AHEAD = 2  # batches composed ahead of the SMTP lanes: bounds the memory
CHECK_CHUNK = 32  # recipients per pre-flight chunk (to the pool, or checked here)


class Outlet(Protocol):
    """Where the feed hands what it composed: the send pass (its producer's side)."""

    async def stopped(self) -> bool:
        """Whether the pass stops: nothing more is handed over."""
        ...

    async def hand_over(self, due: Due, made: Built | str) -> None:
        """One delivery's message, or the reason it cannot be built."""
        ...


class Feed:
    """Composes one pass's messages, here or in ``pool``; see the module docstring."""

    __slots__ = ("_ahead", "_chunk", "_clock", "_composers", "_pool", "_send_id", "lost")

    def __init__(
        self,
        composers: dict[int, Composer],
        *,
        clock: Clock,
        send_id: int,
        pool: RenderPool | None = None,
    ) -> None:
        self._composers = composers  # one per list of the send
        self._clock = clock
        self._send_id = send_id  # for the log lines
        self._pool = pool
        self._chunk: list[Due] = []  # due deliveries waiting to go to the pool
        self._ahead: deque[tuple[list[Due], asyncio.Future[list[Built | str]]]] = deque()
        self.lost = False  # the pool died: everything is composed here from then on

    async def push(self, due: Due, outlet: Outlet) -> bool:
        """Take one due delivery to compose; hand over what is ready. False once stopped."""
        pool = self._pool
        if pool is None or self.lost:
            # Rendering is CPU work (up to the render budget per recipient): a thread does
            # it, so the event loop (other sends, the pages, /healthz) is never held.
            await outlet.hand_over(due, await asyncio.to_thread(self._compose_here, due))
            return True
        self._chunk.append(due)
        if len(self._chunk) == RENDER_CHUNK:
            self._submit(pool)
        while len(self._ahead) > RENDER_AHEAD:
            if not await self._deliver_oldest(outlet):
                return False
        return True

    def end_batch(self) -> None:
        """The producer's batch is done: what waits for the pool goes now, not with the next."""
        if self._chunk and self._pool is not None:
            self._submit(self._pool)

    async def drain(self, outlet: Outlet) -> bool:
        """Hand over everything still in the pool; False once stopped."""
        while self._ahead:
            if not await self._deliver_oldest(outlet):
                return False
        return True

    async def discard(self) -> None:
        """Drop what the pool still holds: not sent, not recorded, so it stays queued."""
        for _, future in self._ahead:
            future.cancel()
        await asyncio.gather(*(future for _, future in self._ahead), return_exceptions=True)

    @property
    def where(self) -> str:
        """Where it composes, for the log lines: ``2 render workers``, ``this process``."""
        if self._pool is None or self.lost:
            return "in this process"
        count = self._pool.processes
        return f"{count} render worker{'s' if count > 1 else ''}"

    async def check(self, dues: list[Due], *, whole: int, date: datetime) -> list[Checked]:
        """The pre-flight's check of ``dues`` (none skipped), in order, the first ``whole``
        (that pass their header check) composed whole: here without a pool, else in it."""
        items = [(d.list_id, d.recipient) for d in dues]
        pool = None if self.lost else self._pool
        if pool is None:
            return await asyncio.to_thread(
                check_batch, self._composers, items, date=date, whole=whole
            )
        return await self._check_in_pool(pool, items, date, whole)

    async def _check_in_pool(
        self, pool: RenderPool, items: list[tuple[int, Recipient]], date: datetime, whole: int
    ) -> list[Checked]:
        """``items`` in chunks, taken in turn by the pool's processes (two chunks out for
        each, so that none waits for its next) and by a thread of this process, which has
        little else to do meanwhile (and checks alone while the processes start), from the
        end; a chunk the pool lost or failed, here. The first ``whole`` items are a chunk
        of their own, composed whole in the pool: composing whole needs the finishing's
        libraries (several MiB), which this process then never loads."""
        head = [items[:whole]] if whole and items else []
        chunks = head + [items[i : i + CHECK_CHUNK] for i in range(whole, len(items), CHECK_CHUNK)]
        wholes = [whole] * len(head) + [0] * (len(chunks) - len(head))
        results: list[list[Checked] | None] = [None] * len(chunks)
        waiting = deque(range(len(chunks)))

        async def in_pool() -> None:
            while waiting and not self.lost:
                n = waiting.popleft()
                try:
                    results[n] = await pool.check(chunks[n], date=date, whole=wholes[n])
                except RenderPoolLost as exc:
                    if not self.lost:
                        log.warning("send %s: %s; checking in this process", self._send_id, exc)
                        self.lost = True
                except Exception as exc:  # not a recipient's: checked here, each
                    log.warning("send %s: the render pool failed a check (%s)", self._send_id, exc)

        async def here() -> None:
            while waiting and not wholes[waiting[-1]]:
                n = waiting.pop()
                results[n] = await asyncio.to_thread(
                    check_batch, self._composers, chunks[n], date=date
                )

        # the pool's takers first: each has a chunk before this process takes any
        await asyncio.gather(*(in_pool() for _ in range(2 * pool.processes)), here())
        out: list[Checked] = []
        for n, result in enumerate(results):
            if result is None:
                result = await asyncio.to_thread(
                    check_batch, self._composers, chunks[n], date=date, whole=wholes[n]
                )
            out += result
        return out

    def _submit(self, pool: RenderPool) -> None:
        chunk, self._chunk = self._chunk, []
        items = [(d.list_id, d.recipient) for d in chunk]
        future = asyncio.ensure_future(pool.compose(items, date=self._clock()))
        self._ahead.append((chunk, future))

    async def _deliver_oldest(self, outlet: Outlet) -> bool:
        """The oldest batch from the pool to the outlet; False once stopped."""
        chunk, future = self._ahead.popleft()
        try:
            made: list[Built | str] | None = await future
        except RenderPoolLost as exc:
            if not self.lost:
                log.warning("send %s: %s; composing in this process", self._send_id, exc)
                self.lost = True
            made = None  # nothing of this batch was sent: compose it here
        except Exception as exc:  # a template's failure the pool did not catch
            log.warning("send %s: the render pool failed on a batch (%s)", self._send_id, exc)
            made = None  # composed here, one by one: each failure is its recipient's
        for n, due in enumerate(chunk):
            if await outlet.stopped():
                return False
            if made is None:
                await outlet.hand_over(due, await asyncio.to_thread(self._compose_here, due))
            else:
                await outlet.hand_over(due, made[n])
        return True

    def _compose_here(self, due: Due) -> Built | str:
        """Compose one message in this process: the built message, or why it cannot be."""
        try:
            return compose_batch(self._composers, [(due.list_id, due.recipient)], self._clock())[0]
        except Exception as exc:  # a template's failure, whatever its kind
            return f"not built: {describe(exc)}"


@asynccontextmanager
async def open_pool(
    settings: Settings,
    spec: SendSpec,
    composers: dict[int, Composer],
    *,
    templates_dir: Path,
    keys: Sequence[str],
    recipients: int,
) -> AsyncIterator[RenderPool | None]:
    """A render pool for a send of ``recipients`` deliveries when it pays, else None."""
    processes = processes_for(settings.delivery.render_workers)
    if processes == 0 or recipients < RENDER_POOL_MIN:
        yield None
        return
    sample = next(iter(composers.values()))
    recipe = Recipe(
        settings=settings,
        templates_dir=templates_dir,
        keys=tuple(keys),
        sends=tuple(c.compiled.send for c in composers.values()),
        send_id=spec.id,
        trace=trace_of(spec),
        eight_bit=sample.builder.eight_bit,
        parent=os.getpid(),
    )
    async with RenderPool(recipe, processes=processes) as pool:
        yield pool


@asynccontextmanager
async def open_feed(
    settings: Settings,
    spec: SendSpec,
    composers: dict[int, Composer],
    *,
    templates_dir: Path,
    keys: Sequence[str],
    recipients: int,
    clock: Clock,
) -> AsyncIterator[Feed]:
    """The feed of one pass over ``recipients`` deliveries: with a render pool for a large
    send, composing here otherwise."""
    async with open_pool(
        settings, spec, composers, templates_dir=templates_dir, keys=keys, recipients=recipients
    ) as pool:
        yield Feed(composers, clock=clock, send_id=spec.id, pool=pool)


def trace_of(spec: SendSpec) -> str:
    """The trace a send's messages carry (campaign and send key)."""
    return f"c{spec.campaign_id}/{spec.key}"


def not_built(due: Due, exc: BaseException) -> DeliveryResult:
    """The failure of a delivery whose message cannot be built, with the reason."""
    return DeliveryResult(
        due.id, DeliveryStatus.FAILED, reason=f"not built: {describe(exc)}"[:1000]
    )

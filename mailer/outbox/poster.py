"""The daemon's poster: the events storage wrote to the outbox, posted to their endpoints.

:class:`Poster` runs in ``mailer run`` as a task on the daemon's exit stack. Every round
(:meth:`Poster.round`: every ``interval`` seconds, at once when a POST ends and there is more
to do) it takes up to ``MAILER_WEBHOOKS__CONCURRENCY`` deliveries that are due
(``store.webhooks.claim``, leased to this node for twice the timeout and a second, so a
daemon killed mid-POST leaves them to whoever comes next: at least once), checks each
target (:func:`~mailer.webhook_urls.check_url`: a refused URL is a failed attempt, not a
crash), posts each signed (:mod:`mailer.outbox.client`) and records the answers
(``store.webhooks.record``) with the next attempt that :mod:`mailer.outbox.policy` decides.

Logs (``mailer.webhooks``): one ERROR when an endpoint is disabled (the alert), one WARNING
per endpoint and minute at most about its failures (the others counted in the next line),
never a secret nor a URL's query. It gives up on events past ``MAILER_WEBHOOKS__MAX_AGE``
every minute and purges those older than ``MAILER_WEBHOOKS__KEEP_DAYS`` every hour. The
clock is injected: the tests drive :meth:`Poster.round` through a simulated hour.

The HTTP client (httpx, with its pool) is made when the first delivery is claimed, not at
start: a daemon no webhook is configured on does not carry it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from mailer.clock import Clock, utc_now
from mailer.errors import NotFoundError, StorageError
from mailer.models import DueHook, Endpoint, HookAttempt
from mailer.outbox import policy
from mailer.outbox.policy import Answer, Random, Verdict
from mailer.settings.api import WebhookSettings
from mailer.storage import Store
from mailer.webhook_urls import Resolve, TargetError, check_url, shown, system_resolve

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("mailer.webhooks")

EXPIRE_EVERY = timedelta(minutes=1)
PURGE_EVERY = timedelta(hours=1)
WARN_EVERY = 60.0  # seconds between two warnings about one endpoint
T = TypeVar("T")


class Poster:
    """Posts due webhook events for one node; :meth:`run` until cancelled."""

    def __init__(
        self,
        store: Store,
        settings: WebhookSettings,
        *,
        node: str,
        clock: Clock = utc_now,
        resolve: Resolve = system_resolve,
        rand: Random = random.random,
        interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.node = node
        self.clock = clock
        self.resolve = resolve
        self.rand = rand
        self.interval = interval
        self.monotonic = monotonic
        self.lease = timedelta(seconds=settings.timeout * 2 + 1)
        self._client: httpx.AsyncClient | None = None
        self._closer: AsyncExitStack | None = None
        self._housework: dict[str, datetime] = {}
        self._warned: dict[int, tuple[float, int]] = {}  # endpoint: last warning, held back
        self._storage_warned = -WARN_EVERY

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[Poster]:
        """The poster ready to post: its HTTP client is made at the first claim and closed on
        the way out (already open: as is)."""
        if self._closer is not None:
            yield self
            return
        async with AsyncExitStack() as stack:
            self._closer = stack
            try:
                yield self
            finally:
                self._closer = None
                self._client = None

    async def _client_open(self) -> httpx.AsyncClient:
        """The HTTP client, made the first time a delivery is claimed (httpx imported then)."""
        if self._client is None:
            from mailer.outbox.client import open_client

            assert self._closer is not None, "the poster is not open"
            self._client = await self._closer.enter_async_context(
                open_client(
                    seconds=self.settings.timeout,
                    concurrency=self.settings.concurrency,
                    allow_private=self.settings.allow_private,
                    resolve=self.resolve,
                )
            )
        return self._client

    async def run(self) -> None:
        """Post what falls due, until cancelled (what is in flight then keeps its lease and
        goes again when it runs out)."""
        async with self.opened():
            inflight: set[asyncio.Task[tuple[DueHook, Answer]]] = set()
            try:
                while True:
                    free = self.settings.concurrency - len(inflight)
                    if free >= max(1, self.settings.concurrency // 2) or not inflight:
                        inflight |= await self._start(free)  # claims in batches, not one by one
                    if inflight:
                        await asyncio.wait(
                            inflight, timeout=self.interval, return_when=asyncio.FIRST_COMPLETED
                        )
                    else:
                        await asyncio.sleep(self.interval)
                    done = {t for t in inflight if t.done()}
                    inflight -= done
                    await self._guarded(self._record(self._results(done)))
            finally:
                for task in inflight:
                    task.cancel()
                await asyncio.gather(*inflight, return_exceptions=True)

    async def round(self) -> int:
        """One whole round: housework, then every due delivery (``concurrency`` at a time)
        posted and recorded; how many attempts were made. For the tests and the benchmark."""
        async with self.opened():
            made = 0
            while True:
                tasks = await self._start(self.settings.concurrency)
                if not tasks:
                    return made
                results = await asyncio.gather(*tasks)
                await self._record(list(results))
                made += len(results)

    async def _start(self, free: int) -> set[asyncio.Task[tuple[DueHook, Answer]]]:
        """Housework when due, then up to ``free`` deliveries claimed and their POSTs begun."""
        await self._guarded(self._housekeeping())
        if free <= 0:
            return set()
        hooks = await self._guarded(
            self.store.webhooks.claim(
                node=self.node, now=self.clock(), limit=free, lease=self.lease
            )
        )
        if not hooks:
            return set()
        await self._client_open()
        return {asyncio.create_task(self._attempt(h), name="webhook-post") for h in hooks}

    async def _attempt(self, hook: DueHook) -> tuple[DueHook, Answer]:
        from mailer.outbox.client import post

        assert self._client is not None, "the poster is not open"
        try:
            await check_url(hook.url, self.settings.allow_private, self.resolve)
        except TargetError as exc:
            return hook, Answer(None, f"refused: {exc}", 0)
        answer = await post(
            self._client, url=hook.url, secret=hook.secret, event_id=hook.event_id,
            payload=hook.payload, when=self.clock(), seconds=self.settings.timeout,
        )  # fmt: skip
        return hook, answer

    async def _record(self, results: list[tuple[DueHook, Answer]]) -> None:
        """The attempts written with their next try; the alerts and warnings they call for."""
        if not results:
            return
        now = self.clock()
        attempts: list[HookAttempt] = []
        gone: dict[int, DueHook] = {}
        for hook, answer in results:
            verdict = policy.verdict(answer.code)
            next_at = None
            if verdict is not Verdict.DELIVERED:
                next_at = policy.next_attempt(
                    created_at=hook.created_at, failures=hook.attempts + 1, now=now,
                    max_age=timedelta(hours=self.settings.max_age), rand=self.rand,
                    retry_after=policy.retry_after(answer.retry_after),
                )  # fmt: skip
                self._warn(hook, answer, next_at)
            if verdict is Verdict.GONE:
                gone[hook.endpoint_id] = hook
            attempts.append(
                HookAttempt(
                    delivery_id=hook.delivery_id,
                    endpoint_id=hook.endpoint_id,
                    code=answer.code,
                    error=answer.error,
                    took_ms=answer.took_ms,
                    answer=answer.text,
                    next_at=next_at,
                )
            )
        disabled = await self.store.webhooks.record(
            attempts, now=now, disable_after=timedelta(hours=self.settings.disable_after)
        )
        for endpoint in disabled:
            gone.pop(endpoint.id, None)
            self._alert(endpoint)
        for endpoint_id, hook in gone.items():
            try:
                endpoint = await self.store.webhooks.set_enabled(
                    endpoint_id, False, actor=f"daemon {self.node}", now=now,
                    reason=f"answered 410 Gone to {hook.type} {hook.event_id}",
                )  # fmt: skip
            except NotFoundError:  # removed meanwhile: nothing left to disable
                continue
            self._alert(endpoint)

    def _alert(self, endpoint: Endpoint) -> None:
        log.error(
            "webhook endpoint %s (%s) disabled: %s; its events wait: `mailer webhooks enable %s` "
            "delivers what it missed",
            endpoint.id, shown(endpoint.url), endpoint.disabled_reason, endpoint.id,
        )  # fmt: skip
        self._warned.pop(endpoint.id, None)

    def _warn(self, hook: DueHook, answer: Answer, next_at: datetime | None) -> None:
        """A failed attempt: a warning, unless this endpoint had one less than a minute ago
        (then counted in its next one)."""
        at = self.monotonic()
        last, held = self._warned.get(hook.endpoint_id, (-WARN_EVERY, 0))
        if at - last < WARN_EVERY:
            self._warned[hook.endpoint_id] = (last, held + 1)
            return
        self._warned[hook.endpoint_id] = (at, 0)
        then = (
            f"next attempt {next_at.isoformat(timespec='seconds')}"
            if next_at
            else "given up (too old)"
        )
        more = f" ({held} more failed attempts since the last line)" if held else ""
        log.warning(
            "webhook endpoint %s (%s): %s %s attempt %s failed: %s; %s%s",
            hook.endpoint_id, shown(hook.url), hook.type, hook.event_id, hook.attempts + 1,
            answer.error or f"answered {answer.code}", then, more,
        )  # fmt: skip

    async def _housekeeping(self) -> None:
        """Every minute, give up on what is too old; every hour, forget what is done."""
        now = self.clock()
        if now >= self._housework.get("expire", now):
            self._housework["expire"] = now + EXPIRE_EVERY
            max_age = timedelta(hours=self.settings.max_age)
            expired = await self.store.webhooks.expire(now=now, max_age=max_age)
            if expired:
                log.warning("gave up %s webhook deliveries not made within %s", expired, max_age)
        if now >= self._housework.get("purge", now):
            self._housework["purge"] = now + PURGE_EVERY
            keep = timedelta(days=self.settings.keep_days)
            await self.store.webhooks.purge(now=now, keep=keep)

    def _results(
        self, done: set[asyncio.Task[tuple[DueHook, Answer]]]
    ) -> list[tuple[DueHook, Answer]]:
        """The finished POSTs' results; one that raised (a bug, never the receiver's doing:
        ``post`` answers for those) is logged and left to its lease, which runs out."""
        results = []
        for task in done:
            failure = task.exception()
            if failure is None:
                results.append(task.result())
            else:
                log.error("webhooks: a POST failed unexpectedly (%r); it is tried again "
                          "once its lease runs out", failure)  # fmt: skip
        return results

    async def _guarded(self, work: Awaitable[T]) -> T | None:
        """``work`` awaited; the database failing is a warning (a minute apart at most) and
        ``None``: the loop goes on, the leases run out, nothing is lost. Any other failure
        (a bug) is an ERROR line, and the loop goes on too: one bad answer never stops every
        endpoint's webhooks."""
        try:
            return await work
        except StorageError as exc:
            at = self.monotonic()
            if at - self._storage_warned >= WARN_EVERY:
                self._storage_warned = at
                log.warning("webhooks: the database failed (%s); trying again", exc)
            return None
        except Exception as exc:
            at = self.monotonic()
            if at - self._storage_warned >= WARN_EVERY:
                self._storage_warned = at
                log.error("webhooks: recording failed unexpectedly (%r); trying again", exc)
            return None

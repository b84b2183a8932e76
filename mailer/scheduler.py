"""The daemon's clock: APScheduler jobs rebuilt from the sends in storage.

Storage is the truth. At start and every ``MAILER_SCHEDULER__SYNC_INTERVAL`` seconds, the
jobs of an in-memory APScheduler 3.11 ``AsyncIOScheduler`` are rebuilt from the scheduled
sends (job id = send id, a date trigger at the due time): a campaign created, moved or paused
from the CLI while the daemon runs is picked up within one interval. A job only puts its send
on the dispatch queue; the sending runs in our own task, never inside the job (APScheduler's
shutdown cancels running jobs). The same sync also queues every send that is already due, so
a job that did not fire (the wall clock jumped, the daemon was down) is not lost, and a send
claimed twice is harmless: the claim is conditional.

Missed sends: one due longer ago than its grace (``MAILER_SCHEDULER__MISFIRE_GRACE``, or
``MAILER_SCHEDULER__NEWSLETTER_GRACE`` for a newsletter issue) is marked ``missed`` instead of
sent late (:func:`mailer.dispatch.policy.past_grace` judges); a reminder's grace also ends
when its event starts (dispatch judges that one, :func:`~mailer.dispatch.policy.too_late`).
Recurring newsletters get their next issues created ahead as time goes by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from mailer import schedule
from mailer.dispatch import Engine
from mailer.dispatch.policy import past_grace
from mailer.errors import MailerError, StorageError
from mailer.lifecycle import SendMove
from mailer.models import SendAction, SendStatus

log = logging.getLogger("mailer.scheduler")

MAX_COOLDOWN = 30.0  # seconds: the longest wait before a send is tried again after a storage error


class Scheduler:
    """Jobs from storage, a queue of due sends, and the one task that runs them."""

    def __init__(
        self,
        engine: Engine,
        *,
        sync_interval: float,
        grace: float,
        newsletter_grace: float | None = None,
        concurrent: int = 12,
    ) -> None:
        self.engine = engine
        self.store = engine.store
        self.sync_interval = sync_interval
        self.grace = timedelta(seconds=grace)
        self.newsletter_grace = timedelta(
            seconds=grace if newsletter_grace is None else newsletter_grace
        )
        self.concurrent = concurrent
        self.stop = asyncio.Event()
        self.queue: asyncio.Queue[int] = asyncio.Queue()
        self._queued: set[int] = set()
        self._jobs = AsyncIOScheduler(timezone=UTC)
        self._tasks: list[asyncio.Task[None]] = []
        self.last_sync: datetime | None = None
        self.last_lateness: float | None = None  # seconds a job fired after its due time
        self.current: set[int] = set()  # sends being run now
        # send -> (loop time before which it is not run again, the last wait): storage errors
        self._cooldown: dict[int, tuple[float, float]] = {}

    async def __aenter__(self) -> Self:
        self._jobs.start()
        await self.sync()
        for running in await self.store.sends.running():
            self._enqueue(running)  # resume what a crash or a stop left running
        self._tasks = [
            asyncio.create_task(self._sync_loop(), name="mailer-sync"),
            asyncio.create_task(self._dispatch_loop(), name="mailer-dispatch"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop.set()
        self._jobs.shutdown(wait=False)  # our jobs only enqueue: nothing to cancel there
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_idle(self, seconds: float) -> bool:
        """Wait for the dispatch task to finish what it holds (after stop is set)."""
        dispatch = [t for t in self._tasks if t.get_name() == "mailer-dispatch"]
        if not dispatch:
            return True
        done, _ = await asyncio.wait(dispatch, timeout=seconds)
        return bool(done)

    def cancel_dispatch(self) -> None:
        for task in self._tasks:
            task.cancel()

    # --- rebuilding jobs from storage ---------------------------------------------------------

    async def sync(self) -> None:
        """Make the jobs match the scheduled sends; queue those already due."""
        now = self.engine.clock()
        async with self.store.once_across_daemons("extend-newsletters") as mine:
            if mine:  # several daemons on PostgreSQL: one creates the next issues
                await self._extend_newsletters(now)
        scheduled = dict(await self.store.sends.scheduled())
        for job in self._jobs.get_jobs():
            if int(job.id) not in scheduled:
                job.remove()
        for send_id, due in scheduled.items():
            if due <= now:
                self._enqueue(send_id)
                with contextlib.suppress(Exception):
                    self._jobs.remove_job(str(send_id))
                continue
            job = self._jobs.get_job(str(send_id))
            if job is None or job.next_run_time != due:
                self._jobs.add_job(
                    self._fire, "date", run_date=due, id=str(send_id), args=[send_id, due],
                    replace_existing=True, misfire_grace_time=None, coalesce=True,
                )  # fmt: skip
        for running in await self.store.sends.running():
            # resumed by staff, or with retries now due
            if await self.store.deliveries.has_due(running, now=now):
                self._enqueue(running)
        self.last_sync = now

    async def _fire(self, send_id: int, due: datetime) -> None:
        self.last_lateness = max(0.0, (self.engine.clock() - due).total_seconds())
        self._enqueue(send_id)

    def alive(self) -> bool:
        """Whether the sync and dispatch tasks still run (for ``/healthz``)."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    def enqueue(self, send_id: int) -> None:
        """Run a send now (one the web pages just made due), without waiting for a sync."""
        if not self.stop.is_set():
            self._enqueue(send_id)

    def _enqueue(self, send_id: int) -> None:
        until, _ = self._cooldown.get(send_id, (0.0, 0.0))
        if until > asyncio.get_running_loop().time():
            return  # after a storage error; the sync queues it again later
        if send_id not in self._queued and send_id not in self.current:
            self._queued.add(send_id)
            self.queue.put_nowait(send_id)

    async def _extend_newsletters(self, now: datetime) -> None:
        """Keep the next three issues of every recurring newsletter created."""
        for campaign in await self.store.campaigns.newsletters():
            try:
                issues = schedule.newsletter_issues(
                    campaign.cron, campaign.zone, after=now, until=campaign.until, count=3
                )
            except schedule.ScheduleError as exc:
                log.error("newsletter %s: %s", campaign.name, exc)
                continue
            for issue in issues:
                await self.store.sends.create(
                    campaign.id, key=issue.key, action=issue.action, due_at=issue.due, now=now
                )
            await self._drop_unplanned(campaign.id, {issue.key for issue in issues}, now)

    async def _drop_unplanned(self, campaign_id: int, planned: set[str], now: datetime) -> None:
        """Drop the scheduled issues still ahead that the cron no longer plans: made under an
        earlier reading of it (weekday numbers before they were read as crontab's, 1 =
        Monday), they would go beside the right ones. An issue already due is left to go."""
        for send in await self.store.sends.of_campaign(campaign_id):
            if (
                send.action == SendAction.NEWSLETTER
                and send.status == SendStatus.SCHEDULED
                and send.due_at > now
                and send.key not in planned
            ):
                log.warning("newsletter issue %s dropped: its cron no longer plans it", send.key)
                await self.store.sends.move(
                    send.id, SendMove.DROP, now=now, reason="not in the newsletter's schedule"
                )

    async def _sync_loop(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=self.sync_interval)
            if self.stop.is_set():
                return
            try:
                await self.sync()
            except MailerError as exc:
                log.error("sync with storage failed: %s", exc)

    # --- running sends --------------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        """Run queued sends, up to ``concurrent`` at once, so a long send does not hold up
        a short one that falls due meanwhile; they share the transport's connections."""
        slots = asyncio.Semaphore(self.concurrent)
        running: set[asyncio.Task[None]] = set()
        try:
            while not self.stop.is_set():
                getter = asyncio.ensure_future(self.queue.get())
                stopper = asyncio.ensure_future(self.stop.wait())
                done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if getter not in done:
                    getter.cancel()
                    break
                send_id = getter.result()
                self._queued.discard(send_id)
                await slots.acquire()
                self.current.add(send_id)
                task = asyncio.create_task(self._guarded(send_id, slots))
                running.add(task)
                task.add_done_callback(running.discard)
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    async def _guarded(self, send_id: int, slots: asyncio.Semaphore) -> None:
        try:
            await self._run(send_id)
        except StorageError as exc:
            # The database is locked, full or down: wait before the next attempt, growing
            # the wait, rather than send again what could not be recorded.
            loop = asyncio.get_running_loop()
            wait = min(MAX_COOLDOWN, 2 * self._cooldown.get(send_id, (0.0, 0.5))[1])
            self._cooldown[send_id] = (loop.time() + wait, wait)
            log.error("send %s: %s; next attempt in %.0f s at the earliest", send_id, exc, wait)
        except MailerError as exc:
            log.error("send %s: %s", send_id, exc)
        else:
            self._cooldown.pop(send_id, None)
        finally:
            self.current.discard(send_id)
            slots.release()

    async def _run(self, send_id: int) -> None:
        spec = await self.store.sends.spec(send_id)
        now = self.engine.clock()
        grace = past_grace(spec, now, grace=self.grace, newsletter_grace=self.newsletter_grace)
        if spec.status == SendStatus.SCHEDULED and grace is not None:
            await self.store.sends.move(
                send_id, SendMove.EXPIRE, now=now,
                reason=f"due {spec.due_at:%Y-%m-%d %H:%M} UTC, past the grace of {grace}",
            )  # fmt: skip
            log.warning(
                "send %s (%s, %s) missed: it was due at %s UTC",
                send_id, spec.content.name, spec.key, f"{spec.due_at:%Y-%m-%d %H:%M}",
            )  # fmt: skip
            return
        summary = await self.engine.run_send(send_id, stop=self.stop, spec=spec)
        c = summary.counts
        log.info(
            "send %s (%s, %s): %s; sent %s, deferred %s, failed %s, skipped %s%s",
            send_id, spec.content.name, spec.key, summary.status, c.get("sent", 0),
            c.get("deferred", 0), c.get("failed", 0), c.get("skipped", 0),
            f"; {summary.reason}" if summary.reason else "",
        )  # fmt: skip

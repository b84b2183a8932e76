"""One pass over a send's due deliveries, as named stages sharing their state on ``self``.

A :class:`SendPass` runs its stages as tasks (:meth:`SendPass.run`):

- :meth:`~SendPass.produce`: due deliveries by keyset batches, leased to this node; the
  skipped recorded as such, the others pushed to the :class:`~.feed.Feed`, which hands the
  built messages to the outbox;
- :meth:`~SendPass.work`, once per *lane* (one lane per pooled SMTP connection,
  ``MAILER_SMTP__POOL_SIZE`` of them): a message from the outbox to ``transport.send``, its
  fate judged by :mod:`~.policy`, the results to the recorder;
- :meth:`~SendPass.record`: results written in group commits of ``record_batch``;
- :meth:`~SendPass.heartbeat`: this node's leases renewed while it works on them;
- :meth:`~SendPass.progress`: a line every ``progress_interval`` seconds.

Every stage reads one :class:`Halt`: why the pass stops before its end (a reason to pause,
the event started, staff paused or cancelled the send, a lease ran out, the daemon stops).
The :class:`DuplicateWindow` bounds what is sent and not yet recorded.

It must not speak SQL or SMTP itself (``storage`` and ``transport`` do), compose (the feed
does) or decide a delivery's fate (``policy`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

from mailer.clock import Clock
from mailer.dispatch.feed import Feed
from mailer.dispatch.policy import (
    FailureStreak,
    RejectWatch,
    Retries,
    is_permanent_refusal,
    policy_refusal,
    put_back,
    resume_hint,
    too_late,
)
from mailer.errors import MailerError
from mailer.message import Built
from mailer.models import CONFIRM_ACTION, DeliveryResult, DeliveryStatus, Due, SendSpec, SendStatus
from mailer.settings import Settings
from mailer.storage import Store
from mailer.transport import Transport, TransportFatal

log = logging.getLogger("mailer.dispatch")

FENCE_MARGIN = 5.0  # seconds of lease a message needs left to go (at most a fifth of it)
STAFF_LOOK = 0.5  # seconds between two looks at the send's status (paused, cancelled?)
_DONE = None  # end-of-queue marker


class Paused(MailerError):
    """The send pauses, with this reason (nothing more is attempted until staff resume it)."""


class Missed(MailerError):
    """The rest of the send is missed: the event of a reminder started during the send."""


class Halt:
    """Why a pass stops before its end: one value that every stage reads.

    ``reason``: pause the send with it (the first reason wins); ``missed``: the event started
    (the rest is missed, the messages in hand still go); ``by_staff``: paused or cancelled
    from the CLI or the console meanwhile; ``fenced``: this node's lease ran out; ``stop``:
    the daemon stops (SIGTERM), the send stays running for the next start.
    """

    __slots__ = ("by_staff", "fenced", "missed", "reason", "stop")

    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop
        self.reason: str | None = None
        self.missed: str | None = None
        self.by_staff = False
        self.fenced = False

    def pause(self, reason: str) -> None:
        """Pause the send with ``reason``, unless a reason was given first."""
        if self.reason is None:
            self.reason = reason

    def stopping(self) -> bool:
        """Whether the lanes stop sending (a missed event lets the messages in hand go)."""
        return self.reason is not None or self.by_staff or self.fenced or self.stop.is_set()

    def raise_for_send(self) -> None:
        """At the end of the pass: :class:`Paused` or :class:`Missed` for the send's move."""
        if self.reason is not None:
            raise Paused(self.reason)
        if self.missed is not None:
            raise Missed(self.missed)


class DuplicateWindow(asyncio.Semaphore):
    """At most ``pool_size + record_batch`` messages are ever sent and not yet recorded.

    A lane takes a slot (:meth:`take`) before it sends and marks it :meth:`sent`; the recorder
    gives it back (:meth:`give_back`) once the result is committed. When the database stalls
    (locked, full, down), the lanes wait instead of sending on without a record, and a crash
    doubles at most that many messages.
    """

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.held: set[int] = set()  # deliveries sent whose result is not committed yet

    take = asyncio.Semaphore.acquire  # a slot for one message (waits while all are held)
    unused = asyncio.Semaphore.release  # the slot taken was not used: nothing was sent

    def sent(self, delivery_id: int) -> None:
        """The slot taken now holds this delivery's message."""
        self.held.add(delivery_id)

    def give_back(self, delivery_id: int) -> None:
        """This delivery's result is committed (or it cannot be a duplicate): its slot frees."""
        if delivery_id in self.held:
            self.held.discard(delivery_id)
            self.release()

    def wake(self, lanes: int) -> None:
        """Wake every lane waiting for a slot (they find the pass stopping and stop)."""
        for _ in range(lanes):
            self.release()


class SendPass:
    """Attempt a send's due deliveries once; see the module docstring for the stages.

    ``first``: the whole due list, fetched a moment ago by the pre-flight (a small send),
    used instead of a new query; ``total``: how many are due, when known, for the progress.
    """

    def __init__(
        self,
        spec: SendSpec,
        feed: Feed,
        *,
        settings: Settings,
        store: Store,
        transport: Transport,
        node: str,
        clock: Clock,
        retries: Retries,
        stop: asyncio.Event,
        on_progress: Callable[[dict[str, int]], None] | None = None,
        first: list[Due] | None = None,
        total: int = 0,
        return_path: Callable[[int], str] | None = None,
    ) -> None:
        self.spec, self.feed = spec, feed
        self.return_path = return_path  # a delivery's envelope sender (VERP); None: From
        self.store, self.transport, self.node, self.clock = store, transport, node, clock
        self.retries = retries
        self.on_progress = on_progress
        self.first, self.total = first, total
        delivery = settings.delivery
        self.batch_size, self.record_batch = delivery.batch_size, delivery.record_batch
        self.lease = delivery.lease
        self.margin = timedelta(seconds=min(FENCE_MARGIN, self.lease / 5))
        self.progress_interval = settings.log.progress_interval
        self.lanes = settings.smtp.pool_size
        self.outbox: asyncio.Queue[tuple[Due, Built] | None] = asyncio.Queue(maxsize=self.lanes * 2)
        self.results: asyncio.Queue[DeliveryResult | None] = asyncio.Queue()
        self.window = DuplicateWindow(self.lanes + self.record_batch)
        self.halt = Halt(stop)
        self.renewed: dict[int, datetime] = {}  # lease ends the heartbeat extended
        self.streak = FailureStreak(delivery.error_threshold)
        self.resume = resume_hint(spec)  # how staff resume the send, for the reasons
        self.watch = RejectWatch(self.resume)
        self.tally: dict[str, int] = {}  # results recorded in this pass, by status
        self.loop = asyncio.get_running_loop()
        self.looked = self.loop.time()  # when the send's status was last read

    # --- the whole pass ---------------------------------------------------------------------

    async def run(self) -> None:
        """Run the stages to the end of the pass; raise :class:`Paused` or :class:`Missed`."""
        recorder = asyncio.create_task(self.record())
        renewer = asyncio.create_task(self.heartbeat())
        reporter = asyncio.create_task(self.progress())
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.produce())
                for _ in range(self.lanes):
                    group.create_task(self.work())
        except BaseExceptionGroup as failed:
            # One task failed (the database went away under the producer): the others were
            # cancelled. Raise the first of our errors as itself, for the caller to handle.
            ours = failed.subgroup(lambda e: isinstance(e, MailerError))
            if ours is None:
                raise
            cause: BaseException = ours
            while isinstance(cause, BaseExceptionGroup):
                cause = cause.exceptions[0]
            raise cause from None
        finally:
            renewer.cancel()
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError, MailerError):
                await renewer
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            for item in self.watch.flush(complete=not self.halt.stopping()):
                await self.results.put(item)
            if self.watch.tripped is not None:
                self.halt.pause(self.watch.tripped)
            await self.results.put(None)
            try:
                await recorder
            finally:
                with contextlib.suppress(MailerError):
                    # what was leased and not attempted goes back now, not at expiry
                    await self.store.deliveries.release(self.spec.id, node=self.node)
        self.halt.raise_for_send()

    # --- the producer -----------------------------------------------------------------------

    async def produce(self) -> None:
        """Due deliveries by keyset batches to the feed, until none is left or the pass stops;
        then one end-of-queue marker per lane."""
        spec, feed = self.spec, self.feed
        after = 0
        try:
            while not await self.stopped():
                if self.first is not None and not self.store.capabilities.shares_leases:
                    # one short batch, read by the pre-flight: the last as well (only where
                    # leases are not shared: there another daemon may lease them)
                    batch = self.first
                else:
                    batch = await self.store.deliveries.due(
                        spec.id, after=after, limit=self.batch_size, now=self.clock(),
                        pending_ok=spec.action == CONFIRM_ACTION, node=self.node,
                        lease=self.lease,
                    )  # fmt: skip
                if not batch:
                    break
                if too_late(spec, self.clock()):
                    self.halt.missed = "the event started during the send"
                    break
                for due in batch:
                    if await self.stopped():
                        return
                    after = due.id
                    if due.skip_reason:
                        await self.results.put(
                            DeliveryResult(due.id, DeliveryStatus.SKIPPED, reason=due.skip_reason)
                        )
                    elif not await feed.push(due, self):
                        return
                feed.end_batch()
                if len(batch) < self.batch_size:
                    break  # a short batch is the last
            await feed.drain(self)
        finally:
            await feed.discard()
            await self._end_outbox()

    async def _end_outbox(self) -> None:
        """One end-of-queue marker per lane. Cancelled (a lane died of an unexpected error,
        so the task group cancels the rest), the lanes may be gone and a full outbox never
        drain: the messages still in it were neither sent nor recorded, so they stay queued,
        and the markers go in without waiting."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            while not self.outbox.empty():
                self.outbox.get_nowait()
            for _ in range(self.lanes):  # room for them: the outbox holds twice as many
                self.outbox.put_nowait(_DONE)
            return
        for _ in range(self.lanes):
            await self.outbox.put(_DONE)

    async def stopped(self) -> bool:
        """Whether the pass stops; staff may pause or cancel a send while it runs, so its
        status is read again every :data:`STAFF_LOOK` seconds."""
        if self.halt.stopping():
            return True
        if self.loop.time() - self.looked < STAFF_LOOK:
            return False
        self.looked = self.loop.time()
        if await self.store.sends.status(self.spec.id) == SendStatus.RUNNING:
            return False
        self.halt.by_staff = True
        return True

    async def hand_over(self, due: Due, made: Built | str) -> None:
        """A built message to the lanes; one that cannot be built is recorded failed."""
        if isinstance(made, str):
            await self.results.put(DeliveryResult(due.id, DeliveryStatus.FAILED, reason=made))
        else:
            if self.return_path is not None:  # set here, where the delivery is known
                made = replace(made, sender=self.return_path(due.id))
            await self.outbox.put((due, made))

    # --- the lanes --------------------------------------------------------------------------

    async def work(self) -> None:
        """One lane: each message from the outbox sent, its fate to the recorder."""
        halt, window, outbox, results = self.halt, self.window, self.outbox, self.results
        while (item := await outbox.get()) is not _DONE:
            if halt.stopping():
                continue  # not sent, not recorded: stays queued for the next run
            due, built = item
            await window.take()
            if halt.stopping() or not self.lease_left(due):
                window.unused()
                continue
            window.sent(due.id)
            try:
                result = await self.transport.send(built)
            except TransportFatal as exc:
                window.give_back(due.id)
                halt.pause(str(exc))
                continue
            outcome = self.retries.fate(due, result, message_id=built.message_id, now=self.clock())
            problem = self.streak.add(outcome)
            if result.policy:
                # 5.7.x: our sending is refused (policy, authentication, reputation).
                # Never the recipient's fault: put back, and pause at once.
                problem = policy_refusal(result, self.resume)
                outcome = put_back(outcome, problem or "")
                to_record = [outcome]
            else:
                to_record = self.watch.add(outcome, permanent=is_permanent_refusal(result))
                if self.watch.tripped is not None:
                    problem = self.watch.tripped
            if outcome not in to_record:
                # held back by the watch: a refused message cannot be a duplicate, so
                # its slot of the duplicate window is free now
                window.give_back(due.id)
            for recorded in to_record:
                await results.put(recorded)
            if problem:
                halt.pause(problem)

    def lease_left(self, due: Due) -> bool:
        """Fencing: a delivery goes only while this node's lease on it has time left, with a
        margin. A node frozen (or cut off) longer than its lease lost it: the delivery may
        be another node's now, so it sends nothing more of what it held."""
        until = self.renewed.get(due.id, due.lease_until)
        if until is None or self.clock() + self.margin < until:
            return True
        if not self.halt.fenced:
            log.warning(
                "send %s: this node's lease on its deliveries ran out %.1f s ago (was "
                "it frozen or cut off?); it sends nothing more of them: they go to "
                "whoever takes them",
                self.spec.id, (self.clock() - until).total_seconds(),
            )  # fmt: skip
        self.halt.fenced = True
        return False

    # --- the recorder -----------------------------------------------------------------------

    async def record(self) -> None:
        """Results written in group commits of ``record_batch`` (or what came in a quarter
        of a second), until the end-of-queue marker."""
        buffer: list[DeliveryResult] = []
        tally, results = self.tally, self.results
        while True:
            try:
                item = await asyncio.wait_for(results.get(), timeout=0.25)
            except TimeoutError:
                buffer = await self._commit(buffer)
                continue
            if item is None:
                await self._commit(buffer)
                return
            buffer.append(item)
            tally[item.status.value] = tally.get(item.status.value, 0) + 1
            if len(buffer) >= self.record_batch:
                buffer = await self._commit(buffer)

    async def _commit(self, buffer: list[DeliveryResult]) -> list[DeliveryResult]:
        """One group commit; the slots of the duplicate window given back; a new buffer."""
        if not buffer:
            return buffer
        try:
            await self.store.deliveries.record(
                buffer, now=self.clock(), actor=f"send {self.spec.id}"
            )
        except BaseException:
            # Never send without a record: stop the lanes, leave the rest queued.
            self.halt.pause("results cannot be recorded")
            self.window.wake(self.lanes)
            raise
        for outcome in buffer:
            self.window.give_back(outcome.delivery_id)
        if self.on_progress is not None:
            self.on_progress(dict(self.tally))
        return []

    # --- in the background ------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Keep this node's leases alive while it works on them."""
        while True:
            await asyncio.sleep(self.lease / 3)
            now = self.clock()
            until = now + timedelta(seconds=self.lease)
            try:
                ids = await self.store.deliveries.renew(
                    self.spec.id, node=self.node, until=until, now=now
                )
            except MailerError as exc:  # the next beat tries again; fencing stops us
                log.warning("send %s: cannot renew the leases: %s", self.spec.id, exc)
                continue
            # all the live leases this node holds on the send: the ones already recorded
            # drop out (kept, a million-recipient send grew this by every delivery)
            self.renewed = dict.fromkeys(ids, until)

    async def progress(self) -> None:
        """A line every ``progress_interval`` seconds: sent of total, failed, deferred,
        rate and ETA (``mailer status`` shows the same from the database)."""
        started = self.loop.time()
        while True:
            await asyncio.sleep(self.progress_interval)
            elapsed = self.loop.time() - started
            log.info("send %s: %s", self.spec.id, progress_line(self.tally, self.total, elapsed))


def progress_line(tally: dict[str, int], total: int, elapsed: float) -> str:
    """``sent 120 of 1000, failed 0, deferred 3, skipped 1; 40.1 msg/s, ETA 21 s``."""
    sent, failed = tally.get("sent", 0), tally.get("failed", 0)
    deferred, skipped = tally.get("deferred", 0), tally.get("skipped", 0)
    rate = sent / elapsed if elapsed > 0 else 0.0
    done = sent + failed + deferred + skipped
    if total and rate > 0:
        seconds = max(0, total - done) / rate
        eta = (
            f"{int(seconds // 60)} min {int(seconds % 60)} s"
            if seconds >= 60
            else f"{seconds:.0f} s"
        )
    else:
        eta = "unknown"
    of = f" of {total}" if total else ""
    return (
        f"sent {sent}{of}, failed {failed}, deferred {deferred}, skipped {skipped}; "
        f"{rate:.1f} msg/s, ETA {eta}"
    )

"""Dispatch: run one send from claim to last result. Orchestration only: SQL lives in
``storage``, SMTP in ``transport``, rendering and MIME in ``compose``.

The path of a send::

    claim (scheduled -> running, once) -> materialise deliveries (INSERT ... SELECT, repeat-safe)
    -> pre-flight (render every recipient, compose the first ones whole; a recipient's own
       failure fails that delivery, the campaign's pauses the send untouched)
    -> producer: due deliveries by keyset batches, rendered and built one by one
    -> pool_size workers: transport.send, one message each at a time
    -> recorder: results written in group commits of ``record_batch``

**The duplicate window.** A message is recorded ``sent`` only after the relay accepted it,
and results are committed in groups. A crash (kill -9) between the relay's 250 and the commit
leaves those deliveries ``queued``, and they go again when the send resumes. At most
``pool_size`` messages are in the workers and at most ``record_batch`` results wait in the
recorder, so a crash doubles at most ``pool_size + record_batch`` messages; nothing else is
ever sent twice, and nothing is ever lost: every delivery ends sent, failed or skipped.

A node that lost its lease (frozen, cut off) sends nothing more of what it held: before
each message it checks that its lease on the delivery has time left, with a margin
(fencing), so a frozen node cannot stretch that window either.

An unsubscribe or suppression that lands mid-send is seen when the delivery's batch is
fetched, and the delivery is skipped. A run of ``error_threshold`` consecutive failures
pauses the send with the last reply as reason; an authentication or TLS failure pauses it at
once, with the recipient in hand left queued. Permanent refusals at an implausible rate
(:class:`_RejectWatch`) and any 5.7.x reply pause it too, and those refusals are put back in
the queue: a broken relay neither fails nor suppresses anybody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from mailer.addresses import address_key
from mailer.compose import Composer, make_composer
from mailer.errors import MailerError, MessageError, TemplateError
from mailer.lifecycle import SendMove
from mailer.message import Built
from mailer.models import (
    CONFIRM_ACTION,
    DeliveryResult,
    DeliveryStatus,
    Due,
    SendAction,
    SendInfo,
    SendSpec,
    SendStatus,
)
from mailer.render import Renderer
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import Signer, load_signer
from mailer.transport import Outcome, Result, Transport, TransportFatal
from mailer.workers import Recipe, RenderPool, RenderWorkerLost, compose_batch

log = logging.getLogger("mailer.dispatch")

MAX_BACKOFF = timedelta(hours=6)
RENDER_WORKER_MIN = 1000  # recipients: below, a worker process costs more than it saves
RENDER_CHUNK = 64  # recipients per batch sent to the worker process
RENDER_AHEAD = 4  # chunks composed ahead of the SMTP workers: bounds the memory
PREFLIGHT_BUILT = 20  # recipients the pre-flight composes whole (the others: rendered)
FENCE_MARGIN = 5.0  # seconds of lease a message needs left to go (at most a fifth of it)
_DONE = None  # end-of-queue marker


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class RunSummary:
    send_id: int
    status: str
    counts: Mapping[str, int] = field(default_factory=dict)
    reason: str | None = None
    next_retry: datetime | None = None
    claimed: bool = True


class _Paused(MailerError):
    pass


class _Missed(MailerError):
    pass


class Engine:
    """Runs sends with one transport; make one per daemon or CLI command."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        transport: Transport,
        *,
        node: str,
        renderer: Renderer | None = None,
        signer: Signer | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.transport = transport
        self.node = node  # this daemon's identity: who claims sends and leases deliveries
        self.renderer = renderer  # None: one per version of the template files
        self._renderers: tuple[int, Renderer] | None = None
        self.signer = signer or load_signer(settings.secret_keys, settings.paths.data_dir)
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets

    # --- the whole send -------------------------------------------------------------------

    async def run_send(
        self,
        send_id: int,
        *,
        stop: asyncio.Event | None = None,
        wait_for_retries: bool = False,
        on_progress: Callable[[dict[str, int]], None] | None = None,
        spec: SendSpec | None = None,
    ) -> RunSummary:
        """Claim (or resume) a send and attempt every due delivery; return where it stands.

        ``spec``: the send as the caller just read it (the scheduler does), to save reading
        it again; its status is only a hint, since the claim is conditional.
        """
        stop = stop or asyncio.Event()
        store = self.store
        if spec is None or spec.id != send_id:
            spec = await store.sends.spec(send_id)
        if spec.status in (SendStatus.SCHEDULED, SendStatus.RUNNING) and self._too_late(spec):
            await store.sends.move(
                send_id, SendMove.TOO_LATE, now=self.clock(), reason="the event has started"
            )
            spec = await store.sends.spec(send_id)
            return RunSummary(
                send_id, spec.status, await store.figures.counts(send_id), spec.reason
            )
        if spec.status == SendStatus.SCHEDULED:
            if not await store.sends.start(spec, node=self.node, now=self.clock()):
                fresh = await store.sends.spec(send_id)
                return RunSummary(send_id, fresh.status, claimed=False, reason=fresh.reason)
        elif spec.status != SendStatus.RUNNING:
            return RunSummary(
                send_id, spec.status, await store.figures.counts(send_id), spec.reason
            )
        elif not await store.deliveries.exist(send_id):
            # A crash between the claim and the materialise: its transaction left nothing.
            # Otherwise the audience was fixed when the send started; a resume or a retry pass
            # neither scans the lists again nor adds those who joined since.
            await store.deliveries.materialise(spec, now=self.clock())
        try:
            composers = self._composers(spec)
            first, total = await self._preflight(spec, composers)
            while True:
                # A worker process for the first pass of a large send; retry passes are small.
                async with self._render_pool(spec, composers, total) as pool:
                    await self._pass(
                        spec, composers, stop, on_progress, first=first, pool=pool, total=total
                    )
                first = None
                if stop.is_set() or not wait_for_retries:
                    break
                if await store.sends.status(send_id) != SendStatus.RUNNING:
                    break
                next_retry = await store.deliveries.next_retry(send_id)
                if next_retry is None:
                    break
                delay = max(0.0, (next_retry - self.clock()).total_seconds())
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    total = (await store.figures.counts(send_id)).pending  # this pass, at most
                    continue
                break
        except _Missed as missed:
            await store.sends.move(send_id, SendMove.OVERRUN, now=self.clock(), reason=str(missed))
            log.warning("send %s stopped: %s", send_id, missed)
        except _Paused as paused:
            await store.sends.move(send_id, SendMove.HALT, now=self.clock(), reason=str(paused))
            log.warning("send %s paused: %s", send_id, paused)
        counts = await store.sends.finish(send_id, now=self.clock())
        status, reason, next_retry = await store.sends.standing(send_id)
        return RunSummary(send_id, status, counts, reason, next_retry)

    def _current_renderer(self) -> Renderer:
        """One Renderer (compiled templates) for as long as the template files do not change."""
        folder = self.settings.paths.templates_dir
        stamp = max((p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()), default=0)
        if self._renderers is None or self._renderers[0] != stamp:
            self._renderers = (stamp, Renderer(folder))
        return self._renderers[1]

    def _too_late(self, spec: SendSpec) -> bool:
        """A reminder is never sent once its event has started."""
        return (
            spec.action == SendAction.REMINDER
            and spec.event is not None
            and self.clock() >= spec.event.start
        )

    def _composers(self, spec: SendSpec) -> dict[int, Composer]:
        """One compiled send per list (its title and List-Id); a template error pauses."""
        now = self.clock()
        composers = {}
        renderer = self.renderer or self._current_renderer()
        try:
            for list_info in spec.lists:
                send = SendInfo(
                    content=spec.content,
                    list=list_info,
                    sender_name=spec.sender_name or self.settings.sender.from_name,
                    sender_address=spec.sender_address or self.settings.sender.from_address,
                    action=spec.action,
                    now=now,
                    event=spec.event,
                )
                composers[list_info.id] = make_composer(
                    self.settings,
                    renderer=renderer,
                    signer=self.signer,
                    send=send,
                    send_id=spec.id,
                    trace=f"c{spec.campaign_id}/{spec.key}",
                    eight_bit=self.transport.eight_bit,
                )
        except (TemplateError, MessageError) as exc:
            raise _Paused(f"cannot prepare the messages: {exc}") from None
        return composers

    def _render_pool(
        self, spec: SendSpec, composers: dict[int, Composer], recipients: int
    ) -> AbstractAsyncContextManager[RenderPool | None]:
        """A worker process composing this send's messages, or None: compose them here."""
        workers = self.settings.delivery.render_workers
        if workers == 0 or recipients < RENDER_WORKER_MIN:
            return nullcontext(None)
        renderer = self.renderer or self._current_renderer()
        sample = next(iter(composers.values()))
        recipe = Recipe(
            settings=self.settings,
            templates_dir=renderer.templates_dir,
            keys=self.signer.keys,
            sends=tuple(c.compiled.send for c in composers.values()),
            send_id=spec.id,
            trace=f"c{spec.campaign_id}/{spec.key}",
            eight_bit=sample.builder.eight_bit,
            parent=os.getpid(),
        )
        return RenderPool(recipe, workers=workers)

    async def _preflight(
        self, spec: SendSpec, composers: dict[int, Composer]
    ) -> tuple[list[Due] | None, int]:
        """Render and build every due recipient before the first message leaves.

        The first ``PREFLIGHT_BUILT`` recipients are composed whole (rendered, links made,
        MIME built, signed): what fails for every message (a base URL the builder refuses,
        the DKIM key) shows here. The others are rendered and their header values checked.

        A failure that belongs to a recipient (their address or name cannot go in a
        header; a template that fails on their data alone) fails that delivery with the
        reason, and the others go. One that belongs to the campaign (more than half of the
        recipients, or of those composed whole) pauses the send before anything leaves.

        Returns the due deliveries when they all fitted in one short batch (a small send),
        so that the first pass need not fetch them again (None otherwise), and how many
        recipients are to be sent.
        """
        after, total = 0, 0
        built = built_failed = 0
        failures: list[DeliveryResult] = []
        campaign_failed = 0
        reasons: list[str] = []
        now = self.clock()
        started = time.monotonic()
        only: list[Due] | None = None
        fetched = 0

        def check_batch(batch: list[Due]) -> None:
            nonlocal total, built, built_failed, campaign_failed
            for due in batch:
                if due.skip_reason:
                    continue
                total += 1
                composer = composers[due.list_id]
                try:
                    composer.check_recipient(due.recipient)
                except MessageError as exc:
                    failures.append(_not_built(due, exc))
                    continue
                whole = built < PREFLIGHT_BUILT
                try:
                    if whole:
                        built += 1
                        composer.compose(due.recipient, date=now)
                    else:
                        composer.check_one(due.recipient)
                except Exception as exc:  # any failure of a template is its own
                    # (a RecursionError of a body that calls itself, say): never the daemon's
                    built_failed += whole
                    campaign_failed += 1
                    failures.append(_not_built(due, exc))
                    if len(reasons) < 3:
                        reasons.append(f"{due.recipient.email}: {_describe(exc)}")

        while True:
            batch = await self.store.deliveries.due(
                spec.id, after=after, limit=self.settings.delivery.batch_size, now=now,
                pending_ok=spec.action == CONFIRM_ACTION,
            )  # fmt: skip
            fetched += 1
            if not batch:
                break
            if fetched == 1 and len(batch) < self.settings.delivery.batch_size:
                only = batch
            after = batch[-1].id
            # Rendering is CPU work (up to the render budget per recipient): a thread does
            # it, so the event loop (other sends, the pages, /healthz) is never held.
            await asyncio.to_thread(check_batch, batch)
            if len(batch) < self.settings.delivery.batch_size:
                break  # a short batch is the last: no query for an empty one
        elapsed = time.monotonic() - started
        log.info(
            "send %s: pre-flight check of %d recipients in %.2f s (%d composed whole); "
            "%d cannot be sent",
            spec.id, total, elapsed, built, len(failures),
        )  # fmt: skip
        checked = total - (len(failures) - campaign_failed)  # recipient data set aside
        if campaign_failed and (2 * campaign_failed > checked or 2 * built_failed > built):
            raise _Paused(
                f"pre-flight check: {campaign_failed} of {checked} recipients cannot be "
                "rendered or built; " + "; ".join(reasons)
            )
        if failures:
            await self.store.deliveries.record(failures, now=now, actor=f"send {spec.id}")
            log.warning(
                "send %s: %d recipients cannot be sent (recorded failed with the reason); "
                "the others go",
                spec.id, len(failures),
            )  # fmt: skip
            dropped = {o.delivery_id for o in failures}
            if only is not None:
                only = [d for d in only if d.id not in dropped]
            total -= len(failures)
        return only, total

    # --- one pass over the due deliveries ---------------------------------------------------

    async def _pass(
        self,
        spec: SendSpec,
        composers: dict[int, Composer],
        stop: asyncio.Event,
        on_progress: Callable[[dict[str, int]], None] | None,
        *,
        first: list[Due] | None = None,
        pool: RenderPool | None = None,
        total: int = 0,
    ) -> None:
        """Attempt the due deliveries once (``total`` of them, when known, for the progress
        lines logged every ``log.progress_interval`` seconds). ``first``: the whole due list,
        fetched a moment
        ago by the pre-flight check (a small send); it is used instead of a new query.
        ``pool``: compose in that worker process, ``RENDER_CHUNK`` recipients at a time and
        at most ``RENDER_AHEAD`` chunks ahead of the SMTP workers; if it dies, here."""
        connections = self.settings.smtp.pool_size
        outbox: asyncio.Queue[tuple[Due, Built] | None] = asyncio.Queue(maxsize=connections * 2)
        results: asyncio.Queue[DeliveryResult | None] = asyncio.Queue()
        halt: list[str] = []  # a reason to pause, set by a worker
        late: list[str] = []  # a reminder whose event started: the rest is missed
        halted_by_staff: list[bool] = []  # paused or cancelled from the CLI meanwhile
        fenced: list[int] = []  # a lease ran out (frozen, cut off): what it held is others'
        renewed: dict[int, datetime] = {}  # lease ends the heartbeat extended
        lease = self.settings.delivery.lease
        margin = timedelta(seconds=min(FENCE_MARGIN, lease / 5))
        streak = _Streak(self.settings.delivery.error_threshold)
        tally: dict[str, int] = {}  # results recorded in this pass, by status
        watch = _RejectWatch(_resume(spec))

        loop = asyncio.get_running_loop()
        checked = loop.time()

        async def still_running() -> bool:
            """Staff may pause or cancel a send while it runs: look twice a second."""
            nonlocal checked
            if loop.time() - checked < 0.5:
                return True
            checked = loop.time()
            if await self.store.sends.status(spec.id) == SendStatus.RUNNING:
                return True
            halted_by_staff.append(True)
            return False

        def stopping() -> bool:
            return bool(halt or stop.is_set() or halted_by_staff or fenced)

        def lease_left(due: Due) -> bool:
            """Fencing: a delivery goes only while this node's lease on it has time left,
            with a margin. A node frozen (or cut off) longer than its lease lost it: the
            delivery may be another node's now, so it sends nothing more of what it held."""
            until = renewed.get(due.id, due.lease_until)
            if until is None or self.clock() + margin < until:
                return True
            if not fenced:
                log.warning(
                    "send %s: this node's lease on its deliveries ran out %.1f s ago (was "
                    "it frozen or cut off?); it sends nothing more of them: they go to "
                    "whoever takes them",
                    spec.id, (self.clock() - until).total_seconds(),
                )  # fmt: skip
            fenced.append(due.id)
            return False

        async def stopped() -> bool:
            return stopping() or not await still_running()

        async def hand_over(due: Due, made: Built | str) -> None:
            if isinstance(made, str):
                await results.put(DeliveryResult(due.id, DeliveryStatus.FAILED, reason=made))
            else:
                await outbox.put((due, made))

        ahead: deque[tuple[list[Due], asyncio.Future[list[Built | str]]]] = deque()
        lost: list[bool] = []  # the worker process died: compose here from then on

        async def deliver_chunk() -> bool:
            """The oldest chunk from the worker to the SMTP workers; False once stopped."""
            chunk, future = ahead.popleft()
            try:
                made: list[Built | str] | None = await future
            except RenderWorkerLost as exc:
                if not lost:
                    log.warning("send %s: %s; composing in this process", spec.id, exc)
                    lost.append(True)
                made = None  # nothing of this chunk was sent: compose it here
            except Exception as exc:  # a template's failure the worker did not catch
                log.warning("send %s: the render worker failed on a batch (%s)", spec.id, exc)
                made = None  # composed here, one by one: each failure is its recipient's
            for n, due in enumerate(chunk):
                if await stopped():
                    return False
                if made is None:
                    await hand_over(due, await self._compose_off_loop(composers, due))
                else:
                    await hand_over(due, made[n])
            return True

        def submit(pool: RenderPool, chunk: list[Due]) -> None:
            items = [(d.list_id, d.recipient) for d in chunk]
            ahead.append((chunk, asyncio.ensure_future(pool.compose(items, date=self.clock()))))

        async def produce() -> None:
            after = 0
            try:
                while not await stopped():
                    if first is not None and not self.store.capabilities.shares_leases:
                        # one short batch, read by the pre-flight: the last as well (only
                        # where leases are not shared: there another daemon may lease them)
                        batch = first
                    else:
                        batch = await self.store.deliveries.due(
                            spec.id, after=after, limit=self.settings.delivery.batch_size,
                            now=self.clock(), pending_ok=spec.action == CONFIRM_ACTION,
                            node=self.node, lease=self.settings.delivery.lease,
                        )  # fmt: skip
                    if not batch:
                        break
                    if self._too_late(spec):
                        late.append("the event started during the send")
                        break
                    chunk: list[Due] = []
                    for due in batch:
                        if await stopped():
                            return
                        after = due.id
                        if due.skip_reason:
                            await results.put(
                                DeliveryResult(
                                    due.id, DeliveryStatus.SKIPPED, reason=due.skip_reason
                                )
                            )
                        elif pool is None or lost:
                            await hand_over(due, await self._compose_off_loop(composers, due))
                        else:
                            chunk.append(due)
                            if len(chunk) == RENDER_CHUNK:
                                submit(pool, chunk)
                                chunk = []
                            while len(ahead) > RENDER_AHEAD:
                                if not await deliver_chunk():
                                    return
                    if chunk and pool is not None:
                        submit(pool, chunk)
                    if len(batch) < self.settings.delivery.batch_size:
                        break  # a short batch is the last
                while ahead:
                    if not await deliver_chunk():
                        return
            finally:
                for _, future in ahead:
                    future.cancel()  # not sent, not recorded: stays queued
                await asyncio.gather(*(future for _, future in ahead), return_exceptions=True)
                for _ in range(connections):
                    await outbox.put(_DONE)

        # The duplicate window: at most pool size + record batch messages are ever sent and not
        # yet recorded. A worker takes a slot before it sends; the recorder gives the slots
        # back once the results are committed. When the database stalls (locked, full, down),
        # the workers wait instead of sending on without a record.
        unrecorded = asyncio.Semaphore(connections + self.settings.delivery.record_batch)
        held: set[int] = set()

        async def work() -> None:
            while (item := await outbox.get()) is not _DONE:
                if stopping():
                    continue  # not sent, not recorded: stays queued for the next run
                due, built = item
                await unrecorded.acquire()
                if stopping() or not lease_left(due):
                    unrecorded.release()
                    continue
                held.add(due.id)
                try:
                    result = await self.transport.send(built)
                except TransportFatal as exc:
                    held.discard(due.id)
                    unrecorded.release()
                    halt.append(str(exc))
                    continue
                outcome = self._outcome(due, built, result)
                problem = streak.add(outcome)
                if result.policy:
                    # 5.7.x: our sending is refused (policy, authentication, reputation).
                    # Never the recipient's fault: put back, and pause at once.
                    problem = (
                        f"the relay refused a message for a policy reason "
                        f"({result.code} {result.reply}): check the relay, the sender address "
                        f"(SPF, DKIM) and this machine's reputation, then {_resume(spec)}; "
                        "nobody was failed or suppressed for it"
                    )
                    outcome = put_back(outcome, problem)
                    to_record = [outcome]
                else:
                    permanent = result.outcome == Outcome.FAILED and result.code is not None
                    to_record = watch.add(outcome, permanent=permanent)
                    if watch.tripped is not None:
                        problem = watch.tripped
                if outcome not in to_record and due.id in held:
                    # held back by the watch: a refused message cannot be a duplicate, so
                    # its slot of the duplicate window is free now
                    held.discard(due.id)
                    unrecorded.release()
                for recorded in to_record:
                    await results.put(recorded)
                if problem and not halt:
                    halt.append(problem)

        async def record() -> None:
            buffer: list[DeliveryResult] = []

            async def flush() -> None:
                nonlocal buffer
                if not buffer:
                    return
                try:
                    await self.store.deliveries.record(
                        buffer, now=self.clock(), actor=f"send {spec.id}"
                    )
                except BaseException:
                    # Never send without a record: stop the workers, leave the rest queued.
                    halt.append("results cannot be recorded")
                    for _ in range(connections):
                        unrecorded.release()  # wake the workers waiting for a slot: they stop
                    raise
                for outcome in buffer:
                    if outcome.delivery_id in held:
                        held.discard(outcome.delivery_id)
                        unrecorded.release()
                buffer = []
                if on_progress is not None:
                    on_progress(dict(tally))

            while True:
                try:
                    item = await asyncio.wait_for(results.get(), timeout=0.25)
                except TimeoutError:
                    await flush()
                    continue
                if item is None:
                    await flush()
                    return
                buffer.append(item)
                tally[item.status.value] = tally.get(item.status.value, 0) + 1
                if len(buffer) >= self.settings.delivery.record_batch:
                    await flush()

        async def heartbeat() -> None:
            """Keep this node's leases alive while it works on them."""
            while True:
                await asyncio.sleep(lease / 3)
                now = self.clock()
                until = now + timedelta(seconds=lease)
                try:
                    ids = await self.store.deliveries.renew(
                        spec.id, node=self.node, until=until, now=now
                    )
                except MailerError as exc:  # the next beat tries again; fencing stops us
                    log.warning("send %s: cannot renew the leases: %s", spec.id, exc)
                    continue
                for delivery_id in ids:
                    renewed[delivery_id] = until

        async def progress() -> None:
            """A line every ``progress_interval`` seconds: sent of total, failed, deferred,
            rate and ETA (``mailer status`` shows the same from the database)."""
            interval = self.settings.log.progress_interval
            started = loop.time()
            while True:
                await asyncio.sleep(interval)
                log.info(
                    "send %s: %s", spec.id, _progress_line(tally, total, loop.time() - started)
                )

        recorder = asyncio.create_task(record())
        renewer = asyncio.create_task(heartbeat())
        reporter = asyncio.create_task(progress())
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                for _ in range(connections):
                    group.create_task(work())
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
            for item in watch.flush(complete=not stopping()):
                await results.put(item)
            if watch.tripped is not None and not halt:
                halt.append(watch.tripped)
            await results.put(None)
            try:
                await recorder
            finally:
                with contextlib.suppress(MailerError):
                    # what was leased and not attempted goes back now, not at expiry
                    await self.store.deliveries.release(spec.id, node=self.node)
        if halt:
            raise _Paused(halt[0])
        if late:
            raise _Missed(late[0])

    async def _compose_off_loop(self, composers: dict[int, Composer], due: Due) -> Built | str:
        """:meth:`_compose` in a thread: a slow template (up to the render budget) never
        holds the event loop, which serves the other sends and the pages meanwhile."""
        return await asyncio.to_thread(self._compose, composers, due)

    def _compose(self, composers: dict[int, Composer], due: Due) -> Built | str:
        """Compose one message here: the built message, or why it cannot be built."""
        try:
            return compose_batch(composers, [(due.list_id, due.recipient)], self.clock())[0]
        except Exception as exc:  # a template's failure, whatever its kind
            return f"not built: {_describe(exc)}"

    def _outcome(self, due: Due, built: Built, result: Result) -> DeliveryResult:
        now = self.clock()
        if result.outcome == Outcome.SENT:
            return DeliveryResult(
                due.id, DeliveryStatus.SENT, code=result.code, reply=result.reply,
                message_id=built.message_id,
            )  # fmt: skip
        if result.outcome == Outcome.FAILED:
            return DeliveryResult(
                due.id, DeliveryStatus.FAILED, code=result.code, reply=result.reply,
                message_id=built.message_id,
                suppress_key=address_key(due.recipient.email) if result.suppress else None,
            )  # fmt: skip
        attempts = due.attempts + 1
        lifetime = timedelta(seconds=self.settings.delivery.retry_lifetime)
        if now - due.created_at >= lifetime:
            return DeliveryResult(
                due.id, DeliveryStatus.FAILED, code=result.code, reply=result.reply,
                reason=f"gave up after {attempts} attempts over {lifetime}",
                message_id=built.message_id,
            )  # fmt: skip
        delay = min(
            timedelta(seconds=self.settings.delivery.retry_base * 2 ** (attempts - 1)), MAX_BACKOFF
        ) * self.rng.uniform(0.8, 1.2)
        return DeliveryResult(
            due.id, DeliveryStatus.DEFERRED, code=result.code, reply=result.reply,
            message_id=built.message_id, next_attempt_at=now + delay,
        )  # fmt: skip


class _RejectWatch:
    """Permanent refusals at a rate no real list has: the relay is broken, not the addresses.

    A relay misconfigured for a minute answers ``550 5.1.1`` to everyone; recording that
    would fail and suppress the whole list for good. So permanent refusals are held back
    (not recorded, not suppressed) while they could still add up to an implausible rate:
    at least ``FIRST_LIMIT`` of the first ``FIRST`` attempts, or half of the last ``WINDOW``
    attempts once ``WINDOW_MIN`` are in it. Then the send pauses and every refusal held, and
    every one that comes after, is put back in the queue (to be retried once the relay is
    fixed) instead. A refusal that can no longer tip the rate is released, as a failure.
    """

    FIRST, FIRST_LIMIT = 20, 10
    WINDOW, WINDOW_MIN = 50, 20
    SMALL_MIN = 3  # a pass of fewer attempts than FIRST_LIMIT: all of at least 3 refused

    def __init__(self, resume: str) -> None:
        self.resume = resume  # how staff resume the send, for the reason
        self.attempts = 0
        self.first_rejects = 0
        self.window: deque[bool] = deque(maxlen=self.WINDOW)
        self.held: deque[tuple[int, DeliveryResult]] = deque()  # (attempt number, outcome)
        self.first_reply: str | None = None
        self.tripped: str | None = None  # the reason to pause, once tripped

    def add(self, outcome: DeliveryResult, *, permanent: bool) -> list[DeliveryResult]:
        """Take one attempt's outcome; return the outcomes to record now."""
        self.attempts += 1
        self.window.append(permanent)
        if not permanent:
            return [outcome, *self._release()]
        if self.tripped is not None:
            return [put_back(outcome, self.tripped)]
        if self.first_reply is None:
            self.first_reply = f"{outcome.code or ''} {outcome.reply or ''}".strip()
        if self.attempts <= self.FIRST:
            self.first_rejects += 1
        self.held.append((self.attempts, outcome))
        refused, among = 0, 0
        if self.attempts <= self.FIRST and self.first_rejects >= self.FIRST_LIMIT:
            refused, among, which = self.first_rejects, self.attempts, "first"
        elif len(self.window) >= self.WINDOW_MIN and 2 * sum(self.window) >= len(self.window):
            refused, among, which = sum(self.window), len(self.window), "last"
        if not among:
            return self._release()
        self.tripped = (
            f"{refused} of the {which} {among} recipients were refused permanently "
            f"({self.first_reply}): that is the relay, not the addresses, so nobody was "
            f"failed or suppressed for it; check the relay, then {self.resume}"
        )
        held = [put_back(o, self.tripped) for _, o in self.held]
        self.held.clear()
        return held

    def _release(self) -> list[DeliveryResult]:
        """The refusals held that can no longer tip the rate: out of the first attempts
        and out of the window."""
        out = []
        while (
            self.held
            and self.attempts >= self.FIRST
            and self.held[0][0] <= self.attempts - self.WINDOW
        ):
            out.append(self.held.popleft()[1])
        return out

    def flush(self, *, complete: bool) -> list[DeliveryResult]:
        """At the end of a pass: the refusals still held, recorded as they are when the
        pass went through (``complete``), else put back (nothing is known about them).

        A pass too short to reach ``FIRST_LIMIT`` (a small list) in which every attempt,
        at least ``SMALL_MIN`` of them, was refused permanently trips the watch too: that
        is the relay as well, and the send pauses."""
        if (
            complete
            and self.tripped is None
            and self.attempts >= self.SMALL_MIN
            and len(self.held) == self.attempts
        ):
            self.tripped = (
                f"all {self.attempts} recipients were refused permanently "
                f"({self.first_reply}): that is the relay, not the addresses, so nobody was "
                f"failed or suppressed for it; check the relay, then {self.resume}"
            )
            complete = False
        reason = self.tripped or "the pass stopped"
        held = [o if complete else put_back(o, reason) for _, o in self.held]
        self.held.clear()
        return held


def _progress_line(tally: dict[str, int], total: int, elapsed: float) -> str:
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


def _resume(spec: SendSpec) -> str:
    """How staff resume a paused send: with the daemon, or in the foreground."""
    return (
        f"resume it with `mailer campaign resume {spec.content.name}` (the daemon sends it) "
        f"or `mailer send run {spec.id}`"
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "the template calls itself without end (maximum recursion depth)"
    return str(exc) or type(exc).__name__


def _not_built(due: Due, exc: BaseException) -> DeliveryResult:
    return DeliveryResult(
        due.id, DeliveryStatus.FAILED, reason=f"not built: {_describe(exc)}"[:1000]
    )


def put_back(outcome: DeliveryResult, reason: str) -> DeliveryResult:
    """The delivery goes back to the queue: no failure, no suppression, attempted again."""
    return DeliveryResult(
        outcome.delivery_id, DeliveryStatus.QUEUED, code=outcome.code, reply=outcome.reply,
        reason=f"put back: {reason}"[:1000], message_id=outcome.message_id,
    )  # fmt: skip


class _Streak:
    """Consecutive failures; the threshold pauses the send instead of burning the list."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.count = 0

    def add(self, outcome: DeliveryResult) -> str | None:
        if outcome.status == DeliveryStatus.SENT:
            self.count = 0
            return None
        if outcome.status not in (DeliveryStatus.FAILED, DeliveryStatus.DEFERRED):
            return None
        self.count += 1
        if self.count >= self.threshold:
            return (
                f"{self.count} messages in a row were not accepted; last reply: "
                f"{outcome.code or ''} {outcome.reply or outcome.reason or ''}".strip()
            )
        return None


__all__ = ["Engine", "RunSummary", "utcnow"]

"""The engine: one send run from its claim to its last result, pass after pass.

:meth:`Engine.run_send` claims (or resumes) a send, materialises its deliveries, compiles its
composers (one per list), runs the pre-flight (for a large send in the render pool, opened
for it and kept for the first pass), then one :class:`~.send_pass.SendPass` per pass with
the :class:`~.feed.Feed` of that pass, and moves the send as the pass ended (paused,
overrun, done). It returns a :class:`RunSummary`.

It must not speak SQL or SMTP (``storage`` and ``transport`` do), run the stages of a pass
(``send_pass`` does) or decide a delivery's fate (``policy`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailer.clock import Clock, utc_now
from mailer.compose import Composer, make_composer
from mailer.dispatch.feed import Feed, open_feed, open_pool, trace_of
from mailer.dispatch.policy import Retries, too_late
from mailer.dispatch.preflight import Preflight
from mailer.dispatch.send_pass import Missed, Paused, SendPass
from mailer.errors import MessageError, TemplateError
from mailer.lifecycle import SendMove
from mailer.models import CONFIRM_ACTION, Due, SendInfo, SendSpec, SendStatus
from mailer.render import Renderer
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import Signer, load_signer, return_path
from mailer.transport import Transport

log = logging.getLogger("mailer.dispatch")


@dataclass(slots=True)
class RunSummary:
    """Where a send stands after :meth:`Engine.run_send`."""

    send_id: int
    status: SendStatus
    counts: Mapping[str, int] = field(default_factory=dict)
    reason: str | None = None
    next_retry: datetime | None = None
    claimed: bool = True  # False: another node (or command) holds the send


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
        clock: Clock = utc_now,
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
        if spec.status in (SendStatus.SCHEDULED, SendStatus.RUNNING) and too_late(
            spec, self.clock()
        ):
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
            await self._passes(spec, stop, on_progress, wait_for_retries=wait_for_retries)
        except Missed as missed:
            await store.sends.move(send_id, SendMove.OVERRUN, now=self.clock(), reason=str(missed))
            log.warning("send %s stopped: %s", send_id, missed)
        except Paused as paused:
            await store.sends.move(send_id, SendMove.HALT, now=self.clock(), reason=str(paused))
            log.warning("send %s paused: %s", send_id, paused)
        counts = await store.sends.finish(send_id, now=self.clock())
        status, reason, next_retry = await store.sends.standing(send_id)
        return RunSummary(send_id, SendStatus(status), counts, reason, next_retry)

    async def _passes(
        self,
        spec: SendSpec,
        stop: asyncio.Event,
        on_progress: Callable[[dict[str, int]], None] | None,
        *,
        wait_for_retries: bool,
    ) -> None:
        """The pre-flight, then a pass over the due deliveries; with ``wait_for_retries``,
        another each time retries fall due, while the send runs and nothing stops it.

        A large send's render pool is opened before the pre-flight, which runs in it, and
        kept for the first pass; the pre-flight has ended before the pass starts."""
        composers = self._composers(spec)
        renderer = self.renderer
        templates_dir = renderer.templates_dir if renderer else self.settings.paths.templates_dir
        keys, clock = self.signer.keys, self.clock
        due = (await self.store.figures.counts(spec.id)).pending
        async with open_pool(
            self.settings, spec, composers, templates_dir=templates_dir, keys=keys, recipients=due
        ) as pool:
            feed = Feed(composers, clock=clock, send_id=spec.id, pool=pool)
            first, total = await self._preflight(spec, feed)
            feed = Feed(composers, clock=clock, send_id=spec.id, pool=pool)
            await self._pass(spec, feed, stop, on_progress, first=first, total=total)
        while not stop.is_set() and wait_for_retries:
            if await self.store.sends.status(spec.id) != SendStatus.RUNNING:
                return
            next_retry = await self.store.deliveries.next_retry(spec.id)
            if next_retry is None:
                return
            delay = max(0.0, (next_retry - self.clock()).total_seconds())
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                total = (await self.store.figures.counts(spec.id)).pending  # this pass, at most
            else:
                return
            async with open_feed(
                self.settings, spec, composers,
                templates_dir=templates_dir, keys=keys, recipients=total, clock=clock,
            ) as feed:  # fmt: skip
                await self._pass(spec, feed, stop, on_progress, total=total)

    async def _pass(
        self,
        spec: SendSpec,
        feed: Feed,
        stop: asyncio.Event,
        on_progress: Callable[[dict[str, int]], None] | None,
        *,
        first: list[Due] | None = None,
        total: int = 0,
    ) -> None:
        """Attempt the due deliveries once (see :class:`~.send_pass.SendPass`)."""
        delivery = self.settings.delivery
        retries = Retries(
            base=delivery.retry_base,
            lifetime=timedelta(seconds=delivery.retry_lifetime),
            rng=self.rng,
        )
        await SendPass(
            spec, feed, settings=self.settings, store=self.store, transport=self.transport,
            node=self.node, clock=self.clock, retries=retries, stop=stop,
            on_progress=on_progress, first=first, total=total,
            return_path=self._return_path(),
        ).run()  # fmt: skip

    def _return_path(self) -> Callable[[int], str] | None:
        """Each delivery's envelope sender with MAILER_BOUNCES__DOMAIN (VERP), else None."""
        domain, signer = self.settings.bounces.domain, self.signer
        if domain is None:
            return None
        return lambda delivery_id: return_path(signer, delivery_id, domain)

    # --- the composers ----------------------------------------------------------------------

    def _current_renderer(self) -> Renderer:
        """One Renderer (compiled templates) for as long as the template files do not change."""
        folder = self.settings.paths.templates_dir
        stamp = max((p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()), default=0)
        if self._renderers is None or self._renderers[0] != stamp:
            self._renderers = (stamp, Renderer(folder))
        return self._renderers[1]

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
                    key=spec.key,
                )
                composers[list_info.id] = make_composer(
                    self.settings,
                    renderer=renderer,
                    signer=self.signer,
                    send=send,
                    send_id=spec.id,
                    trace=trace_of(spec),
                    eight_bit=self.transport.eight_bit,
                )
        except (TemplateError, MessageError) as exc:
            raise Paused(f"cannot prepare the messages: {exc}") from None
        return composers

    # --- the pre-flight ---------------------------------------------------------------------

    async def _preflight(self, spec: SendSpec, feed: Feed) -> tuple[list[Due] | None, int]:
        """Render and build every due recipient before the first message leaves.

        The first ``PREFLIGHT_BUILT`` recipients are composed whole (rendered, links made,
        MIME built, signed): what fails for every message (a base URL the builder refuses,
        the DKIM key) shows here. The others are rendered and their header values checked,
        in the render pool's processes when the feed has one.

        A failure that belongs to a recipient (their address or name cannot go in a
        header; a template that fails on their data alone) fails that delivery with the
        reason, and the others go. One that belongs to the campaign (more than half of the
        recipients, or of those composed whole) pauses the send before anything leaves.

        Returns the due deliveries when they all fitted in one short batch (a small send),
        so that the first pass need not fetch them again (None otherwise), and how many
        recipients are to be sent.
        """
        check = Preflight()
        started = time.monotonic()
        only = await self._check_all(spec, feed, check, now=self.clock())
        elapsed = time.monotonic() - started
        failures, total = check.failures, check.total
        log.info(
            "send %s: pre-flight check of %d recipients in %.2f s (%.0f µs per recipient, "
            "%s; %d composed whole); %d cannot be sent",
            spec.id, total, elapsed, elapsed * 1e6 / max(total, 1), feed.where, check.built,
            len(failures),
        )  # fmt: skip
        log.info("send %s: languages: %s", spec.id, check.languages.summary())
        reason = check.campaign_fails()
        if reason is not None:
            raise Paused(reason)
        if failures:
            await self.store.deliveries.record(failures, now=self.clock(), actor=f"send {spec.id}")
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

    async def _check_all(
        self, spec: SendSpec, feed: Feed, check: Preflight, *, now: datetime
    ) -> list[Due] | None:
        """Every due delivery checked by the feed, batch after batch; the next batch is read
        while the last one is checked (once the first ones were composed whole). The due
        deliveries when there was one short batch, else None."""
        batch_size = self.settings.delivery.batch_size
        only: list[Due] | None = None
        after, fetched = 0, 0
        checking: asyncio.Future[None] | None = None  # the check of the batch read last

        async def run(dues: list[Due], whole: int) -> None:
            check.add(dues, await feed.check(dues, whole=whole, date=now))

        try:
            while True:
                batch = await self.store.deliveries.due(
                    spec.id, after=after, limit=batch_size, now=now,
                    pending_ok=spec.action == CONFIRM_ACTION,
                )  # fmt: skip
                fetched += 1
                if checking is not None:
                    await checking
                    checking = None
                if not batch:
                    break
                if fetched == 1 and len(batch) < batch_size:
                    only = batch
                after = batch[-1].id
                dues = [d for d in batch if not d.skip_reason]
                if check.whole_left:  # what the next batch composes whole depends on it
                    await run(dues, check.whole_left)
                else:
                    checking = asyncio.ensure_future(run(dues, 0))
                if len(batch) < batch_size:
                    break  # a short batch is the last: no query for an empty one
            if checking is not None:
                await checking
        finally:
            if checking is not None and not checking.done():
                checking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checking
            elif checking is not None and not checking.cancelled():
                checking.exception()  # retrieved: the error that ended the loop is the one
        return only


__all__ = ["Engine", "RunSummary"]

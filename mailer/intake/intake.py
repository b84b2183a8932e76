"""The one way a bounce is taken in (:class:`Intake`), whatever brought it: the listener,
an IMAP mailbox, ``mailer bounces import``, a relay's webhook. Read it (in a worker thread:
parsing a large bounce takes milliseconds), store it once, and act on what storing it found:
a send whose messages are refused for policy in numbers is paused, and the operator told.
One message at a time (:meth:`Intake.message`: the listener answers each) or a batch
(:meth:`Intake.messages`: an IMAP fetch, an import; a transaction per 500, same outcomes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from mailer.bounces import Report, parse
from mailer.clock import Clock, utc_now
from mailer.errors import StorageError
from mailer.intake import reading
from mailer.lifecycle import SendMove
from mailer.models import BounceAction, BounceLimits, BounceOutcome, IncomingBounce
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import Signer, load_signer

log = logging.getLogger("mailer.bounces")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ProviderEvent(Protocol):
    """One relay webhook event, read and verified (``mailer.bounces.providers``)."""

    @property
    def provider(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def report(self) -> Report: ...


def limits_of(settings: Settings) -> BounceLimits:
    b = settings.bounces
    return BounceLimits(
        hard_limit=b.hard_limit, soft_limit=b.soft_limit, stale_days=b.stale_days,
        policy_pause_rate=b.policy_pause_rate, policy_pause_min=b.policy_pause_min,
    )  # fmt: skip


@dataclass
class Intake:
    """Bounces in, for one store and one set of settings."""

    store: Store
    settings: Settings
    clock: Clock = utc_now
    signer: Signer | None = None
    limits: BounceLimits = field(init=False)

    def __post_init__(self) -> None:
        self.limits = limits_of(self.settings)
        if self.signer is None:
            self.signer = load_signer(self.settings.secret_keys, self.settings.paths.data_dir)

    async def message(
        self, raw: bytes, *, source: str, envelope_to: Sequence[str] = ()
    ) -> BounceOutcome:
        """Take one bounce message in: read, store (once), act. Raises StorageError or
        StorageUnavailable if it could not be stored (the caller keeps the message)."""
        report = await asyncio.to_thread(parse, raw)
        found = self._incoming(raw, report, source=source, envelope_to=envelope_to)
        outcome = await self.store.bounces.record(found, self.limits, now=self.clock())
        self._forged(found, outcome)
        await self._act([outcome], source)
        return outcome

    async def messages(self, raws: Sequence[bytes], *, source: str) -> list[BounceOutcome]:
        """Take bounce messages in as :meth:`message` would one after another (the same
        outcomes), stored in batches: one transaction per 500 messages, the policy pause
        checked once per send. Raises as :meth:`message` (then none of the batch that
        failed is stored: the caller keeps them all)."""
        if not raws:
            return []
        reports = await asyncio.to_thread(lambda: [parse(raw) for raw in raws])
        found = [
            self._incoming(raw, report, source=source)
            for raw, report in zip(raws, reports, strict=True)
        ]
        outcomes = await self.store.bounces.record_many(found, self.limits, now=self.clock())
        for incoming, outcome in zip(found, outcomes, strict=True):
            self._forged(incoming, outcome)
        await self._act(outcomes, source)
        return outcomes

    def _incoming(
        self, raw: bytes, report: Report, *, source: str, envelope_to: Sequence[str] = ()
    ) -> IncomingBounce:
        assert self.signer is not None
        return reading.incoming(
            report, fingerprint=reading.fingerprint(raw), source=source, raw=raw,
            envelope_to=envelope_to, domain=self.settings.bounces.domain, signer=self.signer,
        )  # fmt: skip

    @staticmethod
    def _forged(found: IncomingBounce, outcome: BounceOutcome) -> None:
        if found.forged and not outcome.duplicate:
            log.warning(
                "bounce from %s: its return path's signature does not check out (forged or "
                "mangled); kept as bounce %d, counted for nothing", found.source,
                outcome.bounce_id,
            )  # fmt: skip

    async def keep(self, *, every: float = 3600.0) -> None:
        """Forever (until cancelled): empty the raw messages older than
        ``MAILER_BOUNCES__KEEP_DAYS``, once now and then every ``every`` seconds. Idempotent:
        several daemons may run it."""
        while True:
            before = self.clock() - timedelta(days=self.settings.bounces.keep_days)
            try:
                emptied = await self.store.bounces.purge(raw_before=before)
            except StorageError as exc:
                log.warning("bounces: could not empty the old raw messages (%s)", exc)
            else:
                if emptied:
                    log.info("bounces: %d raw message(s) older than %d days emptied", emptied,
                             self.settings.bounces.keep_days)  # fmt: skip
            await asyncio.sleep(every)

    async def events(self, events: Sequence[ProviderEvent]) -> list[BounceOutcome]:
        """Take a relay webhook's events in, each stored once by its provider's id."""
        assert self.signer is not None
        outcomes = []
        for event in events:
            found = reading.incoming(
                event.report, source=f"webhook:{event.provider}", raw=None,
                fingerprint=reading.event_fingerprint(event.provider, event.event_id),
                domain=self.settings.bounces.domain, signer=self.signer,
            )  # fmt: skip
            outcome = await self.store.bounces.record(found, self.limits, now=self.clock())
            await self._act([outcome], found.source)
            outcomes.append(outcome)
        return outcomes

    async def _act(self, outcomes: Sequence[BounceOutcome], source: str) -> None:
        """Log what the bounces did; check the policy pause of each send they bounced for
        policy, once."""
        policy: set[int] = set()
        for outcome in outcomes:
            if outcome.duplicate:
                log.info("bounce from %s: received before (bounce %d)", source, outcome.bounce_id)
                continue
            for note in outcome.notes:
                if note.action in (BounceAction.SUPPRESSED, BounceAction.UNSUBSCRIBED):
                    log.info(
                        "bounce from %s: %s %s (%s)", source, note.recipient, note.action.value,
                        note.kind.value,
                    )  # fmt: skip
                if note.action is BounceAction.POLICY and note.send_id is not None:
                    policy.add(note.send_id)
        for send_id in sorted(policy):
            await self._policy(send_id)

    async def _policy(self, send_id: int) -> None:
        """Pause a send once its policy bounces reach the share the settings allow."""
        policy, sent = await self.store.bounces.policy_share(send_id, since=EPOCH)
        limits = self.limits
        if policy < limits.policy_pause_min or policy < limits.policy_pause_rate * max(sent, 1):
            return
        reason = (
            f"paused: {policy} of {sent} messages refused for policy (5.7.x: blocks, "
            "reputation, DMARC/SPF/DKIM); check the sender's domain and the relay before "
            "resuming"
        )
        if await self.store.sends.move(send_id, SendMove.PAUSE, now=self.clock(), reason=reason):
            log.warning("send %d %s", send_id, reason)

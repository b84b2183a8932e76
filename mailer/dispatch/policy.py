"""The sending rules, as pure decisions: what a reply makes of a delivery, when it is tried
again, when a run of failures or of refusals pauses the send, and when a send is too late to go.

Everything here is handed what it judges and the time (``now``); nothing here reads a clock,
the database or the network, logs, or awaits. The stages of :mod:`~.send_pass` and the
scheduler ask these questions; they carry out the answers.

- :class:`Retries`: a delivery's fate after one attempt (sent, failed, deferred with a backoff,
  or given up after the retry lifetime); :func:`backoff` the wait before the next attempt;
- :func:`put_back` and :func:`policy_refusal`: a 5.7.x reply refuses our sending, not the
  recipient: the delivery goes back to the queue and the send pauses;
- :class:`FailureStreak`: ``error_threshold`` failures in a row pause the send;
- :class:`RejectWatch`: permanent refusals at a rate no real list has pause it too;
- :func:`too_late` (a reminder once its event started) and :func:`past_grace` (a send due
  longer ago than its grace is missed, not sent late).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailer.addresses import address_key
from mailer.models import DeliveryResult, DeliveryStatus, Due, SendAction, SendSpec
from mailer.transport import Outcome, Result

MAX_BACKOFF = timedelta(hours=6)  # the longest wait between two attempts, before the jitter
JITTER = (0.8, 1.2)  # each wait is the backoff times a factor drawn from this range


def backoff(attempts: int, *, base: float, jitter: float) -> timedelta:
    """The wait before the next attempt, after ``attempts`` of them (the first is 1):
    ``base`` seconds doubled at each attempt, at most :data:`MAX_BACKOFF`, times ``jitter``."""
    return min(timedelta(seconds=base * 2 ** (attempts - 1)), MAX_BACKOFF) * jitter


@dataclass(frozen=True, slots=True)
class Retries:
    """How deferred deliveries are retried: a doubling wait from ``base`` seconds, given up
    (failed) once the delivery is ``lifetime`` old; ``rng`` draws the jitter."""

    base: float
    lifetime: timedelta
    rng: random.Random

    def fate(
        self, due: Due, result: Result, *, message_id: str | None, now: datetime
    ) -> DeliveryResult:
        """What one attempt makes of the delivery: sent; failed (with a suppression when the
        reply says the address does not exist); deferred to a later attempt; or failed after
        ``lifetime`` of deferrals."""
        if result.outcome == Outcome.SENT:
            return DeliveryResult(
                due.id, DeliveryStatus.SENT, code=result.code, reply=result.reply,
                message_id=message_id,
            )  # fmt: skip
        if result.outcome == Outcome.FAILED:
            return DeliveryResult(
                due.id, DeliveryStatus.FAILED, code=result.code, reply=result.reply,
                message_id=message_id,
                suppress_key=address_key(due.recipient.email) if result.suppress else None,
            )  # fmt: skip
        attempts = due.attempts + 1
        if now - due.created_at >= self.lifetime:
            return DeliveryResult(
                due.id, DeliveryStatus.FAILED, code=result.code, reply=result.reply,
                reason=f"gave up after {attempts} attempts over {self.lifetime}",
                message_id=message_id,
            )  # fmt: skip
        delay = backoff(attempts, base=self.base, jitter=self.rng.uniform(*JITTER))
        return DeliveryResult(
            due.id, DeliveryStatus.DEFERRED, code=result.code, reply=result.reply,
            message_id=message_id, next_attempt_at=now + delay,
        )  # fmt: skip


def put_back(outcome: DeliveryResult, reason: str) -> DeliveryResult:
    """The delivery goes back to the queue: no failure, no suppression, attempted again."""
    return DeliveryResult(
        outcome.delivery_id, DeliveryStatus.QUEUED, code=outcome.code, reply=outcome.reply,
        reason=f"put back: {reason}"[:1000], message_id=outcome.message_id,
    )  # fmt: skip


def policy_refusal(result: Result, resume: str) -> str | None:
    """The reason to pause at once when the relay refuses our sending (5.7.x: policy,
    authentication, reputation), never the recipient's fault; None for any other reply."""
    if not result.policy:
        return None
    return (
        f"the relay refused a message for a policy reason ({result.code} {result.reply}): "
        f"check the relay, the sender address (SPF, DKIM) and this machine's reputation, "
        f"then {resume}; nobody was failed or suppressed for it"
    )


def is_permanent_refusal(result: Result) -> bool:
    """A refusal the relay gave as a reply (a 5xx): what :class:`RejectWatch` counts."""
    return result.outcome == Outcome.FAILED and result.code is not None


def resume_hint(spec: SendSpec) -> str:
    """How staff resume a paused send: with the daemon, or in the foreground."""
    return (
        f"resume it with `mailer campaign resume {spec.content.name}` (the daemon sends it) "
        f"or `mailer send run {spec.id}`"
    )


class FailureStreak:
    """Consecutive failures; the threshold pauses the send instead of burning the list."""

    __slots__ = ("count", "threshold")

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.count = 0

    def add(self, outcome: DeliveryResult) -> str | None:
        """Count one outcome; the reason to pause once the streak reaches the threshold."""
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


class RejectWatch:
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


def too_late(spec: SendSpec, now: datetime) -> bool:
    """A reminder is never sent once its event has started (before or during its pass)."""
    return spec.action == SendAction.REMINDER and spec.event is not None and now >= spec.event.start


def grace_of(action: SendAction, *, grace: timedelta, newsletter_grace: timedelta) -> timedelta:
    """How late a send may start: a newsletter issue has its own grace, the others (an
    announcement, a reminder, whose event start :func:`too_late` judges) the misfire grace."""
    return newsletter_grace if action == SendAction.NEWSLETTER else grace


def past_grace(
    spec: SendSpec, now: datetime, *, grace: timedelta, newsletter_grace: timedelta
) -> timedelta | None:
    """The grace a send due at ``spec.due_at`` is past at ``now`` (it is missed, not sent
    late), or None while it may still go."""
    allowed = grace_of(spec.action, grace=grace, newsletter_grace=newsletter_grace)
    return allowed if now - spec.due_at > allowed else None


__all__ = [
    "JITTER",
    "MAX_BACKOFF",
    "FailureStreak",
    "RejectWatch",
    "Retries",
    "backoff",
    "grace_of",
    "is_permanent_refusal",
    "past_grace",
    "policy_refusal",
    "put_back",
    "resume_hint",
    "too_late",
]

"""The sending rules of ``mailer.dispatch.policy``, pure: each is handed the time and what it
judges, so each rule is pinned here without a database, a relay or a clock."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from mailer.dispatch.policy import (
    MAX_BACKOFF,
    FailureStreak,
    RejectWatch,
    Retries,
    backoff,
    is_permanent_refusal,
    past_grace,
    policy_refusal,
    put_back,
    too_late,
)
from mailer.models import (
    Content,
    DeliveryResult,
    DeliveryStatus,
    Due,
    EventInfo,
    Recipient,
    SendAction,
    SendSpec,
    SendStatus,
)
from mailer.transport import classify_reply

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
GRACES = {"grace": HOUR, "newsletter_grace": 6 * HOUR}


def due(*, attempts: int = 0, age: timedelta = timedelta(0)) -> Due:
    recipient = Recipient(id=7, email="Person@Example.org")
    return Due(7, attempts, 1, NOW - age, recipient, None)


def spec(
    action: SendAction, *, due_at: datetime = NOW, event_start: datetime | None = None
) -> SendSpec:
    event = None
    if event_start is not None:
        event = EventInfo(uid="e", title="Séminaire", start=event_start, end=None, timezone="UTC")
    return SendSpec(
        id=3, campaign_id=2, key="k", action=action, status=SendStatus.SCHEDULED, due_at=due_at,
        content=Content(name="actualites", kind="announcement", subject="S", body="B"),
        lists=[], event=event, sender_name=None, sender_address=None, reason=None,
    )  # fmt: skip


def retries(seed: int = 1) -> Retries:
    return Retries(base=60.0, lifetime=timedelta(days=3), rng=random.Random(seed))


# --- backoff ----------------------------------------------------------------------------------


def test_the_backoff_doubles_from_the_base_at_each_attempt() -> None:
    """60 s after the first attempt, then 120 s, 240 s: doubled each time (jitter 1)."""
    waits = [backoff(n, base=60.0, jitter=1.0) for n in (1, 2, 3)]
    assert waits == [timedelta(seconds=60), timedelta(seconds=120), timedelta(seconds=240)]


def test_the_backoff_never_passes_six_hours_before_the_jitter() -> None:
    """However many attempts, the wait stops growing at MAX_BACKOFF (six hours)."""
    assert backoff(30, base=60.0, jitter=1.0) == timedelta(hours=6) == MAX_BACKOFF
    assert backoff(30, base=60.0, jitter=1.2) == timedelta(hours=6) * 1.2


def test_a_deferral_waits_the_backoff_give_or_take_a_fifth() -> None:
    """The next attempt of a delivery tried twice is 240 s away, times 0.8 to 1.2."""
    reply = classify_reply(450, "4.2.0 mailbox busy")
    for seed in range(50):
        outcome = retries(seed).fate(due(attempts=2), reply, message_id="<m>", now=NOW)
        assert outcome.status == DeliveryStatus.DEFERRED
        assert outcome.next_attempt_at is not None
        wait = (outcome.next_attempt_at - NOW).total_seconds()
        assert 0.8 * 240 <= wait <= 1.2 * 240


# --- a delivery's fate after a reply ----------------------------------------------------------


def test_a_250_is_sent_with_its_message_id() -> None:
    """The relay accepted the message: sent, with the reply and the Message-ID."""
    outcome = retries().fate(due(), classify_reply(250, "2.0.0 OK"), message_id="<m>", now=NOW)
    assert outcome == DeliveryResult(
        7, DeliveryStatus.SENT, code=250, reply="2.0.0 OK", message_id="<m>"
    )


def test_a_4xx_is_deferred_until_the_retry_lifetime_then_given_up() -> None:
    """A temporary refusal defers the delivery; one older than the lifetime fails for good."""
    reply = classify_reply(451, "4.3.0 try later")
    young = retries().fate(due(age=timedelta(days=2)), reply, message_id=None, now=NOW)
    assert young.status == DeliveryStatus.DEFERRED
    old = retries().fate(due(attempts=9, age=timedelta(days=3)), reply, message_id=None, now=NOW)
    assert old.status == DeliveryStatus.FAILED
    assert old.reason == "gave up after 10 attempts over 3 days, 0:00:00"
    assert old.next_attempt_at is None


def test_a_5xx_fails_without_a_suppression() -> None:
    """A permanent refusal that does not say the mailbox is missing fails the delivery and
    leaves the address usable; it counts as a permanent refusal for the reject watch."""
    reply = classify_reply(554, "5.6.0 message refused")
    outcome = retries().fate(due(), reply, message_id="<m>", now=NOW)
    assert (outcome.status, outcome.suppress_key) == (DeliveryStatus.FAILED, None)
    assert is_permanent_refusal(reply)
    assert policy_refusal(reply, "resume it") is None


def test_a_5_1_x_fails_and_suppresses_the_address() -> None:
    """No such mailbox: failed, and the address (its key, lowercased) is suppressed."""
    reply = classify_reply(550, "5.1.1 user unknown")
    outcome = retries().fate(due(), reply, message_id="<m>", now=NOW)
    assert (outcome.status, outcome.suppress_key) == (DeliveryStatus.FAILED, "person@example.org")


def test_a_5_7_x_refuses_our_sending_the_delivery_goes_back() -> None:
    """5.7.x at DATA refuses our sending, not the recipient: the send pauses with a reason
    naming the reply and how to resume, and the delivery is put back in the queue."""
    reply = classify_reply(550, "5.7.1 sender blocked", stage="DATA")
    reason = policy_refusal(reply, "resume it with `mailer send run 3`")
    assert reason is not None
    assert "policy reason (550 5.7.1 sender blocked)" in reason
    assert reason.endswith(
        "then resume it with `mailer send run 3`; nobody was failed or suppressed for it"
    )
    back = put_back(retries().fate(due(), reply, message_id="<m>", now=NOW), reason)
    assert (back.status, back.suppress_key, back.message_id) == (DeliveryStatus.QUEUED, None, "<m>")
    assert back.reason == f"put back: {reason}"[:1000]


# --- pauses -----------------------------------------------------------------------------------


def test_the_failure_streak_pauses_at_the_threshold_and_a_success_resets_it() -> None:
    """Three failures or deferrals in a row pause with the last reply; a sent message starts
    the count again; a skipped one neither counts nor resets."""
    streak = FailureStreak(3)
    failed = DeliveryResult(1, DeliveryStatus.FAILED, code=554, reply="no")
    deferred = DeliveryResult(2, DeliveryStatus.DEFERRED, code=451, reply="later")
    sent = DeliveryResult(3, DeliveryStatus.SENT, code=250, reply="ok")
    skipped = DeliveryResult(4, DeliveryStatus.SKIPPED, reason="unsubscribed")
    assert [streak.add(o) for o in (failed, deferred, sent, failed, skipped, deferred)] == [
        None
    ] * 6
    assert streak.add(failed) == "3 messages in a row were not accepted; last reply: 554 no"


def test_the_reject_watch_holds_refusals_then_puts_them_back_once_tripped() -> None:
    """Ten permanent refusals among the first attempts: none is recorded failed, all go back
    to the queue, and the reason says it is the relay."""
    watch = RejectWatch("resume it")
    out: list[DeliveryResult] = []
    for n in range(10):
        refused = DeliveryResult(n, DeliveryStatus.FAILED, code=550, reply="5.1.1 no such user")
        out += watch.add(refused, permanent=True)
    assert watch.tripped is not None
    assert watch.tripped.startswith("10 of the first 10 recipients were refused permanently")
    assert [o.status for o in out] == [DeliveryStatus.QUEUED] * 10


# --- too late, past grace ---------------------------------------------------------------------


def test_a_reminder_is_too_late_once_its_event_started() -> None:
    """At and after the event's start a reminder is too late; before it, or for another
    action, it is not."""
    assert too_late(spec(SendAction.REMINDER, event_start=NOW), NOW)
    assert not too_late(spec(SendAction.REMINDER, event_start=NOW + HOUR), NOW)
    assert not too_late(spec(SendAction.ANNOUNCEMENT, event_start=NOW - HOUR), NOW)


@pytest.mark.parametrize(
    ("action", "late", "past"),
    [
        (SendAction.ANNOUNCEMENT, HOUR, None),
        (SendAction.ANNOUNCEMENT, HOUR + timedelta(seconds=1), HOUR),
        (SendAction.REMINDER, HOUR + timedelta(seconds=1), HOUR),
        (SendAction.NEWSLETTER, 2 * HOUR, None),
        (SendAction.NEWSLETTER, 6 * HOUR + timedelta(seconds=1), 6 * HOUR),
    ],
)
def test_a_send_past_its_grace_is_missed(
    action: SendAction, late: timedelta, past: timedelta | None
) -> None:
    """A newsletter issue has its own grace (6 h here), the others the misfire grace (1 h);
    a send exactly at its grace may still go."""
    assert past_grace(spec(action, due_at=NOW - late), NOW, **GRACES) == past

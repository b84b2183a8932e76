"""Bounces taken in (``mailer.intake``) and stored (``storage/bounces.py``): tied to their
delivery by the return path, the Message-ID or the send and address; stored once; counted
against the address with decay; suppressions that can be lifted; complaints unsubscribe from
every list; policy bounces in numbers pause the send. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest

from mailer.intake import Intake
from mailer.lifecycle import SendMove
from mailer.models import BounceAction, DeliveryStatus
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import Signer, return_path
from tests.conftest import make_settings
from tests.console_support import now
from tests.test_bounces_parse import arf, block, dsn
from tests.test_console_sends import a_list, a_send, record, start

pytestmark = pytest.mark.timeout(60)
DOMAIN = "bounces.example.org"
SIGNER = Signer(["bounce-test-key-0123456789abcdef"])


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.at = now()

    def __call__(self) -> datetime:
        return self.at


async def sent(store: Store, tmp_path: Path, count: int = 3) -> tuple[int, list[int]]:
    """A send to ``count`` people, every delivery sent; its id and the delivery ids."""
    await a_list(store, tmp_path, count)
    send_id = await a_send(store, "annonce")
    await start(store, send_id)
    await record(store, send_id, *[DeliveryStatus.SENT] * count)
    ids = [line.delivery_id for line in await delivery_lines(store, send_id)]
    return send_id, ids


class Line(NamedTuple):
    delivery_id: int
    email: str
    status: str
    reason: str | None


async def delivery_lines(store: Store, send_id: int) -> list[Line]:
    """A send's deliveries by id (the tests' Message-IDs are ``<delivery id@test>``)."""
    lines = [
        Line(int((row.message_id or "<0@").strip("<>").split("@")[0]), row.email, row.status,
             row.reason)
        async for row in store.figures.report(send_id)
    ]  # fmt: skip
    return sorted(lines)


def settings_for(tmp_path: Path, database_url: str, **bounces: object) -> Settings:
    return make_settings(
        tmp_path, database={"url": database_url}, bounces={"domain": DOMAIN, **bounces}
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def intake(store: Store, tmp_path: Path, database_url: str, clock: Clock) -> Intake:
    return Intake(store, settings_for(tmp_path, database_url), clock=clock, signer=SIGNER)


def hard(to: str, recipient: str, *, returned: str = "", head: str = "") -> bytes:
    raw = dsn(
        block(recipient, "failed", "5.1.1", "550 5.1.1 user unknown"),
        returned=returned, head=head,
    )  # fmt: skip
    return raw.replace(b"To: b+d42.sig@bounces.example.org", f"To: {to}".encode())


async def suppressed(store: Store, email: str) -> bool:
    return (await store.subscribers.show(email)).suppression is not None


async def test_a_hard_bounce_to_a_return_path_marks_the_delivery_and_suppresses_once(
    store: Store, tmp_path: Path, intake: Intake
) -> None:
    send_id, ids = await sent(store, tmp_path)
    raw = hard(return_path(SIGNER, ids[0], DOMAIN), "someone-else@forward.example")
    outcome = await intake.message(raw, source="smtp")
    assert not outcome.duplicate
    (note,) = outcome.notes
    assert (note.recipient, note.action, note.delivery_id) == (
        "person0@example.org",
        BounceAction.SUPPRESSED,
        ids[0],
    )
    lines = await delivery_lines(store, send_id)
    assert [line.status for line in lines] == ["bounced", "sent", "sent"]
    assert "5.1.1" in (lines[0].reason or "")
    assert await suppressed(store, "person0@example.org")
    again = await intake.message(raw, source="imap")  # the same DSN by another way in
    assert again.duplicate
    assert again.bounce_id == outcome.bounce_id
    assert (await store.bounces.counts(send_id)) == {"hard": 1}


async def test_a_forged_return_path_is_kept_and_changes_nothing(
    store: Store, tmp_path: Path, intake: Intake
) -> None:
    send_id, ids = await sent(store, tmp_path)
    good = return_path(SIGNER, ids[0], DOMAIN)
    forged = good[: -len(DOMAIN) - 2] + ("a" if good[-len(DOMAIN) - 2] != "a" else "b")
    forged += "@" + DOMAIN
    outcome = await intake.message(
        hard(forged, "person0@example.org", returned=f"Message-ID: <{ids[0]}@test>\n"),
        source="smtp",
    )
    assert [n.action for n in outcome.notes] == [BounceAction.UNMATCHED]
    assert not await suppressed(store, "person0@example.org")
    assert [line.status for line in await delivery_lines(store, send_id)] == ["sent"] * 3


async def test_without_a_return_path_the_message_id_or_the_send_ties_the_bounce(
    store: Store, tmp_path: Path, intake: Intake
) -> None:
    send_id, ids = await sent(store, tmp_path)
    by_id = await intake.message(
        hard("news@example.org", "person1@example.org", returned=f"Message-ID: <{ids[1]}@test>\n"),
        source="imap",
    )
    assert [(n.delivery_id, n.action) for n in by_id.notes] == [(ids[1], BounceAction.SUPPRESSED)]
    campaign_id = (await store.sends.spec(send_id)).campaign_id
    by_trace = await intake.message(
        hard(
            "news@example.org", "person2@example.org",
            returned=f"X-Mailer-Send: c{campaign_id}/announce\n",
        ),
        source="imap",
    )  # fmt: skip
    assert [(n.delivery_id, n.action) for n in by_trace.notes] == [
        (ids[2], BounceAction.SUPPRESSED)
    ]
    untied = await intake.message(
        hard("news@example.org", "person0@example.org", returned="Message-ID: <x@elsewhere>\n"),
        source="imap",
    )
    assert [n.action for n in untied.notes] == [BounceAction.UNMATCHED]
    assert not await suppressed(store, "person0@example.org")


def soft(to: str, day: int) -> bytes:
    return dsn(
        block("person0@example.org", "failed", "4.2.2", "452 4.2.2 mailbox full"),
        head=f"Message-ID: <soft-{day}@mx.example.net>\n",
    ).replace(b"To: b+d42.sig@bounces.example.org", f"To: {to}".encode())


async def test_soft_bounces_suppress_on_the_third_day_and_stale_ones_are_forgotten(
    store: Store, tmp_path: Path, intake: Intake, clock: Clock
) -> None:
    _, ids = await sent(store, tmp_path)
    to = return_path(SIGNER, ids[0], DOMAIN)
    # 10:00 UTC the next day: from a start after 23:00, day 5 (an hour after day 4) fell on
    # the next UTC date, and the run failed between 23:00 and midnight UTC
    start_at = (clock.at + timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)
    actions = []
    for day, hours in ((1, 0), (2, 1), (3, 24 * 40), (4, 24 * 41), (5, 24 * 41 + 1)):
        clock.at = start_at + timedelta(hours=hours)
        actions.append((await intake.message(soft(to, day), source="smtp")).notes[0].action)
    # days 1 and 2 may share a UTC date; day 3 comes 40 days later (1 and 2 forgotten); day 4
    # is the next day; day 5 the same day as 4: two days in the window, under the limit
    assert BounceAction.SUPPRESSED not in actions
    clock.at = start_at + timedelta(days=42)
    last = await intake.message(soft(to, 6), source="smtp")
    assert last.notes[0].action is BounceAction.SUPPRESSED
    shown = await store.subscribers.show("person0@example.org")
    assert shown.suppression is not None


async def test_a_lifted_bounce_suppression_lets_the_address_be_mailed_and_counted_again(
    store: Store, tmp_path: Path, intake: Intake
) -> None:
    _, ids = await sent(store, tmp_path)
    await intake.message(hard(return_path(SIGNER, ids[0], DOMAIN), "x@y.example"), source="smtp")
    assert await suppressed(store, "person0@example.org")
    reason = await store.subscribers.unsuppress(
        "person0@example.org", why="the mailbox exists again", actor="staff", now=now()
    )
    assert reason == "hard_bounce"
    assert not await suppressed(store, "person0@example.org")


async def test_a_complaint_suppresses_and_unsubscribes_from_every_list(
    store: Store, tmp_path: Path, intake: Intake
) -> None:
    _, ids = await sent(store, tmp_path)
    await a_list(store, tmp_path, 1, slug="patients")  # person0 on a second list
    raw = arf(
        "Feedback-Type: abuse\nUser-Agent: fbl/1.0\nVersion: 1\n",
        f"From: news@example.org\nTo: person0@example.org\nMessage-ID: <{ids[0]}@test>\n",
    )
    outcome = await intake.message(raw, source="imap")
    assert [n.action for n in outcome.notes] == [BounceAction.UNSUBSCRIBED]
    shown = await store.subscribers.show("person0@example.org")
    assert shown.suppression is not None
    assert {status for _, status, _ in shown.subscriptions} == {"unsubscribed"}
    assert len(shown.subscriptions) == 2


async def test_policy_bounces_never_count_against_the_address_and_pause_the_send(
    store: Store, tmp_path: Path, database_url: str, clock: Clock
) -> None:
    intake = Intake(
        store, settings_for(tmp_path, database_url, policy_pause_min=2), clock=clock,
        signer=SIGNER,
    )  # fmt: skip
    await a_list(store, tmp_path, 4)
    send_id = await a_send(store, "annonce")
    await start(store, send_id)
    await record(store, send_id, *[DeliveryStatus.SENT] * 3)  # one still queued: running
    lines = await delivery_lines(store, send_id)
    ids = [line.delivery_id for line in lines if line.status == "sent"]
    for i, delivery_id in enumerate(ids[:2]):
        raw = dsn(
            block(f"person{i}@example.org", "failed", "5.7.1", "550 5.7.1 blocked by policy"),
            head=f"Message-ID: <policy-{i}@mx>\n",
        )
        raw = raw.replace(
            b"b+d42.sig@" + DOMAIN.encode(), return_path(SIGNER, delivery_id, DOMAIN).encode()
        )
        outcome = await intake.message(raw, source="smtp")
        assert [n.action for n in outcome.notes] == [BounceAction.POLICY]
    assert not await suppressed(store, "person0@example.org")
    line = await store.overview.send(send_id)
    assert line.status == "paused"
    assert "policy" in (line.reason or "")
    assert await store.sends.move(send_id, SendMove.RESUME, now=now())

"""The stages of ``mailer.dispatch.send_pass`` alone: the halt every stage reads, the duplicate
window, fencing on leases, and the recorder's group commits on a real database."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mailer.dispatch import Engine
from mailer.dispatch.feed import Feed
from mailer.dispatch.policy import Retries
from mailer.dispatch.send_pass import DuplicateWindow, Halt, Missed, Paused, SendPass
from mailer.message import Built
from mailer.models import DeliveryResult, DeliveryStatus, Due, Recipient
from mailer.storage import Store
from mailer.transport import Result, SmtpTransport
from tests.conftest import make_settings
from tests.smtpd import SmtpServer
from tests.test_dispatch import NOW, prepare, settings_for

pytestmark = pytest.mark.timeout(60)


async def a_pass(
    store: Store, tmp_path: Path, send_id: int, *, clock: list[datetime], **delivery: float
) -> tuple[SendPass, list[dict[str, int]]]:
    """A pass over ``send_id`` whose clock reads ``clock[0]``; the progress it reports."""
    settings = make_settings(tmp_path, delivery=delivery)
    spec = await store.sends.spec(send_id)
    reported: list[dict[str, int]] = []
    send_pass = SendPass(
        spec, Feed({}, clock=lambda: clock[0], send_id=send_id), settings=settings, store=store,
        transport=SmtpTransport(settings.smtp), node="test", clock=lambda: clock[0],
        retries=Retries(base=1.0, lifetime=timedelta(days=1), rng=random.Random(1)),
        stop=asyncio.Event(), on_progress=reported.append,
    )  # fmt: skip
    return send_pass, reported


def test_the_first_reason_to_pause_wins_and_a_pause_outranks_a_missed_event() -> None:
    """Several stages may find a reason to stop; the send pauses with the first one, and a
    pause is raised rather than the event's start."""
    halt = Halt(asyncio.Event())
    assert not halt.stopping()
    halt.missed = "the event started during the send"
    assert not halt.stopping(), "the messages in hand still go when the event started"
    halt.pause("535 authentication failed")
    halt.pause("results cannot be recorded")
    assert halt.stopping()
    with pytest.raises(Paused, match=r"^535 authentication failed$"):
        halt.raise_for_send()


def test_a_missed_event_ends_the_send_and_a_stop_raises_nothing() -> None:
    """The event's start alone ends the send as missed; SIGTERM (the stop event), staff and
    fencing stop the pass and leave the send running."""
    halt = Halt(asyncio.Event())
    halt.missed = "the event started during the send"
    with pytest.raises(Missed):
        halt.raise_for_send()
    for stopped in ("stop", "by_staff", "fenced"):
        halt = Halt(asyncio.Event())
        if stopped == "stop":
            halt.stop.set()
        else:
            setattr(halt, stopped, True)
        assert halt.stopping()
        halt.raise_for_send()


async def test_the_duplicate_window_frees_a_slot_only_for_a_message_sent() -> None:
    """A lane waits when every slot holds a message not yet recorded; giving back a delivery
    the window does not hold frees nothing, the one it holds frees its slot."""
    window = DuplicateWindow(2)
    for delivery_id in (1, 2):
        await window.take()
        window.sent(delivery_id)
    third = asyncio.ensure_future(window.take())
    await asyncio.sleep(0.01)
    window.give_back(3)
    await asyncio.sleep(0.01)
    assert not third.done()
    window.give_back(1)
    window.give_back(1)  # twice: still one slot
    await asyncio.wait_for(third, 1)
    assert window.held == {2}
    assert window.locked()


async def test_fencing_stops_a_node_whose_lease_is_about_to_run_out(
    store: Store, tmp_path: Path
) -> None:
    """A delivery goes while its lease has more than the margin left (5 s of a 30 s lease);
    past that the node sends nothing more, and the whole pass stops; a renewed lease counts."""
    send_id = await prepare(store, tmp_path, 1)
    clock = [NOW]
    send_pass, _ = await a_pass(store, tmp_path, send_id, clock=clock, lease=30.0)
    leased = Due(1, 0, 1, NOW, Recipient(id=1, email="a@example.org"), None,
                 NOW + timedelta(seconds=10))  # fmt: skip
    clock[0] = NOW + timedelta(seconds=4.9)
    assert send_pass.lease_left(leased)
    clock[0] = NOW + timedelta(seconds=5)
    assert not send_pass.lease_left(leased)
    assert send_pass.halt.fenced
    assert send_pass.halt.stopping()
    send_pass.renewed[leased.id] = NOW + timedelta(seconds=60)
    assert send_pass.lease_left(leased)


async def test_the_recorder_commits_in_groups_of_record_batch(store: Store, tmp_path: Path) -> None:
    """25 results with ``record_batch`` 10: three commits (10, 20, then the last 5 at the
    end-of-queue marker), each reported after it landed, all in the database."""
    send_id = await prepare(store, tmp_path, 25)
    spec = await store.sends.spec(send_id)
    assert await store.sends.start(spec, node="test", now=NOW)
    due = await store.deliveries.due(send_id, after=0, limit=100, now=NOW)
    clock = [datetime.now(UTC)]
    send_pass, reported = await a_pass(store, tmp_path, send_id, clock=clock, record_batch=10)
    for delivery in due:
        send_pass.results.put_nowait(
            DeliveryResult(delivery.id, DeliveryStatus.SENT, code=250, reply="OK")
        )
    send_pass.results.put_nowait(None)
    await send_pass.record()
    assert reported == [{"sent": 10}, {"sent": 20}, {"sent": 25}]
    assert (await store.figures.counts(send_id)).sent == 25


class _BreaksAt:
    """A transport that raises an unexpected exception (a bug, not a reply) on message ``at``."""

    def __init__(self, inner: SmtpTransport, at: int) -> None:
        self.inner, self.at, self.count = inner, at, 0
        self.eight_bit, self.smtputf8 = inner.eight_bit, inner.smtputf8

    async def __aenter__(self) -> _BreaksAt:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def send(self, message: Built) -> Result:
        self.count += 1
        if self.count == self.at:
            raise OSError("a bug in a lane")
        return await self.inner.send(message)


@pytest.mark.timeout(30)
async def test_a_lane_that_dies_of_a_bug_ends_the_pass_instead_of_hanging_it(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> None:
    """With one lane and a full outbox, a lane killed by an unexpected exception used to leave
    the producer waiting forever to queue its end marker: the send hung, leases held. Now the
    pass ends with the error, what was sent is recorded, the rest stays queued for a resume."""
    send_id = await prepare(store, tmp_path, 60)
    settings = settings_for(tmp_path, database_url, smtp_server, render_workers=0)
    settings = settings.model_copy(
        update={"smtp": settings.smtp.model_copy(update={"pool_size": 1})}
    )
    async with SmtpTransport(settings.smtp, reconnect_delay=0.05) as inner:
        engine = Engine(settings, store, _BreaksAt(inner, 5), node="test")
        with pytest.raises(BaseException) as raised:  # noqa: PT011 - the bug's own exception
            await engine.run_send(send_id)
    assert (
        raised.group_contains(OSError)
        if isinstance(raised.value, BaseExceptionGroup)
        else (isinstance(raised.value, OSError))
    )
    counts = await store.figures.counts(send_id)
    assert counts["sent"] == 4
    assert counts["queued"] == 56
    sent = [r.email async for r in store.figures.report(send_id) if r.status == "sent"]
    assert sorted(smtp_server.recipients()) == sorted(sent)
    holders = await store.figures.holders(send_id, now=datetime.now(UTC))
    assert [leased for _node, leased, _rate in holders] in ([], [0]), "leases given back"

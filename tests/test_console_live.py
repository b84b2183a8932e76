"""The console's live progress readings (``web/console/live.py``): a cheap count is made at
every look; a costly one is answered from the last reading while the next is made."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mailer.lifecycle import SendMove
from mailer.models import DeliveryStatus
from mailer.storage import Store
from mailer.web.console.live import LiveProgress
from tests.console_support import now
from tests.test_console_sends import a_list, a_send, record, start

pytestmark = pytest.mark.timeout(60)


async def test_a_cheap_count_is_exact_at_every_look(store: Store, tmp_path: Path) -> None:
    await a_list(store, tmp_path, 4)
    send_id = await a_send(store, "annonce")
    await start(store, send_id)
    # Every reading counts as cheap: how long 4 deliveries take to count on a loaded machine
    # (over CHEAP on a busy PostgreSQL in CI) is not what this test is about.
    live = LiveProgress(store, now, cheap=float("inf"))
    line = await store.overview.send(send_id)
    assert (await live.of(line)).counts.queued == 4
    await record(store, send_id, DeliveryStatus.SENT)
    assert (await live.of(line)).counts.sent == 1


async def test_a_costly_count_answers_from_memory_and_refreshes_behind(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await a_list(store, tmp_path, 4)
    send_id = await a_send(store, "annonce")
    await start(store, send_id)
    live = LiveProgress(store, now, cheap=0.0)  # every count counts as costly
    monkeypatch.setattr("mailer.web.console.live.FRESH", 3600.0)  # no stall makes it stale
    line = await store.overview.send(send_id)
    first = await live.of(line)
    assert first.counts.queued == 4
    await record(store, send_id, DeliveryStatus.SENT, DeliveryStatus.FAILED)
    again = await live.of(line)  # within FRESH: the same reading, no new count
    assert again.counts == first.counts
    assert not live._refreshing
    monkeypatch.setattr("mailer.web.console.live.FRESH", 0.0)
    stale = await live.of(line)  # older than FRESH: answered at once, counted behind
    assert stale.counts == first.counts
    assert live._refreshing
    await asyncio.gather(*live._refreshing.values())
    fresh = await live.of(line)
    assert (fresh.counts.sent, fresh.counts.failed, fresh.counts.queued) == (1, 1, 2)
    await live.close()


async def test_the_status_is_always_the_sends_own(store: Store, tmp_path: Path) -> None:
    await a_list(store, tmp_path, 2)
    send_id = await a_send(store, "annonce")
    await start(store, send_id)
    live = LiveProgress(store, now, cheap=0.0)
    await live.of(await store.overview.send(send_id))
    assert await store.sends.move(send_id, SendMove.PAUSE, reason="paused by staff", now=now())
    paused = await live.of(await store.overview.send(send_id))
    assert (paused.status, paused.reason) == ("paused", "paused by staff")
    assert paused.eta is None
    await live.close()


async def test_a_reading_begun_before_a_change_is_not_kept() -> None:
    """forget() during a slow reading: that reading answers its caller but is not kept."""
    from mailer.web.console.live import Readings

    readings = Readings(cheap=0.0)
    gate = asyncio.Event()
    values = iter([1, 2])

    async def read() -> int:
        await gate.wait()
        return next(values)

    first = asyncio.create_task(readings.get("k", read, fresh=60))
    await asyncio.sleep(0)
    readings.forget()  # a change lands while the first reading runs
    gate.set()
    assert await first == 1
    assert await readings.get("k", read, fresh=60) == 2  # read again, not the stale 1

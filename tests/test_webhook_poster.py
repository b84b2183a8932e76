"""The daemon's poster against a real receiver (uvicorn, tests/webhook_support.py), on SQLite
and PostgreSQL: every event arrives signed (checked by ``standardwebhooks``); a receiver down
for an hour of simulated time gets everything afterwards; an endpoint failing for
``disable_after`` is disabled with one alert and ``enable`` delivers what it missed; 410
disables at once; a private URL (or one that rebinds to a private address) is refused as a
failed attempt; a redirect is not followed; a slow receiver times out and is retried; the
warnings are held to one a minute per endpoint and no secret reaches the logs; two posters on
PostgreSQL deliver each event once per endpoint."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mailer import __version__
from mailer.models import DEFAULT_EVENTS, Endpoint, EventType, HookStatus
from mailer.outbox import Poster
from mailer.settings import Settings
from mailer.settings.api import WebhookSettings
from mailer.storage import Store, outbox
from tests.webhook_support import Receiver, SimClock, eventually, receiving

pytestmark = pytest.mark.timeout(60)


def real() -> datetime:
    return datetime.now(UTC)


def hooks(**values: Any) -> WebhookSettings:
    return WebhookSettings.model_validate({"allow_private": True, "timeout": 5.0, **values})


def poster(store: Store, settings: WebhookSettings, clock: Any, **kw: Any) -> Poster:
    options: dict[str, Any] = {"interval": 0.05, "rand": lambda: 0.5, **kw}
    return Poster(store, settings, node=options.pop("node", "test:1"), clock=clock, **options)


async def endpoint(
    store: Store, receiver: Receiver, path: str, clock: Any, url: str | None = None
) -> Endpoint:
    added = await store.webhooks.add(
        url=url or receiver.url + path, events=DEFAULT_EVENTS, description="test",
        actor="cli:test", now=clock(),
    )  # fmt: skip
    receiver.secrets[path] = added.secret
    return added


async def emit(store: Store, count: int, at: datetime, start: int = 0) -> None:
    async with store.db.begin(write=True) as conn:
        events = [
            (EventType.CONFIRMED, {"n": i, "email": f"m{i}@example.org"})
            for i in range(start, start + count)
        ]
        assert await outbox.emit(conn, events, now=at) == count


async def simulate(
    poster: Poster, clock: SimClock, *, hours: float, step: timedelta = timedelta(minutes=1)
) -> None:
    """``hours`` of simulated time, one round of the poster per ``step``."""
    end = clock() + timedelta(hours=hours)
    async with poster.opened():
        while clock() < end:
            clock.advance(step)
            await poster.round()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as running:
        yield running


async def test_every_event_arrives_once_signed_as_json(store: Store, receiver: Receiver) -> None:
    await endpoint(store, receiver, "/in", real)  # real time: the receiver checks its age too
    await emit(store, 20, datetime.now(UTC))
    running = asyncio.create_task(poster(store, hooks(), real).run())
    try:
        await receiver.wait_until(lambda: len(receiver.ids()) == 20)
        await emit(store, 5, datetime.now(UTC), start=20)  # picked up by the next poll
        await receiver.wait_until(lambda: len(receiver.ids()) == 25)
        await eventually(lambda: _pending_is(store, 0))
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert set(receiver.ids().values()) == {1}
    assert all(r.verified for r in receiver.requests)
    first = receiver.requests[0]
    assert first.headers["content-type"] == "application/json"
    assert first.headers["user-agent"] == f"mailer/{__version__}"
    assert first.event_id.startswith("msg_")
    lines = await store.webhooks.lines(limit=100)
    assert {line.status for line in lines} == {HookStatus.DELIVERED}
    assert {line.last_code for line in lines} == {200}


async def _pending_is(store: Store, count: int) -> bool:
    return await store.webhooks.pending() == count


async def test_a_receiver_down_for_an_hour_gets_everything_afterwards(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    clock = SimClock()
    async with receiving(strict_time=False) as receiver:
        added = await endpoint(store, receiver, "/in", clock)
        await receiver.down()
        await emit(store, 10, clock())
        sim = poster(store, hooks(), clock, monotonic=lambda: clock().timestamp())
        with caplog.at_level(logging.DEBUG):
            await simulate(sim, clock, hours=1)
            assert receiver.requests == []
            down = await store.webhooks.lines(limit=100)
            assert {line.status for line in down} == {HookStatus.PENDING}
            tried = sum(line.attempts for line in down)
            assert 10 * 6 <= tried <= 10 * 8  # 5 s, 15 s, 45 s... backing off: no hammering
            assert all("cannot connect" in (line.last_error or "") for line in down)
            await receiver.up()
            await simulate(sim, clock, hours=6, step=timedelta(minutes=5))
        assert await store.webhooks.pending() == 0
        assert sorted(receiver.ids().values()) == [1] * 10
        assert all(r.verified for r in receiver.requests)
        assert (await store.webhooks.get(added.id)).active
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert 0 < len(warned) < tried / 4  # one line a minute, the rest counted in it
        assert any("more failed attempts since the last line" in r.getMessage() for r in warned)
        assert added.secret not in caplog.text
        assert added.secret.removeprefix("whsec_") not in caplog.text


async def test_a_failing_endpoint_is_disabled_with_one_alert_and_enable_delivers_what_it_missed(
    store: Store, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.strict_time = False
    clock = SimClock()
    failing = await endpoint(store, receiver, "/fail", clock)
    healthy = await endpoint(store, receiver, "/ok", clock)
    receiver.answer("/fail", 500)
    await emit(store, 3, clock())
    sim = poster(store, hooks(disable_after=1.0), clock)
    with caplog.at_level(logging.INFO):
        await simulate(sim, clock, hours=3, step=timedelta(minutes=5))
    assert not (await store.webhooks.get(failing.id)).active
    assert (await store.webhooks.get(healthy.id)).active
    alerts = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(alerts) == 1, [r.getMessage() for r in alerts]
    assert f"webhook endpoint {failing.id} " in alerts[0].getMessage()
    assert f"mailer webhooks enable {failing.id}" in alerts[0].getMessage()
    assert failing.secret not in caplog.text
    assert sorted(receiver.ids("/ok").values()) == [1, 1, 1]
    tried = len(receiver.requests)
    await simulate(sim, clock, hours=1, step=timedelta(minutes=10))
    assert len(receiver.requests) == tried  # disabled: nothing more posted to it
    receiver.answer("/fail", 204)
    await store.webhooks.set_enabled(failing.id, True, actor="cli:test", now=clock())
    assert await sim.round() == 3
    assert set(receiver.ids("/fail")) == set(receiver.ids("/ok"))
    assert all(r.verified for r in receiver.requests)
    assert (await store.webhooks.get(failing.id)).failures == 0


async def test_410_gone_disables_the_endpoint_at_once_and_keeps_its_events(
    store: Store, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    clock = SimClock()
    gone = await endpoint(store, receiver, "/gone", clock)
    receiver.answer("/gone", 410)
    await emit(store, 2, clock())
    with caplog.at_level(logging.INFO):
        assert await poster(store, hooks(), clock).round() == 2
    found = await store.webhooks.get(gone.id)
    assert not found.active
    assert "410 Gone" in (found.disabled_reason or "")
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert await store.webhooks.pending() == 2


async def test_private_targets_are_refused_as_failed_attempts(
    store: Store, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    clock = SimClock()
    plain = await endpoint(store, receiver, "/plain", clock)
    loop = await endpoint(
        store, receiver, "/loop", clock, url=f"https://127.0.0.1:{receiver.port}/loop"
    )
    rebinding = await endpoint(
        store, receiver, "/rebind", clock, url=f"https://rebind.example.org:{receiver.port}/rebind"
    )
    answers: dict[str, list[str]] = {"rebind.example.org": ["93.184.215.14", "127.0.0.1"]}

    async def resolve(host: str) -> Sequence[str]:
        await asyncio.sleep(0)
        return [answers[host].pop(0)]  # public when checked, loopback when connecting

    await emit(store, 1, clock())
    with caplog.at_level(logging.DEBUG):
        made = await poster(store, hooks(allow_private=False), clock, resolve=resolve).round()
    assert made == 3
    assert receiver.requests == []
    errors = {line.endpoint_id: line.last_error or "" for line in await store.webhooks.lines()}
    assert "refused" in errors[plain.id]
    assert "https" in errors[plain.id]
    assert "refused" in errors[loop.id]
    assert "loopback" in errors[loop.id]
    assert "refused to connect to rebind.example.org" in errors[rebinding.id]
    assert "127.0.0.1 is a loopback" in errors[rebinding.id]
    assert await store.webhooks.pending() == 3  # failures, retried later: not a crash
    for added in (plain, loop, rebinding):
        assert added.secret not in caplog.text


async def test_a_redirect_is_not_followed(store: Store, receiver: Receiver) -> None:
    clock = SimClock()
    await endpoint(store, receiver, "/moved", clock)
    receiver.answer("/moved", 302, location=receiver.url + "/elsewhere?token=abc")
    await emit(store, 1, clock())
    await poster(store, hooks(), clock).round()
    assert [r.path for r in receiver.requests] == ["/moved"]
    (line,) = await store.webhooks.lines()
    assert line.status == HookStatus.PENDING
    assert line.last_code == 302
    assert "/elsewhere?... not followed" in (line.last_error or "")


async def test_a_slow_receiver_times_out_and_is_retried(store: Store, receiver: Receiver) -> None:
    clock = SimClock()
    await endpoint(store, receiver, "/slow", clock)
    receiver.answer("/slow", 200, delay=1.5)
    await emit(store, 1, clock())
    sim = poster(store, hooks(timeout=0.5), clock)
    await sim.round()
    (line,) = await store.webhooks.lines()
    assert line.status == HookStatus.PENDING
    assert line.last_error == "no answer within 0.5 s"
    receiver.answer("/slow", 200)
    clock.advance(timedelta(seconds=10))
    await sim.round()
    (line,) = await store.webhooks.lines()
    assert (line.status, line.attempts) == (HookStatus.DELIVERED, 2)
    assert list(receiver.ids("/slow").values()) == [2]  # the same webhook-id: a duplicate


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_two_posters_on_postgresql_deliver_each_event_once_per_endpoint(
    store: Store, app_settings: Settings, receiver: Receiver
) -> None:
    now = real
    for path in ("/a", "/b"):
        await endpoint(store, receiver, path, now)
    receiver.answer("/a", 200, delay=0.01)
    await emit(store, 150, now())
    async with Store.open(app_settings) as other:
        tasks = [
            asyncio.create_task(poster(store, hooks(), now, node="one:1").run()),
            asyncio.create_task(poster(other, hooks(), now, node="two:2").run()),
        ]
        try:
            await receiver.wait_until(lambda: len(receiver.requests) >= 300)
            await eventually(lambda: _pending_is(store, 0))
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    for path in ("/a", "/b"):
        counts = receiver.ids(path)
        assert len(counts) == 150
        assert set(counts.values()) == {1}, f"{path}: duplicates under SKIP LOCKED"
    assert all(r.verified for r in receiver.requests)


async def test_a_receivers_odd_retry_after_stops_nothing(store: Store, receiver: Receiver) -> None:
    """``Retry-After: ²`` passed str.isdigit and then failed int(): the poster's task died and
    no endpoint got anything more until a restart (from a review; the test failed before)."""
    clock = SimClock()
    await endpoint(store, receiver, "/odd", clock)
    await endpoint(store, receiver, "/ok", clock)
    receiver.answer("/odd", 503, retry_after="²")
    await emit(store, 2, clock())
    sim = poster(store, hooks(), clock)
    task = asyncio.create_task(sim.run())
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while not task.done():
            lines = await store.webhooks.lines()
            codes = {(line.url.rsplit("/", 1)[1], line.last_code) for line in lines}
            if codes == {("odd", 503), ("ok", 200)}:  # every attempt recorded
                break
            assert asyncio.get_running_loop().time() < deadline, codes
            await asyncio.sleep(0.05)
        assert not task.done(), task.exception()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

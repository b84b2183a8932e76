"""The daemon: jobs rebuilt from storage, misfires, pause/resume mid-send, event updates and
cancellations, and a real `mailer run` process stopped by SIGTERM mid-send and restarted."""

from __future__ import annotations

import asyncio
import email
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path
from typing import Any

import pytest
from icalendar import Calendar

from mailer.dispatch import Engine
from mailer.lists import import_file
from mailer.models import Content, EventInfo, EventStatus, SendStatus
from mailer.scheduler import Scheduler
from mailer.settings import Settings
from mailer.storage import Store
from mailer.transport import SmtpTransport
from tests.conftest import make_settings
from tests.smtpd import SmtpServer

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent


def now() -> datetime:
    return datetime.now(UTC)


async def members(store: Store, tmp_path: Path, count: int) -> None:
    path = tmp_path / "researchers.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name\n")
        handle.writelines(f"m{i}@example.org,Membre {i}\n" for i in range(count))
    assert (await import_file(store, path, now=now())).ok


async def campaign(
    store: Store, name: str, *, event: EventInfo | None = None, kind: str = "announcement"
) -> int:
    return await store.campaigns.save(
        Content(name=name, kind=kind, subject="" if event else "Nouvelles", body="Bonjour."),
        list_slugs=["researchers"], sender_name=None, sender_address=None, event=event,
        now=now(),
    )  # fmt: skip


@pytest.fixture
async def daemon(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> AsyncIterator[tuple[Store, SmtpServer, Scheduler, Settings]]:
    settings = make_settings(
        tmp_path,
        database={"url": database_url},
        smtp=smtp_server.settings().model_dump(),
        paths={"templates_dir": ROOT / "templates"},
        scheduler={"misfire_grace": 3600},
        secret_keys="daemon-key-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU",
    )
    await members(store, tmp_path, 40)
    async with SmtpTransport(settings.smtp) as transport:
        engine = Engine(settings, store, transport, node="test")
        async with Scheduler(engine, sync_interval=0.1, grace=3600) as scheduler:
            yield store, smtp_server, scheduler, settings


async def wait_for(condition: Any, seconds: float = 20) -> None:
    async with asyncio.timeout(seconds):
        while not await condition():  # noqa: ASYNC110 - polls the database: no event to await
            await asyncio.sleep(0.05)


async def status_of(store: Store, send_id: int) -> str:
    return (await store.sends.spec(send_id)).status


async def test_jobs_come_from_storage_and_new_campaigns_are_picked_up(
    daemon: tuple[Store, SmtpServer, Scheduler, Settings],
) -> None:
    """A send created while the daemon runs is found by the next sync and fires on time."""
    store, server, scheduler, _ = daemon
    campaign_id = await campaign(store, "later")
    send_id, _ = await store.sends.create(
        campaign_id, key="announce", action="announcement", due_at=now() + timedelta(seconds=1),
        now=now(),
    )  # fmt: skip
    await wait_for(lambda: _has_job(scheduler, send_id), 5)
    await wait_for(lambda: _is(store, send_id, SendStatus.DONE))
    assert sorted(server.recipients()) == sorted(f"m{i}@example.org" for i in range(40))
    spec = await store.sends.spec(send_id)
    started = (await store.sends.of_campaign(spec.campaign_id))[0].started_at
    assert started >= spec.due_at  # not before its time


async def _has_job(scheduler: Scheduler, send_id: int) -> bool:
    return scheduler._jobs.get_job(str(send_id)) is not None or send_id in scheduler._queued


async def _is(store: Store, send_id: int, status: str) -> bool:
    return await status_of(store, send_id) == status


async def test_missed_sends_past_their_grace_are_marked_not_sent(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> None:
    """Restarting 2 h late: an announcement due 2 h ago (grace 1 h) is missed; one due 30 min
    ago goes, and so does a newsletter issue due 2 h ago (its grace is 6 h)."""
    await members(store, tmp_path, 5)
    old = await store.sends.create(
        await campaign(store, "old"), key="announce", action="announcement",
        due_at=now() - timedelta(hours=2), now=now(),
    )  # fmt: skip
    recent = await store.sends.create(
        await campaign(store, "recent"), key="announce", action="announcement",
        due_at=now() - timedelta(minutes=30), now=now(),
    )  # fmt: skip
    newsletter = await store.sends.create(
        await campaign(store, "lettre", kind="newsletter"), key="issue:2026-11-25",
        action="newsletter", due_at=now() - timedelta(hours=2), now=now(),
    )  # fmt: skip
    settings = make_settings(
        tmp_path, database={"url": database_url}, smtp=smtp_server.settings().model_dump(),
        paths={"templates_dir": ROOT / "templates"}, secret_keys="daemon-key-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU",
    )  # fmt: skip
    async with SmtpTransport(settings.smtp) as transport:
        engine = Engine(settings, store, transport, node="test")
        async with Scheduler(engine, sync_interval=0.1, grace=3600, newsletter_grace=6 * 3600):
            await wait_for(lambda: _is(store, recent[0], SendStatus.DONE))
            await wait_for(lambda: _is(store, newsletter[0], SendStatus.DONE))
            await wait_for(lambda: _is(store, old[0], SendStatus.MISSED))
    spec = await store.sends.spec(old[0])
    assert spec.reason is not None
    assert "past the grace of 1:00:00" in spec.reason
    assert len(smtp_server.received) == 10  # the recent announcement and the newsletter


async def test_pause_and_resume_mid_send_neither_doubles_nor_loses(
    daemon: tuple[Store, SmtpServer, Scheduler, Settings],
) -> None:
    """Pausing a campaign mid-send stops it after the messages in flight; resuming finishes."""
    store, server, _, _ = daemon
    server.plan.delay("DATA", 0.2)  # 40 messages over 4 connections: about 2 s
    campaign_id = await campaign(store, "paused")
    send_id, _ = await store.sends.create(
        campaign_id, key="announce", action="announcement", due_at=now(), now=now()
    )
    await server.wait_received(5)
    assert await store.campaigns.pause(campaign_id, now=now()) == 1
    await wait_for(lambda: _counts_settle(store, send_id))
    paused_at = len(server.received)
    assert paused_at < 40
    await asyncio.sleep(0.5)
    assert len(server.received) == paused_at
    server.plan.clear()
    assert await store.campaigns.resume(campaign_id, now=now()) == 1
    await wait_for(lambda: _is(store, send_id, SendStatus.DONE))
    assert Counter(server.recipients()) == Counter(f"m{i}@example.org" for i in range(40))


async def _counts_settle(store: Store, send_id: int) -> bool:
    spec = await store.sends.spec(send_id)
    counts = await store.figures.counts(send_id)
    return spec.status == SendStatus.PAUSED and counts["sent"] > 0


async def test_event_update_and_cancellation_reach_those_invited(
    daemon: tuple[Store, SmtpServer, Scheduler, Settings],
) -> None:
    """Invitation (SEQUENCE 0), then an update with the new time (SEQUENCE 1), then a
    cancellation (METHOD:CANCEL, SEQUENCE 2), each to everyone invited."""
    store, server, _, _ = daemon
    start = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
    event = EventInfo(uid="journee@example.org", title="Journée", start=start, end=None,
                      timezone="Europe/Paris", place="Salle A")  # fmt: skip
    campaign_id = await campaign(store, "journee", event=event, kind="event")
    invitation, _ = await store.sends.create(
        campaign_id, key="invitation", action="invitation", due_at=now(), now=now()
    )
    await wait_for(lambda: _is(store, invitation, SendStatus.DONE))
    moved = EventInfo(uid=event.uid, title="Journée", start=start + timedelta(hours=1), end=None,
                      timezone="Europe/Paris", place="Amphithéâtre B")  # fmt: skip
    sequence = await store.campaigns.update_event(
        campaign_id, moved, status=EventStatus.CONFIRMED, now=now()
    )
    update, _ = await store.sends.create(
        campaign_id, key=f"update:{sequence}", action="update", due_at=now(), now=now(),
        audience_send_id=invitation,
    )  # fmt: skip
    await wait_for(lambda: _is(store, update, SendStatus.DONE))
    sequence = await store.campaigns.update_event(
        campaign_id, moved, status=EventStatus.CANCELLED, now=now()
    )
    cancel, _ = await store.sends.create(
        campaign_id, key=f"cancellation:{sequence}", action="cancellation", due_at=now(),
        now=now(), audience_send_id=invitation,
    )  # fmt: skip
    await wait_for(lambda: _is(store, cancel, SendStatus.DONE))
    assert Counter(server.recipients()) == Counter({f"m{i}@example.org": 3 for i in range(40)})
    calendars = []
    for received in server.received:
        if received.rcpt_tos != ("m0@example.org",):
            continue
        message = email.message_from_bytes(received.data, policy=policy.default)
        part = next(p for p in message.walk() if p.get_content_type() == "text/calendar")
        calendar = Calendar.from_ical(part.get_content())
        vevent = calendar.walk("VEVENT")[0]
        calendars.append((str(calendar["METHOD"]), int(vevent["SEQUENCE"]),
                          vevent.decoded("DTSTART").astimezone(UTC).hour, str(vevent["LOCATION"])))  # fmt: skip
    assert calendars == [  # an invitation by default: iTIP REQUEST, then its update, then CANCEL
        ("REQUEST", 0, 8, "Salle A"),
        ("REQUEST", 1, 9, "Amphithéâtre B"),
        ("CANCEL", 2, 9, "Amphithéâtre B"),
    ]


async def test_sigterm_mid_send_then_restart_neither_doubles_nor_loses(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    """A real `mailer run` (default SQLite file): SIGTERM mid-send exits 0 after the messages in
    flight; the next start resumes the send; every member gets exactly one message."""
    async with Store.open(make_settings(tmp_path)) as store:
        await store.upgrade()
        await members(store, tmp_path, 600)
        campaign_id = await campaign(store, "sigterm")
        await store.sends.create(
            campaign_id, key="announce", action="announcement", due_at=now(), now=now()
        )
    smtp_server.plan.delay("DATA", 0.01)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_PATHS__DATA_DIR=str(tmp_path / "data"),
        MAILER_PATHS__TEMPLATES_DIR=str(ROOT / "templates"),
        MAILER_SMTP__HOST=smtp_server.host, MAILER_SMTP__PORT=str(smtp_server.port),
        MAILER_SMTP__SECURITY="none", MAILER_SECRET_KEYS="daemon-key-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU",
        MAILER_WEB__ALLOW_INSECURE_LINKS="true",
        MAILER_SCHEDULER__SYNC_INTERVAL="0.2", MAILER_WEB__PORT="0",
    )  # fmt: skip
    command = [sys.executable, "-m", "mailer", "run"]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    await smtp_server.wait_received(100)
    process.send_signal(signal.SIGTERM)
    _, logs = await process.communicate()
    assert process.returncode == 0, logs.decode()
    assert "mailer stopped cleanly" in logs.decode()
    stopped_at = len(smtp_server.received)
    assert stopped_at < 600
    smtp_server.plan.clear()
    again = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(60):
        while len(smtp_server.received) < 600:  # noqa: ASYNC110 - wait_received caps at 10 s
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    again.send_signal(signal.SIGTERM)
    _, logs = await again.communicate()
    assert again.returncode == 0, logs.decode()
    assert Counter(smtp_server.recipients()) == Counter(f"m{i}@example.org" for i in range(600))


async def test_cancel_mid_send_leaves_every_recipient_accounted_for(
    daemon: tuple[Store, SmtpServer, Scheduler, Settings],
) -> None:
    """Cancelling mid-send stops it; those not yet sent end skipped with the reason."""
    store, server, _, _ = daemon
    server.plan.delay("DATA", 0.2)
    campaign_id = await campaign(store, "cancelled")
    send_id, _ = await store.sends.create(
        campaign_id, key="announce", action="announcement", due_at=now(), now=now()
    )
    await server.wait_received(5)
    assert (
        await store.campaigns.cancel_sends(campaign_id, now=now(), reason="campaign cancelled") == 1
    )
    await asyncio.sleep(1.0)  # the running pass notices within half a second
    counts = await store.figures.counts(send_id)
    rows = [r async for r in store.figures.report(send_id)]
    assert counts["queued"] == counts["deferred"] == 0, counts
    assert counts["sent"] + counts["skipped"] == 40
    assert counts["skipped"] > 0
    assert {r.reason for r in rows if r.status == "skipped"} == {"campaign cancelled"}
    assert counts["sent"] == len(server.received)
    assert await status_of(store, send_id) == SendStatus.CANCELLED


async def test_a_restart_takes_back_the_leases_of_its_dead_predecessor(
    store: Store, tmp_path: Path
) -> None:
    """kill -9 leaves leases behind; the next daemon on the same machine releases those of
    processes that are gone, and only those (another machine's, or a live one's, stay)."""
    import socket

    from sqlalchemy import select, update

    from mailer.app import take_back_leases
    from mailer.storage.tables import deliveries

    await members(store, tmp_path, 3)
    send_id, _ = await store.sends.create(
        await campaign(store, "leases"), key="announce", action="announcement",
        due_at=now(), now=now(),
    )  # fmt: skip
    spec = await store.sends.spec(send_id)
    await store.deliveries.materialise(spec, now=now())
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    host = socket.gethostname()
    holders = [f"{host}:{dead.pid}", f"{host}:{os.getpid()}", "elsewhere:1"]
    async with store.engine.begin() as conn:
        ids = (
            (await conn.execute(select(deliveries.c.id).order_by(deliveries.c.id))).scalars().all()
        )
        for delivery, holder in zip(ids, holders, strict=True):
            await conn.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery)
                .values(leased_by=holder, lease_until=now() + timedelta(minutes=5))
            )
    assert dead.returncode == 0
    await take_back_leases(store)
    assert await store.deliveries.lease_holders(now=now()) == sorted(holders[1:])

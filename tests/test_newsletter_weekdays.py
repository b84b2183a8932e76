"""A newsletter stored before cron weekdays were read as crontab reads them (``1`` is Monday;
APScheduler 3 alone read it as Tuesday) keeps no issue on the old day: the scheduler's sync
makes the issues of the cron as read now and drops the scheduled ones it no longer plans, so
nobody gets a Tuesday issue and a Monday one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from mailer.dispatch import Engine
from mailer.lists import import_file
from mailer.models import Content, SendStatus
from mailer.scheduler import Scheduler
from mailer.storage import Store
from mailer.transport import CaptureTransport
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")


async def test_issues_planned_on_the_old_weekday_are_dropped_at_the_next_sync(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    now = datetime.now(UTC)
    path = tmp_path / "researchers.csv"
    path.write_text("email,name\nm@example.org,M\n", encoding="utf-8")
    assert (await import_file(store, path, now=now)).ok
    campaign_id = await store.campaigns.save(
        Content(name="lettre", kind="newsletter", subject="Lettre", body="Bonjour."),
        list_slugs=["researchers"], sender_name=None, sender_address=None, event=None,
        now=now, options={"cron": "0 9 * * 1"},
    )  # fmt: skip
    local = now.astimezone(PARIS)
    tuesday = (local + timedelta(days=(1 - local.weekday()) % 7 or 7)).replace(
        hour=9, minute=0, second=0, microsecond=0
    )
    old, _ = await store.sends.create(
        campaign_id, key=f"issue:{tuesday:%Y-%m-%d}", action="newsletter",
        due_at=tuesday.astimezone(UTC), now=now,
    )  # fmt: skip
    due_now, _ = await store.sends.create(
        campaign_id, key="issue:2000-01-04", action="newsletter",
        due_at=now - timedelta(minutes=1), now=now,
    )  # fmt: skip
    settings = make_settings(
        tmp_path, database={"url": database_url}, paths={"templates_dir": ROOT / "templates"}
    )
    async with CaptureTransport(tmp_path / "outbox") as transport:
        scheduler = Scheduler(
            Engine(settings, store, transport, node="test"), sync_interval=3600, grace=3600
        )
        await scheduler.sync()
    sends = {s.key: s for s in await store.sends.of_campaign(campaign_id)}
    assert sends[f"issue:{tuesday:%Y-%m-%d}"].status == SendStatus.CANCELLED
    assert sends[f"issue:{tuesday:%Y-%m-%d}"].id == old
    mondays = [s for s in sends.values() if s.status == SendStatus.SCHEDULED and s.id != due_now]
    assert len(mondays) == 3
    assert all(s.due_at.astimezone(PARIS).weekday() == 0 for s in mondays)
    # an issue already due is the sync's to send, not to drop
    assert sends["issue:2000-01-04"].status == SendStatus.SCHEDULED

"""A campaign's sends planned and stored, one code path for ``campaign create`` and the
console's schedule page: :func:`campaigns.plan` (with the ``--demo`` shift), the event, the
options the scheduler reads (a newsletter's cron and end), then ONE
``store.campaigns.schedule`` transaction. :func:`create_from_file` is ``campaign create``:
saved with the operator's approval, then scheduled."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from mailer import campaigns
from mailer.errors import NotFoundError
from mailer.models import CampaignRecord, CampaignStatus, EventInfo, ScheduleResult, SendStatus
from mailer.schedule import Planned
from mailer.settings import Settings
from mailer.storage import Store
from mailer.workflow import approval
from mailer.workflow.specs import spec_of


@dataclass(frozen=True, slots=True)
class Scheduled:
    """What a schedule planned (``planned``, with ``notes`` on the choices made) and what it
    did to the stored sends (``result``: created, moved, dropped keys); ``snapshot``: the
    approval it recorded itself (None: the campaign was approved before)."""

    planned: list[Planned]
    notes: list[str]
    result: ScheduleResult
    snapshot: dict[str, Any] | None = None
    unchanged: bool = False  # the file was stored as it is, approved: only missing sends made
    approved_by: str | None = None


def event_of(campaign: campaigns.Campaign, settings: Settings, *, now: datetime,
             demo: bool) -> EventInfo | None:  # fmt: skip
    """The campaign's event as it is stored; with ``demo``, moved to start within minutes,
    a day of reminder offset lasting :data:`campaigns.DEMO_DAY` seconds."""
    domain = settings.sender.domain
    if campaign.data.event is None:
        return None
    if not demo:
        return campaign.event(domain=domain)
    real = campaign.event(domain=domain)
    assert real is not None
    event = campaign.event(domain=domain, shift=campaigns.demo_start(now) - real.start)
    return None if event is None else replace(event, day_seconds=campaigns.DEMO_DAY)


def options_of(campaign: campaigns.Campaign) -> dict[str, str]:
    """What the scheduler reads of a campaign: a newsletter's cron and its end (UTC)."""
    options: dict[str, str] = {}
    newsletter = campaign.data.newsletter
    if newsletter is not None:
        options["cron"] = newsletter.cron
        if newsletter.until is not None:
            until, _ = campaign.local(newsletter.until, "newsletter.until")
            options["until"] = until.isoformat()
    return options


async def schedule_campaign(
    store: Store,
    settings: Settings,
    campaign: campaigns.Campaign,
    *,
    now: datetime,
    version: int,
    actor: str,
    approve: bool,
    demo: bool = False,
    note: str = "",
) -> Scheduled:
    """Plan ``campaign`` (stored at ``version``) and store its sends in one transaction.

    ``approve``: the schedule records the approval itself, by ``actor`` with ``note``
    (``campaign create`` of a file; a console where approval is not required), from draft,
    submitted, approved or scheduled; otherwise the campaign must be approved at
    ``version`` (StateError or StaleEdit, in storage's words, if not). A send due "now"
    that is already scheduled keeps its time (planning again does not push it later)."""
    planned, notes = campaigns.plan(campaign, now=now, domain=settings.sender.domain, demo=demo)
    event = event_of(campaign, settings, now=now, demo=demo)
    record = await store.campaigns.record(campaign.name)
    pending = {
        s.key: s.due_at
        for s in await store.sends.of_campaign(record.id)
        if s.status == SendStatus.SCHEDULED
    }
    planned = [
        replace(p, due=pending[p.key]) if p.due == now and p.key in pending else p for p in planned
    ]
    snapshot = None
    if approve:
        snapshot = approval.snapshot(
            campaign, templates_dir=settings.paths.templates_dir, version=version, by=actor,
            now=now, note=note, audience=await approval.audience(store, campaign.data.lists),
        )  # fmt: skip
    result = await store.campaigns.schedule(
        record.id, version=version, planned=planned, event=event,
        options=options_of(campaign), approved_by=actor if approve else None,
        snapshot=snapshot, now=now,
    )  # fmt: skip
    return Scheduled(planned, notes, result, snapshot, approved_by=actor if approve else None)


async def create_from_file(
    store: Store, settings: Settings, campaign: campaigns.Campaign, *, now: datetime,
    actor: str, demo: bool = False,
) -> Scheduled:  # fmt: skip
    """``campaign create``: the file's campaign saved (its spec, bodies inlined) with the
    operator's approval (``actor``, "cli:<unix user>"), then scheduled. Planned first, so a
    file whose times cannot be planned stores nothing. A file stored before exactly as it
    is, approved and scheduled, is left as it is: only sends that are missing are made
    (``unchanged``), and the approval stands as it was given."""
    planned, notes = campaigns.plan(campaign, now=now, domain=settings.sender.domain, demo=demo)
    spec = spec_of(campaign)
    record = await _record(store, campaign.name)
    if (
        record is not None and not demo and record.spec == spec
        and record.approved_at is not None and record.status == CampaignStatus.SCHEDULED
    ):  # fmt: skip
        created = []
        for p in planned:
            _, new = await store.sends.create(
                record.id, key=p.key, action=p.action, due_at=p.due, now=now
            )
            created += [p.key] if new else []
        return Scheduled(planned, notes, ScheduleResult(created=created), unchanged=True,
                         approved_by=record.approved_by)  # fmt: skip
    await store.campaigns.save(
        campaign.content, list_slugs=campaign.data.lists,
        sender_name=campaign.data.sender.name, sender_address=campaign.data.sender.address,
        event=event_of(campaign, settings, now=now, demo=demo), now=now,
        options=options_of(campaign), spec=spec, approved_by=actor,
    )  # fmt: skip
    record = await store.campaigns.record(campaign.name)
    return await schedule_campaign(
        store, settings, campaign, now=now, version=record.version, actor=actor, approve=True,
        demo=demo, note=approval.NOTE_FILE,
    )  # fmt: skip


async def _record(store: Store, name: str) -> CampaignRecord | None:
    try:
        return await store.campaigns.record(name)
    except NotFoundError:
        return None

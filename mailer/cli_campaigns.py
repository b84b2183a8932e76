"""The ``mailer campaign``, ``mailer event`` and ``mailer status`` commands.

Campaign files are validated and planned by :mod:`mailer.campaigns`; what is stored here is
picked up by a running daemon at its next sync, without a restart.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from rich.table import Table

from mailer import campaigns
from mailer.addresses import address_key, normalize
from mailer.campaigns import demo_start
from mailer.cli_support import _async, _now, _settings, _store, err, out, safe, visible
from mailer.compose import make_composer
from mailer.errors import ConfigError, NotFoundError
from mailer.lifecycle import SendMove
from mailer.models import EventStatus, Recipient, SendAction, SendInfo, SendStatus
from mailer.render import Renderer
from mailer.schedule import Planned, reminders
from mailer.storage import Store
from mailer.tokens import load_signer
from mailer.transport import Outcome, open_transport


def _print_plan(planned: list[Planned], zone: ZoneInfo, notes: list[str]) -> None:
    table = Table("send", "what", f"local time ({zone.key})", "UTC")
    for p in planned:
        local = p.due.astimezone(zone)
        table.add_row(
            safe(p.key), safe(p.action), f"{local:%a %Y-%m-%d %H:%M %Z}", f"{p.due:%Y-%m-%d %H:%M}"
        )
    out.print(table)
    for note in notes:
        out.print(visible(f"note: {note}"), markup=False)


@click.group("campaign")
def campaign_group() -> None:
    """Campaigns from files: check, create, list, show, test, pause, resume, cancel."""


def _load(path: Path) -> campaigns.Campaign:
    """The campaign file, checked against the configured time zone and templates folder."""
    settings = _settings()
    return campaigns.load(
        path,
        default_zone=settings.scheduler.timezone,
        templates_dir=settings.paths.templates_dir,
    )


async def _check_lists(store: Store, campaign: campaigns.Campaign) -> None:
    """Every list the campaign names exists in the database."""
    for slug in campaign.data.lists:
        try:
            await store.lists.info(slug)
        except NotFoundError as exc:
            raise campaigns.CampaignFileError(f"{campaign.path}: lists: {exc}") from None


@campaign_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--demo", is_flag=True, help="Plan as `create --demo` would.")
@_async
async def campaign_check(path: Path, demo: bool) -> None:
    """Validate a campaign file, its lists and its schedule; store nothing."""
    settings = _settings()
    campaign = _load(path)
    planned, notes = campaigns.plan(campaign, now=_now(), domain=settings.sender.domain, demo=demo)
    async with _store() as store:
        await _check_lists(store, campaign)
    out.print(
        visible(
            f"{path}: valid ({campaign.data.kind.value}, lists {', '.join(campaign.data.lists)})"
        ),
        markup=False,
    )
    _print_plan(planned, campaign.zone, notes)


@campaign_group.command("create")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--demo", is_flag=True,
    help="Rehearse an event: it starts in 3-4 minutes; a day of reminder offset lasts 20 s.",
)  # fmt: skip
@_async
async def campaign_create(path: Path, demo: bool) -> None:
    """Validate, store, compute the sends, and print the schedule (local time and UTC)."""
    settings = _settings()
    campaign = _load(path)
    now = _now()
    planned, notes = campaigns.plan(campaign, now=now, domain=settings.sender.domain, demo=demo)
    event = None
    if campaign.data.event is not None:
        real = campaign.event(domain=settings.sender.domain)
        assert real is not None
        shift = None
        if demo:
            shift = demo_start(now) - real.start
        event = campaign.event(domain=settings.sender.domain, shift=shift)
    options: dict[str, str] = {}
    if campaign.data.newsletter is not None:
        options["cron"] = campaign.data.newsletter.cron
        if campaign.data.newsletter.until is not None:
            until, _ = campaign.local(campaign.data.newsletter.until, "newsletter.until")
            options["until"] = until.isoformat()
    async with _store() as store:
        await _check_lists(store, campaign)
        campaign_id = await store.campaigns.save(
            campaign.content, list_slugs=campaign.data.lists,
            sender_name=campaign.data.sender.name, sender_address=campaign.data.sender.address,
            event=event, now=now, options=options,
        )  # fmt: skip
        created: list[Planned] = []
        for p in planned:
            _, new = await store.sends.create(
                campaign_id, key=p.key, action=p.action, due_at=p.due, now=now
            )
            if new:
                created.append(p)
    if not created:
        # The sends were stored by an earlier run; their times are those stored then, so
        # printing the times planned now would show times that will never be used.
        out.print(
            visible(
                f"campaign {campaign.name} stored; nothing new to schedule: its {len(planned)} "
                f"send(s) were stored before (see `mailer campaign show {campaign.name}`)"
            ),
            markup=False,
        )
        return
    out.print(
        visible(f"campaign {campaign.name} stored; {len(created)} new send(s):"), markup=False
    )
    _print_plan(created, campaign.zone, notes)


@campaign_group.command("list")
@_async
async def campaign_list() -> None:
    """Stored campaigns, their status and next send."""
    async with _store() as store:
        rows = await store.campaigns.summaries()
    table = Table("campaign", "kind", "status", "next send (UTC)")
    for r in rows:
        next_due = f"{r.next_due:%Y-%m-%d %H:%M}" if r.next_due else ""
        table.add_row(safe(r.name), safe(r.kind), safe(r.status), next_due)
    out.print(table)


@campaign_group.command("show")
@click.argument("name")
@_async
async def campaign_show(name: str) -> None:
    """A campaign and each of its sends."""
    async with _store() as store:
        row = await store.campaigns.get(name)
        sends = await store.sends.of_campaign(row.id)
        counts = {s.id: await store.figures.counts(s.id) for s in sends}
    zone = ZoneInfo(row.timezone)
    out.print(visible(f"{row.name}: {row.kind}, {row.status}, template {row.template}, "
                      f"time zone {zone.key}"), markup=False)  # fmt: skip
    table = Table("send", "key", "status", "due (local)", "sent", "failed", "skipped", "reason")
    for s in sends:
        c = counts[s.id]
        table.add_row(
            str(s.id), safe(s.key), safe(s.status),
            f"{s.due_at.astimezone(zone):%Y-%m-%d %H:%M %Z}",
            str(c.sent), str(c.failed), str(c.skipped), safe(s.reason or ""),
        )  # fmt: skip
    out.print(table)


async def _campaign_id(store: Store, name: str) -> int:
    return (await store.campaigns.get(name)).id


@campaign_group.command("pause")
@click.argument("name")
@_async
async def campaign_pause(name: str) -> None:
    """Pause every send of a campaign that has not ended (after the messages in flight)."""
    async with _store() as store:
        count = await store.campaigns.pause(await _campaign_id(store, name), now=_now())
    out.print(visible(f"campaign {name} paused ({count} send(s))"), markup=False)


@campaign_group.command("resume")
@click.argument("name")
@_async
async def campaign_resume(name: str) -> None:
    """Resume a paused campaign: its sends go on where they stopped."""
    async with _store() as store:
        count = await store.campaigns.resume(await _campaign_id(store, name), now=_now())
    out.print(visible(f"campaign {name} resumed ({count} send(s))"), markup=False)


@campaign_group.command("cancel")
@click.argument("name")
@_async
async def campaign_cancel(name: str) -> None:
    """Cancel every send of a campaign that has not ended; what was sent stays recorded."""
    async with _store() as store:
        count = await store.campaigns.cancel_sends(
            await _campaign_id(store, name), now=_now(), reason="campaign cancelled"
        )
    out.print(visible(f"campaign {name} cancelled ({count} send(s))"), markup=False)


@campaign_group.command("test")
@click.argument("name")
@click.option("--to", "to", required=True, help="The staff address that gets the test.")
@click.option("--as", "as_email", help="Render as this subscriber; default: the first member.")
@click.option("--action", help="For an event: invitation, reminder, update or cancellation.")
@_async
async def campaign_test(name: str, to: str, as_email: str | None, action: str | None) -> int:
    """Send one real message, marked [TEST], through the configured transport."""
    settings = _settings()
    target = normalize(to).email
    now = _now()
    async with _store() as store:
        row = await store.campaigns.get(name)
        sends = await store.sends.of_campaign(row.id)
        if not sends:
            raise NotFoundError(f"campaign {name} has no send")
        send = next((s for s in sends if action in (None, s.action)), None)
        if send is None:
            raise ConfigError(f"--action {action}: campaign {name} has no such send")
        spec = await store.sends.spec(send.id)
        list_info, subscriber = spec.lists[0], Recipient(id=0, email="preview@example.org")
        key = address_key(as_email) if as_email else None
        for candidate in spec.lists:  # --as: the first list of the campaign that has them
            found = [
                r async for r in store.lists.recipients(candidate.slug, email_key=key, limit=1)
            ]
            if found:
                list_info, subscriber = candidate, found[0]
                break
        else:
            if as_email:
                raise NotFoundError(
                    f"{as_email} is not a subscribed member of any list of campaign {name} "
                    f"({', '.join(info.slug for info in spec.lists)})"
                )
    composer = make_composer(
        settings,
        renderer=Renderer(settings.paths.templates_dir),
        signer=load_signer(settings.secret_keys, settings.paths.data_dir),
        send=SendInfo(
            content=spec.content, list=list_info,
            sender_name=spec.sender_name or settings.sender.from_name,
            sender_address=spec.sender_address or settings.sender.from_address,
            action=spec.action, now=now, event=spec.event,
        ),
        send_id=spec.id, trace=f"c{spec.campaign_id}/{spec.key}/test",
    )  # fmt: skip
    composed = composer.compose_test(subscriber, to=target, date=now)
    from mailer.app import check_sending

    check_sending(settings)  # a test goes through the real relay: the same checks as a send
    async with open_transport(settings) as transport:
        result = await transport.send(composed.message)
    if result.outcome != Outcome.SENT:
        err.print(visible(f"test not delivered: {result.code or ''} {result.reply}"), markup=False)
        return 1
    out.print(visible(f"sent {composed.rendered.subject!r} to {target}, "
                      f"as {subscriber.email} would get it"), markup=False)  # fmt: skip
    return 0


# --- events ---------------------------------------------------------------------------------


@click.group("event")
def event_group() -> None:
    """Change or cancel an event campaign's event."""


@event_group.command("update")
@click.argument("name")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@_async
async def event_update(name: str, path: Path) -> None:
    """New time or place: reminders move, SEQUENCE grows, those invited get the update."""
    settings = _settings()
    campaign = _load(path)
    if campaign.name != name:
        raise ConfigError(f"{path}: name is {campaign.name!r}, not {name!r}")
    now = _now()
    event = campaign.event(domain=settings.sender.domain)
    if event is None or campaign.data.event is None:
        raise ConfigError(f"{path}: not an event campaign")
    if event.start <= now:
        raise ConfigError(f"{path}: event.start: the new start has passed")
    async with _store() as store:
        campaign_id = await _campaign_id(store, name)
        sequence = await store.campaigns.update_event(
            campaign_id, event, status=EventStatus.CONFIRMED, now=now
        )
        sends = await store.sends.of_campaign(campaign_id)
        planned, _ = reminders(
            event.start, campaign.data.event.reminders, now=now, zone=campaign.zone
        )
        wanted = {p.key: p.due for p in planned}
        moved, dropped = [], []
        for s in sends:
            if s.action != SendAction.REMINDER or s.status != SendStatus.SCHEDULED:
                continue
            due = wanted.pop(s.key, None)
            if due is None or due <= now:
                await store.sends.move(s.id, SendMove.DROP, now=now, reason="the event moved")
                dropped.append(s.key)
            else:
                await store.sends.reschedule(s.id, due, now=now)
                moved.append(s.key)
        for key, due in wanted.items():
            if due > now and not any(s.key == key for s in sends):
                await store.sends.create(
                    campaign_id, key=key, action=SendAction.REMINDER, due_at=due, now=now
                )
                moved.append(key)
        invitation = next((s for s in sends if s.key == "invitation"), None)
        update_id = None
        if invitation is not None and (await store.figures.counts(invitation.id)).sent:
            update_id, _ = await store.sends.create(
                campaign_id, key=f"update:{sequence}", action=SendAction.UPDATE, due_at=now,
                now=now, audience_send_id=invitation.id,
            )  # fmt: skip
    zone = campaign.zone
    start = event.start.astimezone(zone)
    out.print(visible(f"event {name} updated (sequence {sequence}): {start:%a %Y-%m-%d %H:%M %Z}"),
              markup=False)  # fmt: skip
    out.print(visible(f"reminders rescheduled: {', '.join(moved) or 'none'}; "
                      f"cancelled: {', '.join(dropped) or 'none'}"), markup=False)  # fmt: skip
    out.print(
        f"update to those invited: send {update_id}" if update_id else
        "nobody was invited yet: the invitation will carry the new details",
        markup=False,
    )  # fmt: skip


@event_group.command("cancel")
@click.argument("name")
@_async
async def event_cancel(name: str) -> None:
    """Cancel the event: pending sends stop, those invited get a cancellation (METHOD:CANCEL)."""
    now = _now()
    async with _store() as store:
        campaign_id = await _campaign_id(store, name)
        sends = await store.sends.of_campaign(campaign_id)
        invitation = next((s for s in sends if s.key == "invitation"), None)
        if invitation is None:
            raise ConfigError(f"campaign {name} has no event invitation")
        spec = await store.sends.spec(invitation.id)
        if spec.event is None:
            raise ConfigError(f"campaign {name} has no event")
        cancelled = await store.campaigns.cancel_sends(
            campaign_id, now=now, reason="event cancelled"
        )
        sequence = await store.campaigns.update_event(
            campaign_id, spec.event, status=EventStatus.CANCELLED, now=now
        )
        notice = None
        if (await store.figures.counts(invitation.id)).sent:
            notice, _ = await store.sends.create(
                campaign_id, key=f"cancellation:{sequence}", action=SendAction.CANCELLATION,
                due_at=now, now=now, audience_send_id=invitation.id,
            )  # fmt: skip
    who = f"cancellation to those invited: send {notice}" if notice else "nobody was invited"
    out.print(visible(f"event {name} cancelled: {cancelled} pending send(s) stopped; {who}"),
              markup=False)  # fmt: skip


# --- status ---------------------------------------------------------------------------------


@click.command("status")
@_async
async def status_command() -> None:
    """Upcoming sends in local time, running ones with progress, paused and missed ones."""
    now = datetime.now(UTC)
    async with _store() as store:
        rows = await store.sends.overview()
        details = {}
        for r in rows:
            if r.status in (SendStatus.RUNNING, SendStatus.PAUSED):
                details[r.id] = (
                    await store.figures.counts(r.id),
                    await store.figures.rate(r.id, now=now),
                    await store.figures.holders(r.id, now=now),
                )
    table = Table("send", "campaign", "key", "status", "when", "progress", "daemons", "reason")
    for r in rows:
        zone = ZoneInfo(r.timezone)
        when = f"{r.due_at.astimezone(zone):%a %d %b %H:%M %Z}"
        progress = daemons = ""
        if r.id in details:
            c, rate, holders = details[r.id]
            done = c.sent + c.failed + c.skipped
            progress = f"{done}/{c.total}, {rate:.1f}/s"
            # which node holds which part of the send, and at what rate
            daemons = "\n".join(
                f"{safe(node)}: {leased} leased, {per_second:.1f}/s"
                for node, leased, per_second in holders
                if leased or per_second
            )
        if r.status in (SendStatus.DONE, SendStatus.CANCELLED):
            continue
        table.add_row(
            str(r.id), safe(r.campaign), safe(r.key), safe(r.status), when, progress,
            daemons, safe(r.reason or ""),
        )  # fmt: skip
    out.print(table)


__all__ = ["campaign_group", "event_group", "status_command"]
